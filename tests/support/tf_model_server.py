"""A TF Serving stand-in that really runs a SavedModel with TensorFlow (tests only).

    python -m tests.support.tf_model_server MODEL_BASE_PATH [--name NAME]

Serves the highest numeric version under MODEL_BASE_PATH on a loopback port (printed as
JSON on the first line of stdout) until stdin closes. Predict runs the signature with
TensorFlow; GetModelMetadata returns the SignatureDefs from ``saved_model.pb``, as TF
Serving does; GetModelStatus reports the version AVAILABLE. Tensors cross between the
wire and TensorFlow with TensorFlow's own converters, not the gateway's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent import futures
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import grpc
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2 as tf_tensor_pb2
from tensorflow.core.protobuf import saved_model_pb2

from gateway._proto.tensorflow.core.framework import tensor_pb2
from gateway._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tests.support.fake_model_server import ModelStatusServicer


class TfModel:
    def __init__(self, base_path: Path, name: str) -> None:
        versions = sorted(int(p.name) for p in base_path.iterdir() if p.name.isdigit())
        if not versions:
            raise SystemExit(f"no numeric version directory under {base_path}")
        self.name = name
        self.version = versions[-1]
        self.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE  # loaded above
        version_dir = base_path / str(self.version)
        self.loaded = tf.saved_model.load(str(version_dir))
        saved = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
        self.signature_defs = saved.meta_graphs[0].signature_def


class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, model: TfModel) -> None:
        self.model = model

    def Predict(self, request, context):  # type: ignore[no-untyped-def]
        if request.model_spec.name != self.model.name:
            context.abort(grpc.StatusCode.NOT_FOUND, "Servable not found")
        signature = self.model.loaded.signatures[
            request.model_spec.signature_name or "serving_default"
        ]
        inputs = {
            key: tf.constant(
                tf.make_ndarray(tf_tensor_pb2.TensorProto.FromString(t.SerializeToString()))
            )
            for key, t in request.inputs.items()
        }
        outputs = signature(**inputs)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.model.name
        response.model_spec.version.value = self.model.version
        response.model_spec.signature_name = request.model_spec.signature_name
        for key, value in outputs.items():
            if request.output_filter and key not in request.output_filter:
                continue
            proto = tf.make_tensor_proto(value.numpy())
            response.outputs[key].CopyFrom(
                tensor_pb2.TensorProto.FromString(proto.SerializeToString())
            )
        return response

    def GetModelMetadata(self, request, context):  # type: ignore[no-untyped-def]
        if request.model_spec.name != self.model.name:
            context.abort(grpc.StatusCode.NOT_FOUND, "Servable not found")
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in self.model.signature_defs.items():
            sig_map.signature_def[key].ParseFromString(sig.SerializeToString())
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.model.name
        response.model_spec.version.value = self.model.version
        response.metadata["signature_def"].Pack(sig_map)
        return response


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_path", type=Path)
    parser.add_argument("--name", default="clothing-model")
    args = parser.parse_args()
    model = TfModel(args.base_path, args.name)
    # TF Serving accepts messages up to 2 GiB; so must its stand-in (a batch is ~1 MB/image).
    limit = [("grpc.max_receive_message_length", 2**31 - 1)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=limit)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Prediction(model), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelStatusServicer(model), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(json.dumps({"grpc_port": port, "version": model.version}), flush=True)
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
