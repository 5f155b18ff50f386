"""The course's gateway, for comparison only: urllib download, PIL nearest resize, float32,
``x / 127.5 - 1``, ``tensor_content``, hard-coded tensor names (``input_8`` -> ``dense_7``,
the course's SavedModel), a module-level channel, raw logits read from ``float_val``. Served
by one sync gunicorn worker, as in the course."""

from __future__ import annotations

import os
import urllib.request
from io import BytesIO
from typing import Any

import grpc
import numpy as np
from flask import Flask, jsonify, request
from PIL import Image

from gateway._proto.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from gateway._proto.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from model_tools.cli import CLOTHING_CLASSES

CLASSES = list(CLOTHING_CLASSES)
channel = grpc.insecure_channel(os.environ["TF_SERVING_HOST"])
stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
app = Flask("reference")


def _prepare(url: str) -> np.ndarray:
    with urllib.request.urlopen(url) as resp:  # the course checks nothing
        buffer = resp.read()
    img: Image.Image = Image.open(BytesIO(buffer))
    if img.mode != "RGB":
        img = img.convert("RGB")
    img = img.resize((299, 299), Image.Resampling.NEAREST)
    x = np.array([np.array(img, dtype="float32")])
    return x / 127.5 - 1.0


@app.post("/predict")
def predict() -> Any:
    x = _prepare(request.get_json()["url"]).astype(np.float32)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "clothing-model"
    req.model_spec.signature_name = "serving_default"
    req.inputs["input_8"].CopyFrom(
        tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=n) for n in x.shape]
            ),
            tensor_content=x.tobytes(),
        )
    )
    pb = stub.Predict(req, timeout=20.0)
    preds = pb.outputs["dense_7"].float_val
    return jsonify(dict(zip(CLASSES, list(preds), strict=True)))
