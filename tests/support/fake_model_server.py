"""A real gRPC TF Serving stand-in on loopback: PredictionService + ModelService.

It serves a signature shaped like a ``model_tools`` export (``image`` uint8 in, ``logits``
and ``classes`` out) and answers Predict with fixed logits (one row per image), reading and
writing tensors the way TF Serving does (``model_tools.serving_wire``: typed output fields unless
told to use ``tensor_content``). It records every request so tests can assert the exact
tensor the gateway sent, and can be told to fail, stall or report the model as not yet
available.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import numpy as np
import numpy.typing as npt

from gateway._proto.tensorflow.core.framework import types_pb2
from gateway._proto.tensorflow.core.protobuf import meta_graph_pb2
from gateway._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from model_tools.cli import CLOTHING_CLASSES
from model_tools.serving_wire import (
    INIT_OP_KEY,
    WireError,
    check_batched_outputs,
    check_request,
    decode_input,
    encode_output,
    model_metadata,
    model_status,
    set_shape,
    signature_not_found,
)
from serving_contract.model import (
    CLASSES_OUTPUT,
    DEFAULT_MODEL_NAME,
    IMAGE_INPUT,
    LOGITS_OUTPUT,
    SIGNATURE,
)

FIXED_LOGITS = np.linspace(-3.0, 2.4, len(CLOTHING_CLASSES), dtype=np.float32)[::-1].copy()
_DTYPES = {"uint8": types_pb2.DT_UINT8, "float32": types_pb2.DT_FLOAT}


@dataclass
class FakeModel:
    name: str = DEFAULT_MODEL_NAME
    version: int = 1
    signature_name: str = SIGNATURE
    input_name: str = IMAGE_INPUT
    input_dtype: str = "uint8"
    output_name: str = LOGITS_OUTPUT
    input_shape: tuple[int, ...] = (-1, 299, 299, 3)
    labels: tuple[str, ...] = CLOTHING_CLASSES
    classes_output: bool = True  # a `classes` output with the labels, like an export
    logits: npt.NDArray[np.float32] = field(default_factory=lambda: FIXED_LOGITS.copy())
    # Logits computed from each image (so different pictures get different answers, as
    # from a real model) instead of the fixed ``logits``.
    logits_from_image: bool = False
    tensor_content: bool = False  # --enable_serialization_as_tensor_content
    state: get_model_status_pb2.ModelVersionStatus.State = (
        get_model_status_pb2.ModelVersionStatus.AVAILABLE
    )
    record: bool = True
    delay_s: float = 0.0
    fail_with: grpc.StatusCode | None = None
    requests: list[predict_pb2.PredictRequest] = field(default_factory=list)
    predict_calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def received_batches(self) -> list[npt.NDArray[np.generic]]:
        return [decode_input(r.inputs[self.input_name], self.input_name) for r in self.requests]

    def signature_def(self) -> meta_graph_pb2.SignatureDef:
        sig = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
        image = sig.inputs[self.input_name]
        image.name = f"serving_default_{self.input_name}:0"
        image.dtype = _DTYPES[self.input_dtype]
        set_shape(image.tensor_shape, self.input_shape)
        outputs = {self.output_name: types_pb2.DT_FLOAT}
        if self.classes_output:
            outputs[CLASSES_OUTPUT] = types_pb2.DT_STRING
        for i, (name, dtype) in enumerate(sorted(outputs.items())):
            output = sig.outputs[name]
            output.name = f"StatefulPartitionedCall:{i}"
            output.dtype = dtype
            set_shape(output.tensor_shape, (-1, self.num_classes))
        return sig

    def signatures(self) -> dict[str, meta_graph_pb2.SignatureDef]:
        """The signature map of the SavedModel, as GetModelMetadata returns it."""
        init_op = meta_graph_pb2.SignatureDef()
        init_op.outputs[INIT_OP_KEY].name = "NoOp"
        return {self.signature_name: self.signature_def(), INIT_OP_KEY: init_op}

    def run(self, images: npt.NDArray[np.generic]) -> dict[str, npt.NDArray[np.generic]]:
        batch = images.shape[0]
        if self.logits_from_image:
            # each class's logit: the mean of one band of the image's rows, spread out
            bands = np.array_split(images.astype(np.float32), self.num_classes, axis=1)
            logits = np.stack([band.mean(axis=(1, 2, 3)) for band in bands], axis=1) / 16
        else:
            logits = np.tile(self.logits, (batch, 1))
        outputs: dict[str, npt.NDArray[np.generic]] = {self.output_name: logits.astype(np.float32)}
        if self.classes_output:
            outputs[CLASSES_OUTPUT] = np.array([list(self.labels)] * batch, dtype=object)
        return outputs


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
        try:
            key = request.model_spec.signature_name or SIGNATURE
            if key != m.signature_name:
                raise signature_not_found(key)
            wanted = check_request(
                key, m.signature_def(), request.inputs, list(request.output_filter)
            )
            image = decode_input(request.inputs[m.input_name], m.input_name)
            if image.ndim != 4 or list(image.shape[1:]) != list(m.input_shape[1:]):
                raise WireError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {m.input_name} has shape {list(image.shape)}; "
                    f"the model takes {list(m.input_shape)}",
                )
            outputs = m.run(image)
            check_batched_outputs(image.shape[0], outputs)
        except WireError as error:
            error.abort(context)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = m.name
        response.model_spec.version.value = m.version
        response.model_spec.signature_name = key
        for name in wanted:
            encode_output(outputs[name], response.outputs[name], tensor_content=m.tensor_content)
        return response

    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        self._check_model(request.model_spec, context)
        m = self.model
        try:
            response: get_model_metadata_pb2.GetModelMetadataResponse = model_metadata(
                get_model_metadata_pb2, request, m.name, m.version, m.signatures()
            )
        except WireError as error:
            error.abort(context)
        return response


class _ModelStatus(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, model: FakeModel) -> None:
        self.model = model

    def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        m = self.model
        try:
            response: get_model_status_pb2.GetModelStatusResponse = model_status(
                get_model_status_pb2, request, m.name, m.version, m.state
            )
        except WireError as error:
            error.abort(context)
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
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelStatus(model), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    server.start()
    return server, bound
