"""Calls to TF Serving: the served signature (cached), Predict, and readiness.

Each answer carries the labels of the model version that computed it (the ``classes``
output), so during a rollout where two versions serve side by side every prediction is
labelled by the version that made it. When the model server sleeps when idle
(``MODEL_WAKE_ESTIMATE_S``), every call tells the wake clock (``gateway.waking``) whether
it found one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal

import grpc
import numpy as np
import numpy.typing as npt

from gateway._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)
from gateway.failures import Code, Failure
from gateway.grpc_channel import ProcessChannel
from gateway.metrics import Metrics
from gateway.model_errors import (
    ABSENT,
    MODEL_ASLEEP,
    call_detail,
    grpc_error,
    grpc_status,
    model_waking,
    unusable_answer,
)
from gateway.settings import ModelSettings
from gateway.signature import ServingSignature, parse_signature
from gateway.tensors import TensorError, fill_image_tensor, to_array
from gateway.waking import WakeClock

_STATUS_TIMEOUT_S = 2.0
_AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE


# What /readyz says of the model: served, or not now (with the model server sleeping when
# idle, "waking" when it is not there or has not loaded the model).
ModelState = Literal["available", "waking", "unavailable"]
# The failures that mean the model cannot be served now, but may be soon, as its state.
_NOT_NOW: dict[Code, ModelState] = {
    "model_waking": "waking",
    "model_unavailable": "unavailable",
    "model_timeout": "unavailable",
}


@dataclass(frozen=True)
class Readiness:
    model: ModelState
    detail: str  # public: what is served, or why not
    cause: str | None = None  # for the log: the failed call's gRPC status and details


@dataclass(frozen=True)
class Prediction:
    scores: npt.NDArray[np.float64]  # (batch, classes), as the model returned them
    labels: tuple[str, ...]
    model_version: int


def read_prediction(
    response: predict_pb2.PredictResponse,
    signature: ServingSignature,
    default_labels: tuple[str, ...],
    batch_size: int,
) -> Prediction:
    """The scores and labels in a Predict answer; Failure ``model_error`` for anything
    the gateway cannot read or that does not fit the request."""
    try:
        raw_scores = to_array(response.outputs[signature.score_output])
        if raw_scores.dtype.kind not in "fiu":
            raise TensorError(f"scores are {raw_scores.dtype}, not numbers")
        with np.errstate(invalid="ignore"):  # a signalling NaN: refused as not finite below
            scores = raw_scores.astype(np.float64)
        labels = (
            default_labels
            if signature.classes_output is None
            else _labels(to_array(response.outputs[signature.classes_output]))
        )
    except (KeyError, TensorError) as exc:
        raise unusable_answer(f"unreadable model response: {exc}") from None
    expected = (batch_size, len(labels))
    if scores.shape != expected:
        raise unusable_answer(
            f"model returned scores of shape {list(scores.shape)}, expected {list(expected)}"
        )
    if not np.isfinite(scores).all():
        raise unusable_answer("model returned scores that are not finite (NaN or inf)")
    return Prediction(scores, labels, int(response.model_spec.version.value))


def _labels(classes: npt.NDArray[np.generic]) -> tuple[str, ...]:
    """The labels of a ``classes`` output (batch, n): the first row, unique."""
    if classes.ndim != 2 or classes.shape[0] < 1:
        raise TensorError(f"classes output has shape {list(classes.shape)}")
    labels = tuple(str(label) for label in classes[0])
    if len(set(labels)) != len(labels):
        raise TensorError(f"the model's class labels are not unique: {list(labels)}")
    return labels


class ModelClient:
    """One per process; thread-safe."""

    def __init__(self, settings: ModelSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.channel = ProcessChannel(settings.target, settings.lb_policy)
        self._lock = threading.Lock()
        self._signature: ServingSignature | None = None
        self._signature_at = 0.0
        self.wake = WakeClock(settings.wake_estimate_s) if settings.wake_estimate_s else None

    def close(self) -> None:
        self.channel.close()

    def _failed(self, exc: grpc.RpcError, call: str, *, probe: bool = False) -> Failure:
        """A failed call, counted by its gRPC status, as the client's error: with a model
        server that sleeps, ``model_waking`` when it is not there or has not loaded the
        model (on the wake clock for a request, not for a readiness ``probe``)."""
        status = grpc_status(exc)
        self.metrics.model_call_errors.labels(call, status.name).inc()
        if self.wake is None or status not in ABSENT:
            return grpc_error(exc, self.settings.retry_after_s, call)
        if probe:
            return Failure("model_waking", MODEL_ASLEEP, detail=call_detail(exc, call))
        return model_waking(self.wake.failed(), self.settings.retry_after_s, call_detail(exc, call))

    def _succeeded(self) -> None:
        """A call the model server answered: a wake going on is over."""
        if self.wake is not None:
            self.wake.succeeded()

    def _spec(self, *, signature: bool = True) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=self.settings.name)
        if signature:
            spec.signature_name = self.settings.signature_name
        if self.settings.version is not None:
            spec.version.value = self.settings.version
        return spec

    # -- the served signature -----------------------------------------------------------
    def signature(self, *, probe: bool = False) -> ServingSignature:
        """The serving signature, cached for MODEL_METADATA_TTL_S (``probe``: asked by a
        readiness probe, not by a request)."""
        with self._lock:
            cached, fetched_at = self._signature, self._signature_at
        if cached is not None and time.monotonic() - fetched_at < self.settings.metadata_ttl_s:
            return cached
        predict_stub, _ = self.channel.stubs()
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=self._spec(), metadata_field=["signature_def"]
        )
        try:
            response = predict_stub.GetModelMetadata(request, timeout=self.settings.timeout_s)
        except grpc.RpcError as exc:
            raise self._failed(exc, "metadata", probe=probe) from None
        self._succeeded()
        signature = parse_signature(response, self.settings)
        with self._lock:
            self._signature, self._signature_at = signature, time.monotonic()
        return signature

    def invalidate_signature(self) -> None:
        with self._lock:
            self._signature = None

    # -- inference ----------------------------------------------------------------------
    def predict(self, signature: ServingSignature, batch: npt.NDArray[np.generic]) -> Prediction:
        """Scores and labels for ``batch`` (already in ``signature``'s input form)."""
        predict_stub, _ = self.channel.stubs()
        request = predict_pb2.PredictRequest(
            model_spec=self._spec(), output_filter=signature.outputs
        )
        fill_image_tensor(request.inputs[signature.input_name], batch)
        try:
            response = predict_stub.Predict(request, timeout=self.settings.timeout_s)
        except grpc.RpcError as exc:
            error = self._failed(exc, "predict")
            if error.code == "model_error":
                self.invalidate_signature()  # the model may have changed under us
            raise error from None
        self._succeeded()
        try:
            return read_prediction(response, signature, self.settings.class_labels, len(batch))
        except Failure:
            self.invalidate_signature()  # the model may have changed under us
            raise

    # -- readiness ----------------------------------------------------------------------
    def readiness(self) -> Readiness:
        """Whether the model is served now (with what), and if not whether it is waking up
        or unavailable; Failure ``model_error`` or ``model_misconfigured`` when the model
        server answers but its model is not one this gateway can serve."""
        _, model_stub = self.channel.stubs()
        try:
            status = model_stub.GetModelStatus(
                get_model_status_pb2.GetModelStatusRequest(model_spec=self._spec(signature=False)),
                timeout=min(_STATUS_TIMEOUT_S, self.settings.timeout_s),
            )
        except grpc.RpcError as exc:
            return _not_now(self._failed(exc, "status", probe=True))
        available = [v.version for v in status.model_version_status if v.state == _AVAILABLE]
        if not available:
            states = [
                get_model_status_pb2.ModelVersionStatus.State.Name(v.state)
                for v in status.model_version_status
            ]
            return Readiness(
                "unavailable" if self.wake is None else "waking",
                f"model {self.settings.name!r} not available (states {states})",
            )
        self._succeeded()
        try:
            signature = self.signature(probe=True)
        except Failure as exc:
            return _not_now(exc)
        return Readiness(
            "available",
            f"model {self.settings.name!r} versions {available} available: "
            f"{signature.input_dtype} {signature.height}x{signature.width} input, "
            f"{signature.score_output} output",
        )


def _not_now(failure: Failure) -> Readiness:
    """A failure that means the model cannot be served now, as its readiness; any other
    (the model server answers, but not with a model this gateway can serve) raised."""
    state = _NOT_NOW.get(failure.code)
    if state is None:
        raise failure
    return Readiness(state, failure.message, failure.detail)
