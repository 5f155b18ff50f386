"""TF Serving warmup requests (``assets.extra/tf_serving_warmup_requests``).

TF Serving replays these PredictionLog records when it loads a version, before it reports
AVAILABLE, so graph tracing and GPU kernel selection happen before the first real request.
There is one record per signature and batch size the batcher may form, so every shape that
is served has run once. Each tensor holds a single value, which TensorFlow repeats over the
whole shape (``Tensor::FromProto``), so the file stays a few hundred bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)


def write_warmup(
    version_dir: Path,
    *,
    model_name: str,
    inputs: Mapping[str, tuple[str, str]],
    height: int,
    width: int,
    batch_sizes: Iterable[int] = DEFAULT_BATCH_SIZES,
) -> Path:
    """``inputs`` maps each signature name to its (input key, dtype: uint8 or float32)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    sizes = tuple(batch_sizes)
    path = version_dir / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature_name, (input_name, dtype) in inputs.items():
            for batch in sizes:
                request = predict_pb2.PredictRequest()
                request.model_spec.name = model_name
                request.model_spec.signature_name = signature_name
                tensor = request.inputs[input_name]
                tensor.dtype = tf.as_dtype(dtype).as_datatype_enum
                for size in (batch, height, width, 3):
                    tensor.tensor_shape.dim.add(size=size)
                if dtype == "uint8":
                    tensor.int_val.append(128)  # mid-grey pixels
                else:
                    tensor.float_val.append(0.0)  # mid-grey after `tf`-mode scaling
                log = prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=request)
                )
                writer.write(log.SerializeToString())
    return path
