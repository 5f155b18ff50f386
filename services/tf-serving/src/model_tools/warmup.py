"""TF Serving warmup requests (``assets.extra/tf_serving_warmup_requests``).

TF Serving replays these PredictionLog records when it loads a version, before it reports
AVAILABLE, so graph tracing and GPU kernel selection happen before the first real request.
One record per batch size the batcher may form. The tensor is a single ``float_val`` that
TensorFlow broadcasts to the whole shape, so the file stays a few hundred bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)


def write_warmup(
    version_dir: Path,
    *,
    model_name: str,
    signature_name: str,
    input_name: str,
    height: int,
    width: int,
    batch_sizes: Iterable[int] = DEFAULT_BATCH_SIZES,
) -> Path:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    path = version_dir / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch in batch_sizes:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = signature_name
            tensor = request.inputs[input_name]
            tensor.dtype = tf.float32.as_datatype_enum
            for size in (batch, height, width, 3):
                tensor.tensor_shape.dim.add(size=size)
            tensor.float_val.append(0.0)  # mid-grey after Xception scaling
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path
