"""How TF Serving reads requests and writes answers, for the test stand-ins (tests only).

Both stand-ins (``fake_model_server``, ``tf_model_server``) go through these functions, so
they answer the way the real server does, not the way that is convenient for the gateway:

- Outputs are written with typed fields (``float_val``, ``string_val``...), TF Serving's
  default (``Tensor::AsProtoField``); ``tensor_content`` only when the server runs with
  ``--enable_serialization_as_tensor_content`` (``AsProtoTensorContent``; strings then
  become TensorFlow's encoded string list).
- Inputs are parsed like ``Tensor::FromProto``: typed fields with fewer values than the
  shape are filled with the last value (warmup files rely on it), ``tensor_content`` must
  have exactly the right size.
- Requests are checked against the signature with TF Serving's own error texts, and every
  output must have the batch size as its first dimension, as server-side batching demands.
- GetModelMetadata needs ``metadata_field: "signature_def"`` (anything else, or nothing, is
  INVALID_ARGUMENT) and returns the MetaGraphDef's whole signature map, the SavedModel's
  ``__saved_model_init_op`` entry included.

Sources: tensorflow/serving ``servables/tensorflow/predict_util.cc``,
``servables/tensorflow/get_model_metadata_impl.cc``,
``model_servers/server_core.h`` (``kAsProtoField`` default) and
``batching/batching_session.cc``; tensorflow ``core/framework/tensor.cc``
(``FromProtoField``) and ``core/platform/tensor_coding.cc`` (``EncodeStringList``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import grpc
import numpy as np
import numpy.typing as npt

from gateway._proto.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from gateway._proto.tensorflow.core.protobuf import meta_graph_pb2
from gateway._proto.tensorflow_serving.apis import get_model_metadata_pb2

# dtype enum -> (NumPy dtype, typed field)
_FIELDS: dict[int, tuple[np.dtype[Any], str]] = {
    types_pb2.DT_FLOAT: (np.dtype("<f4"), "float_val"),
    types_pb2.DT_DOUBLE: (np.dtype("<f8"), "double_val"),
    types_pb2.DT_INT32: (np.dtype("<i4"), "int_val"),
    types_pb2.DT_INT64: (np.dtype("<i8"), "int64_val"),
    types_pb2.DT_UINT8: (np.dtype("u1"), "int_val"),
    types_pb2.DT_BOOL: (np.dtype("?"), "bool_val"),
}
_ENUM_OF: dict[np.dtype[Any], Any] = {np.dtype(dt): enum for enum, (dt, _) in _FIELDS.items()}


class WireError(Exception):
    """A request TF Serving would refuse: the gRPC status and TF Serving's message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def abort(self, context: grpc.ServicerContext) -> NoReturn:
        context.abort(self.code, self.message)
        raise AssertionError("grpc's context.abort always raises")


def shape_proto(dims: tuple[int, ...]) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode_output(
    array: npt.NDArray[np.generic], *, tensor_content: bool
) -> tensor_pb2.TensorProto:
    """``array`` as TF Serving serialises an output tensor."""
    proto = tensor_pb2.TensorProto(tensor_shape=shape_proto(array.shape))
    if array.dtype.kind in ("S", "O", "U"):
        items = [x if isinstance(x, bytes) else str(x).encode() for x in array.ravel()]
        proto.dtype = types_pb2.DT_STRING
        if tensor_content:
            proto.tensor_content = b"".join(_varint(len(x)) for x in items) + b"".join(items)
        else:
            proto.string_val.extend(items)
        return proto
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    enum = _ENUM_OF[np.dtype(dtype)]
    proto.dtype = enum
    if tensor_content:
        proto.tensor_content = np.ascontiguousarray(array, dtype=_FIELDS[enum][0]).tobytes()
    else:
        getattr(proto, _FIELDS[enum][1]).extend(array.ravel().tolist())
    return proto


