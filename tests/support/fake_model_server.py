"""A real gRPC TF Serving stand-in on loopback: PredictionService + ModelService.

It answers Predict with fixed logits (one row per image), records every request it gets
so tests can assert the exact tensor the gateway sent, and can be told to fail, stall or
report the model as not yet available.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import numpy as np
import numpy.typing as npt

from gateway._proto.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from gateway._proto.tensorflow.core.protobuf import meta_graph_pb2
from gateway._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from gateway.model_client import tensor_to_array

NUM_CLASSES = 10
FIXED_LOGITS = np.linspace(-3.0, 2.4, NUM_CLASSES, dtype=np.float32)[::-1].copy()


def _shape(dims: tuple[int, ...]) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )


@dataclass
class FakeModel:
    name: str = "clothing-model"
    version: int = 1
    signature_name: str = "serving_default"
    input_name: str = "input_image"
    output_name: str = "logits"
    input_shape: tuple[int, ...] = (-1, 299, 299, 3)
    num_classes: int = NUM_CLASSES
    logits: npt.NDArray[np.float32] = field(default_factory=lambda: FIXED_LOGITS.copy())
    state: get_model_status_pb2.ModelVersionStatus.State = (
        get_model_status_pb2.ModelVersionStatus.AVAILABLE
    )
    record: bool = True
    delay_s: float = 0.0
    fail_with: grpc.StatusCode | None = None
    requests: list[predict_pb2.PredictRequest] = field(default_factory=list)
    predict_calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def received_batches(self) -> list[npt.NDArray[np.float32]]:
        return [tensor_to_array(r.inputs[self.input_name]) for r in self.requests]

    def signature_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        sig = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
        sig.inputs[self.input_name].CopyFrom(
            meta_graph_pb2.TensorInfo(
                name="serving_default_input:0",
                dtype=types_pb2.DT_FLOAT,
                tensor_shape=_shape(self.input_shape),
            )
        )
        sig.outputs[self.output_name].CopyFrom(
            meta_graph_pb2.TensorInfo(
                name="StatefulPartitionedCall:0",
                dtype=types_pb2.DT_FLOAT,
                tensor_shape=_shape((-1, self.num_classes)),
            )
        )
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        sig_map.signature_def[self.signature_name].CopyFrom(sig)
        return sig_map


class _Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, model: FakeModel) -> None:
        self.model = model

    def _check_model(self, spec: object, context: grpc.ServicerContext) -> None:
        m = self.model
        if getattr(spec, "name", None) != m.name:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found: {spec}")
        if m.state != get_model_status_pb2.ModelVersionStatus.AVAILABLE:
            context.abort(grpc.StatusCode.UNAVAILABLE, "model not available yet")

    def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        m = self.model
        with m._lock:
            m.predict_calls += 1
            if m.record:
                m.requests.append(request)
        if m.delay_s:
            time.sleep(m.delay_s)
        if m.fail_with is not None:
            context.abort(m.fail_with, "injected failure")
        self._check_model(request.model_spec, context)
        if set(request.inputs) != {m.input_name}:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"expected input {m.input_name}")
        tensor = request.inputs[m.input_name]
        dims = [d.size for d in tensor.tensor_shape.dim]
        if (
            tensor.dtype != types_pb2.DT_FLOAT
            or len(dims) != 4
            or dims[1:] != list(m.input_shape[1:])
        ):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad input tensor shape {dims}")
        batch = dims[0]
        out = np.tile(m.logits, (batch, 1)).astype(np.float32)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = m.name
        response.model_spec.version.value = m.version
        response.model_spec.signature_name = m.signature_name
        response.outputs[m.output_name].CopyFrom(
            tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT,
                tensor_shape=_shape(out.shape),
                tensor_content=out.tobytes(),
            )
        )
        return response

    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        self._check_model(request.model_spec, context)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = self.model.name
        response.model_spec.version.value = self.model.version
        response.metadata["signature_def"].Pack(self.model.signature_map())
        return response


class ServedModel(Protocol):
    name: str
    version: int
    state: get_model_status_pb2.ModelVersionStatus.State


class ModelStatusServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus for one model version, as TF Serving answers it (both stand-ins)."""

    def __init__(self, model: ServedModel) -> None:
        self.model = model

    def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        if request.model_spec.name != self.model.name:
            context.abort(grpc.StatusCode.NOT_FOUND, "Could not find any versions of model")
        response = get_model_status_pb2.GetModelStatusResponse()
        status = response.model_version_status.add()
        status.version = self.model.version
        status.state = self.model.state
        return response


def serve(
    model: FakeModel,
    host: str = "127.0.0.1",
    port: int = 0,
    max_workers: int = 16,
    options: list[tuple[str, object]] | None = None,
) -> tuple[grpc.Server, int]:
    """Start the fake server; returns it and the bound port. Stop it with ``server.stop(0)``."""
    # Like TF Serving, accept messages up to 2 GiB (a batch is ~1 MB per image).
    limit: list[tuple[str, object]] = [("grpc.max_receive_message_length", 2**31 - 1)]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers), options=limit + (options or [])
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_Prediction(model), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelStatusServicer(model), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    server.start()
    return server, bound
