"""gRPC client for TensorFlow Serving: signature discovery, Predict and model status.

The channel is created lazily, once per process (so never inherited across a fork), and
shared by all request threads. With a ``dns:///`` target naming a headless Service and the
``round_robin`` policy, every TF Serving pod gets its own sub-channel and calls are
spread per request; the server's max connection age makes the client re-resolve DNS so
new pods join.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np
import numpy.typing as npt

from gateway._proto.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from gateway._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from gateway.errors import ApiError
from gateway.settings import Settings

_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_STATUS_TIMEOUT_S = 2.0
PredictionStub = prediction_service_pb2_grpc.PredictionServiceStub
ModelStub = model_service_pb2_grpc.ModelServiceStub
_AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE


@dataclass(frozen=True)
class Signature:
    """The tensor names to use, learned from the server (shapes are checked on the way)."""

    input_name: str
    output_name: str


@dataclass(frozen=True)
class Prediction:
    scores: npt.NDArray[np.float32]  # (batch, classes), as the model returned them
    model_version: int


def channel_options(lb_policy: str) -> list[tuple[str, object]]:
    service_config = {
        "loadBalancingConfig": [{lb_policy: {}}],
        "methodConfig": [
            {
                # Predict is idempotent: retry a call that never reached a live server,
                # e.g. a pod that went away mid rolling update.
                "name": [{"service": "tensorflow.serving.PredictionService"}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
    return [
        ("grpc.service_config", json.dumps(service_config)),
        ("grpc.enable_retries", 1),
        ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Reconnect quickly after the model server comes back.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        ("grpc.dns_min_time_between_resolutions_ms", 2_000),
    ]


def grpc_error(exc: grpc.RpcError, retry_after: int, what: str) -> ApiError:
    """The client-facing error for a failed call to the model server."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ApiError(
            504,
            "model_timeout",
            f"{what}: the model server did not answer in time",
            retry_after=retry_after,
        )
    if code in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    ):
        return ApiError(
            503,
            "model_unavailable",
            f"{what}: model server unavailable ({code.name}: {detail})",
            retry_after=retry_after,
        )
    return ApiError(502, "model_error", f"{what}: model server error ({code.name}: {detail})")


def _dims(shape: tensor_shape_pb2.TensorShapeProto) -> tuple[int, ...]:
    if shape.unknown_rank:
        return ()
    return tuple(int(d.size) for d in shape.dim)


def fill_float_tensor(tensor: tensor_pb2.TensorProto, batch: npt.NDArray[np.float32]) -> None:
    """Write ``batch`` into ``tensor`` in place as little-endian ``tensor_content`` bytes
    (built in place: a megabyte per image is not copied between messages)."""
    data = np.ascontiguousarray(batch, dtype="<f4")
    tensor.dtype = types_pb2.DT_FLOAT
    for n in data.shape:
        tensor.tensor_shape.dim.add(size=n)
    tensor.tensor_content = data.tobytes()


def tensor_to_array(tensor: tensor_pb2.TensorProto) -> npt.NDArray[np.float32]:
    shape = _dims(tensor.tensor_shape)
    if tensor.dtype == types_pb2.DT_FLOAT:
        if tensor.tensor_content:
            flat = np.frombuffer(tensor.tensor_content, dtype="<f4")
        else:
            flat = np.asarray(tensor.float_val, dtype=np.float32)
    elif tensor.dtype == types_pb2.DT_DOUBLE:
        if tensor.tensor_content:
            flat = np.frombuffer(tensor.tensor_content, dtype="<f8")
        else:
            flat = np.asarray(tensor.double_val, dtype=np.float64)
    else:
        raise ValueError(f"unsupported output dtype {types_pb2.DataType.Name(tensor.dtype)}")
    if flat.size != int(np.prod(shape)):
        raise ValueError(f"output tensor has {flat.size} values for shape {list(shape)}")
    return flat.astype(np.float32).reshape(shape)


