"""A TF Serving stand-in that runs a SavedModel with TensorFlow (tests only).

    python -m tests.support.tf_model_server MODEL_BASE_PATH [--name NAME]
        [--enable_serialization_as_tensor_content]

Serves the highest numeric version under MODEL_BASE_PATH on a loopback port (printed as
JSON on the first line of stdout) until stdin closes. It does what TF Serving does with a
SavedModel, as far as a client can tell:

- loads it with the session-based loader (``LoadSavedModel``: the graph, its variables,
  ``Session::Run`` on the signature's tensor names), not through Keras or eager functions;
- replays the version's warmup records before reporting it AVAILABLE (as
  ``--enable_model_warmup`` does), so a warmup file it cannot run fails the load;
- reads requests and writes answers with TF Serving's rules and error texts
  (``tf_serving_wire``), typed output fields by default;
- GetModelMetadata returns the SignatureDefs from ``saved_model.pb``, all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import grpc
import numpy as np
import numpy.typing as npt
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from gateway._proto.tensorflow.core.protobuf import meta_graph_pb2
from gateway._proto.tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from serving_contract.model import DEFAULT_MODEL_NAME, SIGNATURE
from tests.support.fake_model_server import ModelStatusServicer
from tests.support.tf_serving_wire import (
    WireError,
    check_batched_outputs,
    check_request,
    decode_input,
    encode_output,
    model_metadata,
    signature_not_found,
)

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"


class SessionModel:
    """One SavedModel version in a TF1-style session, as TF Serving's loader holds it."""

    def __init__(self, base_path: Path, name: str, *, tensor_content: bool = False) -> None:
        versions = sorted(int(p.name) for p in base_path.iterdir() if p.name.isdigit())
        if not versions:
            raise SystemExit(f"no numeric version directory under {base_path}")
        self.name = name
        self.tensor_content = tensor_content  # --enable_serialization_as_tensor_content
        self.version = versions[-1]
        self.state = get_model_status_pb2.ModelVersionStatus.LOADING
        self.dir = base_path / str(self.version)
        saved = saved_model_pb2.SavedModel.FromString((self.dir / "saved_model.pb").read_bytes())
        [serve] = [g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags]
        self.signatures = {
            key: meta_graph_pb2.SignatureDef.FromString(sig.SerializeToString())
            for key, sig in serve.signature_def.items()
        }
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph)
        with self._graph.as_default():
            tf.compat.v1.saved_model.loader.load(self._session, ["serve"], str(self.dir))
        self._lock = threading.Lock()

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        key = request.model_spec.signature_name or SIGNATURE
        if key not in self.signatures:
            raise signature_not_found(key)
        signature = self.signatures[key]
        wanted = check_request(key, signature, request.inputs, list(request.output_filter))
        feeds = {
            signature.inputs[alias].name: decode_input(tensor, alias)
            for alias, tensor in request.inputs.items()
        }
        fetches = {alias: signature.outputs[alias].name for alias in wanted}
        try:
            with self._lock:
                outputs: dict[str, npt.NDArray[Any]] = self._session.run(fetches, feeds)
        except tf.errors.OpError as exc:
            raise WireError(grpc.StatusCode.INVALID_ARGUMENT, exc.message) from None
        batch = {array.shape[0] for array in feeds.values()}
        if len(batch) == 1:
            check_batched_outputs(batch.pop(), outputs)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = self.name
        response.model_spec.version.value = self.version
        response.model_spec.signature_name = key
        for alias, value in outputs.items():
            array = np.asarray(value)
            response.outputs[alias].CopyFrom(
                encode_output(array, tensor_content=self.tensor_content)
            )
        return response

    def warm_up(self) -> int:
        """Replay the warmup records; the load fails (SystemExit) if one cannot run."""
        from tensorflow_serving.apis import prediction_log_pb2

        path = self.dir / WARMUP_FILE
        count = 0
        if path.is_file():
            for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
                log = prediction_log_pb2.PredictionLog.FromString(raw)
                request = predict_pb2.PredictRequest.FromString(
                    log.predict_log.request.SerializeToString()
                )
                try:
                    self.predict(request)
                except WireError as error:
                    raise SystemExit(f"warmup record {count} failed: {error.message}") from None
                count += 1
        self.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return count


class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, model: SessionModel) -> None:
        self.model = model

    def Predict(self, request, context):  # type: ignore[no-untyped-def]
        if request.model_spec.name != self.model.name:
            context.abort(grpc.StatusCode.NOT_FOUND, "Servable not found")
        try:
            return self.model.predict(request)
        except WireError as error:
            error.abort(context)

    def GetModelMetadata(self, request, context):  # type: ignore[no-untyped-def]
        if request.model_spec.name != self.model.name:
            context.abort(grpc.StatusCode.NOT_FOUND, "Servable not found")
        m = self.model
        try:
            return model_metadata(request, m.name, m.version, m.signatures)
        except WireError as error:
            error.abort(context)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base_path", type=Path)
    parser.add_argument("--name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--enable_serialization_as_tensor_content", action="store_true")
    args = parser.parse_args()
    model = SessionModel(
        args.base_path, args.name, tensor_content=args.enable_serialization_as_tensor_content
    )
    warmed = model.warm_up()
    # TF Serving accepts messages up to 2 GiB; so must its stand-in (a batch is ~1 MB/image).
    limit = [("grpc.max_receive_message_length", 2**31 - 1)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=limit)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Prediction(model), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelStatusServicer(model), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(
        json.dumps({"grpc_port": port, "version": model.version, "warmup_records": warmed}),
        flush=True,
    )
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