def decode_input(tensor: tensor_pb2.TensorProto, alias: str) -> npt.NDArray[np.generic]:
    """An input tensor as ``Tensor::FromProto`` reads it."""
    if tensor.dtype not in _FIELDS or tensor.tensor_shape.unknown_rank:
        raise WireError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {alias}")
    shape = tuple(int(d.size) for d in tensor.tensor_shape.dim)
    if any(d < 0 for d in shape):
        raise WireError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {alias}")
    count = int(np.prod(shape))
    dtype, field = _FIELDS[tensor.dtype]
    if tensor.tensor_content:
        if len(tensor.tensor_content) != count * dtype.itemsize:
            raise WireError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {alias}")
        content: npt.NDArray[np.generic] = np.frombuffer(tensor.tensor_content, dtype=dtype)
        return content.reshape(shape)
    values: npt.NDArray[np.generic] = np.asarray(getattr(tensor, field), dtype=dtype)[:count]
    if values.size < count:  # "fills the rest of T[n] with the last value"
        fill = values[-1] if values.size else 0
        values = np.concatenate([values, np.full(count - values.size, fill, dtype=dtype)])
    return values.reshape(shape)


def check_request(
    signature_key: str,
    signature: meta_graph_pb2.SignatureDef,
    inputs: Mapping[str, tensor_pb2.TensorProto],
    output_filter: list[str],
) -> list[str]:
    """The outputs to compute, or WireError with TF Serving's message for a bad request."""
    expected = set(signature.inputs)
    sent = set(inputs)
    if sent != expected:
        if len(sent) != len(expected):
            raise WireError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}.",
            )
        missing = sorted(expected - sent)[0]
        raise WireError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"Signature input alias: {missing}(feed name: "
            f"{signature.inputs[missing].name}) not found in request and no default value "
            f"provided. Inputs expected to be in the request {{{','.join(sorted(sent))}}}, "
            "or default input alias set: ",
        )
    for alias, tensor in inputs.items():
        if tensor.dtype != signature.inputs[alias].dtype:
            raise WireError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Expects arg[0] to be {_type_string(signature.inputs[alias].dtype)} "
                f"but {_type_string(tensor.dtype)} is provided",
            )
    for alias in output_filter:
        if alias not in signature.outputs:
            raise WireError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(signature.outputs))}}}.",
            )
    return list(output_filter) or sorted(signature.outputs)


def check_batched_outputs(batch: int, outputs: Mapping[str, npt.NDArray[np.generic]]) -> None:
    """Server-side batching splits every output along its first dimension."""
    for array in outputs.values():
        if array.ndim == 0:
            raise WireError(
                grpc.StatusCode.FAILED_PRECONDITION, "Batched output tensor has 0 dimensions"
            )
        if array.shape[0] != batch:
            raise WireError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                "dimension sizes of the input tensors",
            )


def signature_not_found(key: str) -> WireError:
    return WireError(
        grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.'
    )


def _type_string(dtype: int) -> str:
    """TensorFlow's ``DataTypeString``: DT_FLOAT -> "float", DT_UINT8 -> "uint8"."""
    return types_pb2.DataType.Name(dtype).removeprefix("DT_").lower()


# The entry a TF2 SavedModel adds to its signature map, which TF Serving returns with it.
INIT_OP_KEY = "__saved_model_init_op"


def init_op_signature() -> meta_graph_pb2.SignatureDef:
    sig = meta_graph_pb2.SignatureDef()
    sig.outputs[INIT_OP_KEY].CopyFrom(meta_graph_pb2.TensorInfo(name="NoOp"))
    return sig


def model_metadata(
    request: get_model_metadata_pb2.GetModelMetadataRequest,
    name: str,
    version: int,
    signatures: Mapping[str, meta_graph_pb2.SignatureDef],
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadata as TF Serving answers it (``GetModelMetadataWithModelSpec``)."""
    if not request.metadata_field:
        raise WireError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "GetModelMetadataRequest must specify at least one metadata_field",
        )
    for requested in request.metadata_field:
        if requested != "signature_def":
            raise WireError(
                grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {requested} is not supported"
            )
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in signatures.items():
        sig_map.signature_def[key].CopyFrom(sig)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = name
    response.model_spec.version.value = version
    response.metadata["signature_def"].Pack(sig_map)
    return response