class ModelClient:
    """One per process; thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._channel: grpc.Channel | None = None
        self._pair: tuple[PredictionStub, ModelStub] | None = None
        self._signature: Signature | None = None
        self._signature_at = 0.0

    # -- connection -------------------------------------------------------------------
    def _stubs(self) -> tuple[PredictionStub, ModelStub]:
        with self._lock:
            if self._channel is None or self._pair is None or self._pid != os.getpid():
                self._channel = grpc.insecure_channel(
                    self.settings.model_target, options=channel_options(self.settings.lb_policy)
                )
                self._pid = os.getpid()
                self._pair = (PredictionStub(self._channel), ModelStub(self._channel))
                self._signature = None
            return self._pair

    def close(self) -> None:
        with self._lock:
            if self._channel is not None and self._pid == os.getpid():
                self._channel.close()
            self._channel = None
            self._pair = None

    def _spec(self) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(
            name=self.settings.model_name, signature_name=self.settings.signature_name
        )
        if self.settings.model_version is not None:
            spec.version.value = self.settings.model_version
        return spec

    # -- metadata ---------------------------------------------------------------------
    def signature(self) -> Signature:
        """The serving signature, cached for MODEL_METADATA_TTL_S."""
        cached = self._signature
        if (
            cached is not None
            and time.monotonic() - self._signature_at < self.settings.metadata_ttl_s
        ):
            return cached
        predict_stub, _ = self._stubs()
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self._spec(), metadata_field=["signature_def"]
        )
        try:
            response = predict_stub.GetModelMetadata(request, timeout=self.settings.model_timeout_s)
        except grpc.RpcError as exc:
            raise grpc_error(exc, self.settings.retry_after_s, "reading model metadata") from None
        signature = self._parse_signature(response)
        self._signature, self._signature_at = signature, time.monotonic()
        return signature

    def invalidate_signature(self) -> None:
        self._signature = None

    def _parse_signature(
        self, response: get_model_metadata_pb2.GetModelMetadataResponse
    ) -> Signature:
        s = self.settings
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        if "signature_def" not in response.metadata or not response.metadata[
            "signature_def"
        ].Unpack(sig_map):
            raise ApiError(502, "model_error", "model metadata has no signature_def")
        if s.signature_name not in sig_map.signature_def:
            raise ApiError(
                502,
                "model_misconfigured",
                f"model {s.model_name!r} has no signature {s.signature_name!r}; "
                f"it has {sorted(sig_map.signature_def)}",
            )
        sig = sig_map.signature_def[s.signature_name]
        input_name = _pick(sig.inputs, s.input_name, "input", "MODEL_INPUT_NAME")
        output_name = _pick(sig.outputs, s.output_name, "output", "MODEL_OUTPUT_NAME")
        input_shape = _dims(sig.inputs[input_name].tensor_shape)
        output_shape = _dims(sig.outputs[output_name].tensor_shape)
        if len(input_shape) == 4:
            expected = (s.image_size[0], s.image_size[1], 3)
            known = all(a in (-1, b) for a, b in zip(input_shape[1:], expected, strict=True))
            if not known:
                raise ApiError(
                    502,
                    "model_misconfigured",
                    f"model input {input_name!r} has shape {list(input_shape)} but the "
                    f"gateway sends [-1, {expected[0]}, {expected[1]}, 3]; set IMAGE_SIZE",
                )
        if output_shape and output_shape[-1] > 0 and output_shape[-1] != len(s.class_labels):
            raise ApiError(
                502,
                "model_misconfigured",
                f"model output {output_name!r} has {output_shape[-1]} classes but "
                f"{len(s.class_labels)} class labels are configured (CLASS_LABELS)",
            )
        return Signature(input_name=input_name, output_name=output_name)

    # -- inference --------------------------------------------------------------------
    def predict(self, batch: npt.NDArray[np.float32]) -> Prediction:
        signature = self.signature()
        predict_stub, _ = self._stubs()
        request = predict_pb2.PredictRequest(
            model_spec=self._spec(), output_filter=[signature.output_name]
        )
        fill_float_tensor(request.inputs[signature.input_name], batch)
        try:
            response = predict_stub.Predict(request, timeout=self.settings.model_timeout_s)
        except grpc.RpcError as exc:
            error = grpc_error(exc, self.settings.retry_after_s, "predict")
            if error.status == 502:
                self.invalidate_signature()  # the model may have changed under us
            raise error from None
        if signature.output_name not in response.outputs:
            raise ApiError(502, "model_error", f"response lacks output {signature.output_name!r}")
        try:
            scores = tensor_to_array(response.outputs[signature.output_name])
        except ValueError as exc:
            raise ApiError(502, "model_error", str(exc)) from None
        expected = (batch.shape[0], len(self.settings.class_labels))
        if scores.shape != expected:
            raise ApiError(
                502,
                "model_error",
                f"model returned shape {list(scores.shape)}, expected {list(expected)}",
            )
        return Prediction(scores=scores, model_version=int(response.model_spec.version.value))

    # -- readiness --------------------------------------------------------------------
    def readiness(self) -> tuple[bool, str]:
        """Whether the model server answers and the model is AVAILABLE, and why not."""
        _, model_stub = self._stubs()
        spec = model_pb2.ModelSpec(name=self.settings.model_name)
        if self.settings.model_version is not None:
            spec.version.value = self.settings.model_version
        try:
            status = model_stub.GetModelStatus(
                get_model_status_pb2.GetModelStatusRequest(model_spec=spec),
                timeout=min(_STATUS_TIMEOUT_S, self.settings.model_timeout_s),
            )
        except grpc.RpcError as exc:
            return False, grpc_error(exc, self.settings.retry_after_s, "model status").message
        available = [v.version for v in status.model_version_status if v.state == _AVAILABLE]
        if not available:
            states = [
                get_model_status_pb2.ModelVersionStatus.State.Name(v.state)
                for v in status.model_version_status
            ]
            return False, f"model {self.settings.model_name!r} not available (states {states})"
        try:
            self.signature()
        except ApiError as exc:
            return False, exc.message
        return True, f"model {self.settings.model_name!r} versions {available} available"


def _pick(tensors: object, configured: str | None, kind: str, setting: str) -> str:
    names: Sequence[str] = sorted(tensors)  # type: ignore[call-overload]
    if configured is not None:
        if configured not in names:
            raise ApiError(
                502,
                "model_misconfigured",
                f"{setting}={configured!r} is not a signature {kind}; the model has {names}",
            )
        return configured
    if len(names) != 1:
        raise ApiError(
            502,
            "model_misconfigured",
            f"the signature has {kind}s {names}; set {setting} to choose one",
        )
    return names[0]
