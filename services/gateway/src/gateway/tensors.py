"""TensorProto <-> NumPy, the way TF Serving writes and reads them.

Images go out as ``tensor_content`` bytes (uint8 pixels, or float32 for models that take
preprocessed input), built in place so a batch is not copied between messages. Answers
come back in either form TF Serving uses: typed fields (``float_val``, ``string_val``...),
its default, or ``tensor_content`` when it runs with
``--enable_serialization_as_tensor_content`` (strings then arrive as TensorFlow's encoded
string list: every length as a varint, then the bytes).
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from gateway._proto.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

# dtype enum -> (NumPy little-endian dtype, the typed field TF Serving fills by default)
_NUMERIC = {
    types_pb2.DT_FLOAT: ("<f4", "float_val"),
    types_pb2.DT_DOUBLE: ("<f8", "double_val"),
    types_pb2.DT_HALF: ("<f2", "half_val"),
    types_pb2.DT_INT32: ("<i4", "int_val"),
    types_pb2.DT_INT64: ("<i8", "int64_val"),
    types_pb2.DT_UINT8: ("u1", "int_val"),
}
_T = TypeVar("_T")
_DTYPE_ENUM = {np.dtype(np.uint8): types_pb2.DT_UINT8, np.dtype(np.float32): types_pb2.DT_FLOAT}


class TensorError(ValueError):
    """A tensor the gateway cannot read (the message says why)."""


def dtype_name(dtype: int) -> str:
    """DT_FLOAT, ...; a number TensorFlow has no name for (a newer or broken peer) as
    ``DataType(99)``."""
    try:
        return str(types_pb2.DataType.Name(dtype))
    except ValueError:
        return f"DataType({dtype})"


def dims(shape: tensor_shape_pb2.TensorShapeProto) -> tuple[int, ...]:
    """The dimensions of a shape (-1 where unknown); () for an unknown rank."""
    if shape.unknown_rank:
        return ()
    return tuple(int(d.size) for d in shape.dim)


def fill_image_tensor(tensor: tensor_pb2.TensorProto, batch: npt.NDArray[np.generic]) -> None:
    """Write a uint8 or float32 ``batch`` into ``tensor`` as ``tensor_content`` bytes."""
    data = np.ascontiguousarray(batch, dtype=batch.dtype.newbyteorder("<"))
    tensor.dtype = _DTYPE_ENUM[np.dtype(batch.dtype)]
    for n in data.shape:
        tensor.tensor_shape.dim.add(size=n)
    tensor.tensor_content = data.tobytes()


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 28:
            raise TensorError("malformed string tensor_content")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _decode_string_list(content: bytes, count: int) -> list[bytes]:
    lengths = []
    pos = 0
    for _ in range(count):
        length, pos = _varint(content, pos)
        lengths.append(length)
    if pos + sum(lengths) != len(content):
        raise TensorError("malformed string tensor_content")
    values = []
    for length in lengths:
        values.append(content[pos : pos + length])
        pos += length
    return values


# Answers are (batch, classes): far below this. A peer declaring more elements than it
# sends (typed fields are padded, see to_array) must not make the gateway allocate them.
MAX_ELEMENTS = 1 << 24


def to_array(tensor: tensor_pb2.TensorProto) -> npt.NDArray[np.generic]:
    """A numeric tensor as a NumPy array of its own dtype, or a string tensor as an array
    of Python ``str`` (UTF-8). Read as TensorFlow's ``Tensor::FromProto`` reads it:
    ``tensor_content`` holds exactly the shape's elements; typed fields with fewer values
    are padded with the last one (none: zeros), extra values are ignored."""
    shape = dims(tensor.tensor_shape)
    if any(n < 0 for n in shape):
        raise TensorError(f"tensor has an unknown dimension: {list(shape)}")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise TensorError(f"tensor has {count} elements; the limit is {MAX_ELEMENTS}")
    if tensor.dtype == types_pb2.DT_STRING:
        if tensor.tensor_content:
            raw = _decode_string_list(tensor.tensor_content, count)
        else:
            raw = _pad(list(tensor.string_val), count, b"")
        try:
            values: npt.NDArray[np.generic] = np.array(
                [item.decode("utf-8") for item in raw], dtype=object
            )
        except UnicodeDecodeError as exc:
            raise TensorError(f"string tensor is not UTF-8: {exc}") from None
    elif tensor.dtype in _NUMERIC:
        dtype, field = _NUMERIC[tensor.dtype]
        if tensor.tensor_content:
            content = tensor.tensor_content
            if len(content) != count * np.dtype(dtype).itemsize:
                raise TensorError(
                    f"tensor_content has {len(content)} bytes for {count} {dtype} elements"
                )
            values = np.frombuffer(content, dtype=dtype)
        else:
            # int_val carries uint8 and half_val carries float16 bits as int32: narrowed as
            # TensorFlow's C++ does (modulo), never an overflow error
            typed = np.asarray(_pad(list(getattr(tensor, field)), count, 0))
            if tensor.dtype == types_pb2.DT_HALF:
                values = typed.astype("<u2").view("<f2")
            else:
                values = typed.astype(dtype)
    else:
        raise TensorError(f"unsupported tensor dtype {dtype_name(tensor.dtype)}")
    return values.reshape(shape)


def _pad(values: list[_T], count: int, default: _T) -> list[_T]:
    """``FromProtoField``: the first ``count`` values, the last repeated to fill."""
    if not values:
        return [default] * count
    return values[:count] + [values[-1]] * (count - len(values))
