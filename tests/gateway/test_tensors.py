"""The gateway reads a model server's tensors as TensorFlow itself does: checked against
real TensorFlow (``tf.io.parse_tensor`` runs ``Tensor::FromProto``, the code TF Serving
uses), and against answers no model server should send (found by tests/fuzz)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway._proto.tensorflow.core.framework import tensor_pb2, types_pb2
from gateway._proto.tensorflow_serving.apis import predict_pb2
from gateway.failures import Failure
from gateway.model_client import read_prediction
from gateway.tensors import MAX_ELEMENTS, TensorError, dtype_name, to_array
from tests.fuzz.targets import LABELS, SIGNATURE

FIELDS = {
    types_pb2.DT_FLOAT: ("float_val", st.floats(width=32, allow_nan=False)),
    types_pb2.DT_DOUBLE: ("double_val", st.floats(allow_nan=False)),
    types_pb2.DT_INT32: ("int_val", st.integers(-(2**31), 2**31 - 1)),
    types_pb2.DT_INT64: ("int64_val", st.integers(-(2**63), 2**63 - 1)),
    types_pb2.DT_UINT8: ("int_val", st.integers(0, 255)),
    types_pb2.DT_STRING: ("string_val", st.binary(max_size=4).map(lambda b: b.hex().encode())),
}


def _tensor(dtype: int, shape: list[int], values: list[object]) -> tensor_pb2.TensorProto:
    tensor = tensor_pb2.TensorProto()
    tensor.dtype = dtype  # type: ignore[assignment]  # any number, as on the wire
    for n in shape:
        tensor.tensor_shape.dim.add(size=n)
    getattr(tensor, FIELDS[dtype][0]).extend(values)
    return tensor


@st.composite
def typed_tensors(draw: st.DrawFn) -> tensor_pb2.TensorProto:
    """Typed-field tensors with as many values as the shape, fewer (padded by TensorFlow
    with the last one, or zeros when none) or more (ignored)."""
    dtype = draw(st.sampled_from(sorted(FIELDS)))
    shape = draw(st.lists(st.integers(0, 4), max_size=3))
    values = draw(st.lists(FIELDS[dtype][1], max_size=int(np.prod(shape)) + 3))
    return _tensor(dtype, shape, values)


@pytest.mark.tensorflow
@settings(max_examples=300, deadline=None)
@given(tensor=typed_tensors())
def test_typed_fields_read_as_tensorflow_reads_them(tensor: tensor_pb2.TensorProto) -> None:
    import tensorflow as tf

    dtype = tf.dtypes.as_dtype(tensor.dtype)
    expected = np.asarray(tf.io.parse_tensor(tensor.SerializeToString(), dtype).numpy())
    got = to_array(tensor)
    if tensor.dtype == types_pb2.DT_STRING:
        expected = np.array([b.decode() for b in expected.flat], object).reshape(expected.shape)
    assert got.shape == expected.shape
    assert got.tolist() == expected.tolist()


def test_tensor_content_must_hold_exactly_the_shape() -> None:
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\0" * 10)
    tensor.tensor_shape.dim.add(size=2)
    with pytest.raises(TensorError, match="10 bytes for 2"):
        to_array(tensor)


@pytest.mark.parametrize(
    ("shape", "message"),
    [([-1, 3], "unknown dimension"), ([1 << 20, 1 << 20], "the limit is")],
)
def test_shapes_the_gateway_will_not_allocate(shape: list[int], message: str) -> None:
    # one value, padded by TensorFlow's rule to the shape: a tiny message declaring 2^40
    # elements must not make the gateway allocate them
    tensor = _tensor(types_pb2.DT_FLOAT, shape, [1.0])
    with pytest.raises(TensorError, match=message):
        to_array(tensor)
    assert MAX_ELEMENTS < (1 << 40)


def test_out_of_range_typed_values_narrow_like_cpp() -> None:
    tensor = _tensor(types_pb2.DT_UINT8, [2], [])
    tensor.int_val.extend([300, -1])  # int_val is int32 on the wire
    assert to_array(tensor).tolist() == [44, 255]


def test_unknown_dtype_numbers_are_named() -> None:
    assert dtype_name(99) == "DataType(99)"
    with pytest.raises(TensorError, match=r"DataType\(99\)"):
        to_array(tensor_pb2.TensorProto.FromString(b"\x08\x63"))  # dtype: 99


def _answer(scores: tensor_pb2.TensorProto) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse()
    response.outputs["logits"].CopyFrom(scores)
    response.outputs["classes"].CopyFrom(_tensor(types_pb2.DT_STRING, [2, 3], [b"a", b"b", b"c"]))
    return response


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        (_tensor(types_pb2.DT_STRING, [2, 3], [b"0.5"]), "not numbers"),
        (_tensor(types_pb2.DT_FLOAT, [2, 3], [0.1, float("nan")]), "not finite"),
        (_tensor(types_pb2.DT_FLOAT, [2, 3], [float("inf")]), "not finite"),
        (_tensor(types_pb2.DT_FLOAT, [3, 3], [0.1]), "shape"),
    ],
)
def test_answers_the_gateway_cannot_use_are_model_errors(
    scores: tensor_pb2.TensorProto, message: str
) -> None:
    with pytest.raises(Failure, match=message) as info:
        read_prediction(_answer(scores), SIGNATURE, LABELS, batch_size=2)
    assert info.value.code == "model_error"


def test_one_typed_value_fills_the_answer() -> None:
    """As TensorFlow pads, so does the gateway: one value is the whole (2, 3) tensor."""
    prediction = read_prediction(
        _answer(_tensor(types_pb2.DT_FLOAT, [2, 3], [0.25])), SIGNATURE, LABELS, batch_size=2
    )
    assert prediction.scores.tolist() == [[0.25] * 3] * 2
    assert prediction.labels == ("a", "b", "c")
