"""``python -m model_tools serve``: an export served over TF Serving's gRPC API by TensorFlow
in Python, on loopback, so a model can be tried without Docker (``make dev``) and tested
without the TF Serving image.

It is not TF Serving and not for serving anyone: one model, one session, one request at a
time, no batching, no REST API. What it keeps is what a client can tell apart:

- it loads the newest version the way TF Serving's loader does (``LoadSavedModel``: the
  graph, its variables, ``Session::Run`` on the signature's tensor names), not through Keras
  or eager functions;
- it replays the version's warmup records before it listens (as ``--enable_model_warmup``
  does), so a warmup file it cannot run fails the load;
- it reads requests and writes answers with TF Serving's rules and error texts
  (``serving_wire``), typed output fields by default;
- GetModelMetadata returns the SignatureDefs from ``saved_model.pb``, all of them, and
  GetModelStatus reports the version AVAILABLE.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from model_tools.errors import ExportError
from model_tools.serving_config import newest_version
from model_tools.serving_wire import (
    WireError,
    check_batched_outputs,
    check_request,
    decode_input,
    encode_output,
    model_metadata,
    model_status,
    signature_not_found,
)
from model_tools.warmup import WARMUP_FILE
from serving_contract.model import SIGNATURE

# TF Serving accepts messages up to 2 GiB; so must this server (a batch is ~1 MB/image).
MAX_MESSAGE_BYTES = 2**31 - 1


class SessionModel:
    """One SavedModel version in a TF1-style session, as TF Serving's loader holds it."""

    def __init__(self, version_dir: Path, name: str, *, tensor_content: bool = False) -> None:
        self.name = name
        self.tensor_content = tensor_content  # --enable_serialization_as_tensor_content
        self.dir = version_dir
        self.version = int(version_dir.name)
        self.state = get_model_status_pb2.ModelVersionStatus.LOADING
        saved = saved_model_pb2.SavedModel.FromString((version_dir / "saved_model.pb").read_bytes())
        [serve] = [g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags]
        self.signatures = dict(serve.signature_def)
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph)
        # TensorFlow 2 marks the session loader deprecated for Python programs, in a log line
        # a user of `make dev` can do nothing about; it is what TF Serving runs.
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            with self._graph.as_default():
                tf.compat.v1.saved_model.loader.load(self._session, ["serve"], str(version_dir))
        finally:
            logger.setLevel(level)
        self._lock = threading.Lock()

    def predict(self, request: Any) -> Any:
        """A PredictRequest's answer, or WireError as TF Serving refuses it."""
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
            encode_output(
                np.asarray(value), response.outputs[alias], tensor_content=self.tensor_content
            )
        return response

    def warm_up(self) -> int:
        """Replay the warmup records, then report the version AVAILABLE; the load fails
        (ExportError) if a record cannot run."""
        path = self.dir / WARMUP_FILE
        count = 0
        if path.is_file():
            for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
                log = prediction_log_pb2.PredictionLog.FromString(raw)
                try:
                    self.predict(log.predict_log.request)
                except WireError as error:
                    raise ExportError(f"warmup record {count} failed: {error.message}") from None
                count += 1
        self.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return count


class _Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    def __init__(self, model: SessionModel) -> None:
        self.model = model

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.model_spec.name != self.model.name:
            context.abort(grpc.StatusCode.NOT_FOUND, "Servable not found")
        try:
            return self.model.predict(request)
        except WireError as error:
            error.abort(context)

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        m = self.model
        if request.model_spec.name != m.name:
            context.abort(grpc.StatusCode.NOT_FOUND, "Servable not found")
        try:
            return model_metadata(get_model_metadata_pb2, request, m.name, m.version, m.signatures)
        except WireError as error:
            error.abort(context)


class _ModelStatus(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    def __init__(self, model: SessionModel) -> None:
        self.model = model

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        m = self.model
        try:
            return model_status(get_model_status_pb2, request, m.name, m.version, m.state)
        except WireError as error:
            error.abort(context)


def serve(
    export_dir: Path, name: str, host: str, port: int, *, tensor_content: bool = False
) -> int:
    """Load and warm up ``name``'s newest version under ``export_dir``, serve it on
    ``host:port`` (0: any free port) until SIGINT or SIGTERM; returns the exit status."""
    version_dir = newest_version(export_dir, name)
    model = SessionModel(version_dir, name, tensor_content=tensor_content)
    warmed = model.warm_up()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_Prediction(model), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelStatus(model), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # grpc raises where older releases returned 0
        bound = 0
    if not bound:
        print(f"error: cannot listen on {host}:{port} (is the port taken?)", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    print(
        f"model server: {name} version {model.version} ({version_dir}, {warmed} warmup "
        f"requests replayed) on {host}:{bound}, gRPC; TensorFlow {tf.__version__} in "
        "Python, not TF Serving",
        flush=True,
    )
    # Waking now and then: a signal that one of gRPC's or TensorFlow's threads received runs
    # its handler only when this thread next runs Python, never in an untimed wait.
    while not stop.wait(timeout=0.5):
        pass
    server.stop(grace=1).wait()
    return 0
