"""How TF Serving reads requests and writes answers, for every server that stands in for it.

Two servers answer as TF Serving does: ``model_tools serve`` (TensorFlow in Python, for
``make dev`` and the model tests) and the tests' fake model server (no TensorFlow). Both go
through these functions, so they answer the way the real server does, not the way that is
convenient for the gateway:

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

The two servers use two copies of the generated protobuf modules (TensorFlow's, and the
gateway's TensorFlow-free copy), and this module must import neither: the fake server may
not load TensorFlow, the model tooling may not depend on the gateway. So it works on the
messages it is given, through their fields and descriptors (the messages are typed ``Any``),
and a function that builds a message is given the generated module to build it from.

Sources: tensorflow/serving ``servables/tensorflow/predict_util.cc``,
``servables/tensorflow/get_model_metadata_impl.cc``,
``model_servers/get_model_status_impl.cc``,
``model_servers/server_core.h`` (``kAsProtoField`` default) and
``batching/batching_session.cc``; tensorflow ``core/framework/tensor.cc``
(``FromProtoField``) and ``core/platform/tensor_coding.cc`` (``EncodeStringList``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any, NoReturn

import grpc
import numpy as np
import numpy.typing as npt

# DataType name -> (NumPy dtype, typed field)
_FIELDS: dict[str, tuple[np.dtype[Any], str]] = {
    "DT_FLOAT": (np.dtype("<f4"), "float_val"),
    "DT_DOUBLE": (np.dtype("<f8"), "double_val"),
    "DT_INT32": (np.dtype("<i4"), "int_val"),
    "DT_INT64": (np.dtype("<i8"), "int64_val"),
    "DT_UINT8": (np.dtype("u1"), "int_val"),
    "DT_BOOL": (np.dtype("?"), "bool_val"),
}
_NAME_OF: dict[np.dtype[Any], str] = {np.dtype(dt): name for name, (dt, _) in _FIELDS.items()}

# The entry a TF2 SavedModel adds to its signature map, which TF Serving returns with it.
INIT_OP_KEY = "__saved_model_init_op"


class WireError(Exception):
    """A request TF Serving would refuse: the gRPC status and TF Serving's message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def abort(self, context: grpc.ServicerContext) -> NoReturn:
        context.abort(self.code, self.message)
        raise AssertionError("grpc's context.abort always raises")


def _dtype_enum(message: Any) -> Any:
    """The ``tensorflow.DataType`` enum descriptor, from a message with a ``dtype`` field."""
    return message.DESCRIPTOR.fields_by_name["dtype"].enum_type


def _dtype_name(message: Any) -> str:
    """``message.dtype``'s name: DT_FLOAT, DT_UINT8..."""
    return str(_dtype_enum(message).values_by_number[message.dtype].name)


def _type_string(message: Any) -> str:
    """TensorFlow's ``DataTypeString`` of ``message.dtype``: "float", "uint8"."""
    return _dtype_name(message).removeprefix("DT_").lower()


def set_shape(shape: Any, dims: Sequence[int]) -> None:
    """Fill a ``TensorShapeProto`` with ``dims``."""
    for size in dims:
        shape.dim.add(size=size)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode_output(array: npt.NDArray[np.generic], into: Any, *, tensor_content: bool) -> None:
    """Write ``array`` into the empty ``TensorProto`` ``into`` as TF Serving serialises an
    output tensor."""
    set_shape(into.tensor_shape, array.shape)
    enum = _dtype_enum(into)
    if array.dtype.kind in ("S", "O", "U"):
        items = [x if isinstance(x, bytes) else str(x).encode() for x in array.ravel()]
        into.dtype = enum.values_by_name["DT_STRING"].number
        if tensor_content:
            into.tensor_content = b"".join(_varint(len(x)) for x in items) + b"".join(items)
        else:
            into.string_val.extend(items)
        return
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    name = _NAME_OF[np.dtype(dtype)]
    into.dtype = enum.values_by_name[name].number
    if tensor_content:
        into.tensor_content = np.ascontiguousarray(array, dtype=_FIELDS[name][0]).tobytes()
    else:
        getattr(into, _FIELDS[name][1]).extend(array.ravel().tolist())


def decode_input(tensor: Any, alias: str) -> npt.NDArray[np.generic]:
    """An input ``TensorProto`` as ``Tensor::FromProto`` reads it."""
    name = _dtype_name(tensor)
    if name not in _FIELDS or tensor.tensor_shape.unknown_rank:
        raise WireError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {alias}")
    shape = tuple(int(d.size) for d in tensor.tensor_shape.dim)
    if any(d < 0 for d in shape):
        raise WireError(grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {alias}")
    count = int(np.prod(shape))
    dtype, field = _FIELDS[name]
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
    signature_key: str, signature: Any, inputs: Mapping[str, Any], output_filter: list[str]
) -> list[str]:
    """The outputs a Predict of ``inputs`` on ``signature`` (a ``SignatureDef``) computes,
    or WireError with TF Serving's message for a bad request."""
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
                f"Expects arg[0] to be {_type_string(signature.inputs[alias])} "
                f"but {_type_string(tensor)} is provided",
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


def model_metadata(
    get_model_metadata_pb2: ModuleType,
    request: Any,
    name: str,
    version: int,
    signatures: Mapping[str, Any],
) -> Any:
    """GetModelMetadata's answer as TF Serving gives it (``GetModelMetadataWithModelSpec``),
    built from ``get_model_metadata_pb2``."""
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


def model_status(
    get_model_status_pb2: ModuleType, request: Any, name: str, version: int, state: int
) -> Any:
    """GetModelStatus's answer for a server of one model version, built from
    ``get_model_status_pb2``."""
    if request.model_spec.name != name:
        raise WireError(grpc.StatusCode.NOT_FOUND, "Could not find any versions of model")
    response = get_model_status_pb2.GetModelStatusResponse()
    status = response.model_version_status.add()
    status.version = version
    status.state = state
    return response
