"""The HTTP API: /predict, probes, metrics and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from gateway.failures import Failure, bad_request
from gateway.openapi import openapi_document
from gateway.postprocess import answer
from gateway.request_parsing import parse_json_body
from gateway.runtime import current_gateway

UPLOAD_FIELDS = ("image", "file")
# What needs an API key when the gateway has them (gateway.api_keys); the rest is probes,
# documentation and the page that asks for the key.
KEYED_ENDPOINTS = frozenset({"api.predict"})

api = Blueprint("api", __name__)


@api.post("/predict")
def predict() -> Any:
    gateway = current_gateway()
    classifier = gateway.classifier
    mimetype = request.mimetype
    if mimetype == "application/json" or mimetype.endswith("+json"):
        parsed = parse_json_body(request.get_data(cache=False), gateway.settings.max_urls)
        return jsonify(answer(classifier.classify_urls(parsed.urls), batch=parsed.batch))
    if mimetype == "multipart/form-data":
        upload = next((request.files[f] for f in UPLOAD_FIELDS if f in request.files), None)
        if upload is None:
            raise bad_request("multipart body needs an 'image' file field")
        return jsonify(answer(classifier.classify_upload(upload.read()), batch=False))
    if mimetype.startswith("image/"):
        upload_body = request.get_data(cache=False)
        return jsonify(answer(classifier.classify_upload(upload_body), batch=False))
    raise Failure(
        "unsupported_content_type",
        "send application/json ({'url': ...} or {'urls': [...]}), "
        "multipart/form-data with an 'image' field, or an image/* body",
    )


@api.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@api.get("/readyz")
def readyz() -> Any:
    """Ready whenever this gateway can serve, whatever the model server's state, which the
    body gives: a load balancer sends nothing to a target that is not ready, so a readiness
    tied to the model server would turn a model that sleeps, restarts or loads into
    connection errors at the load balancer, instead of the gateway's JSON 503 with
    Retry-After (``model_waking``, ``model_unavailable``). Not ready (503) only when the
    model server answers with a model this gateway cannot serve (``model_misconfigured``,
    ``model_error``): a broken deployment must not become ready (its rollout stops at the
    first new pod, and the old ones serve on)."""
    gateway = current_gateway()
    try:
        state = gateway.classifier.model.readiness()
    except Failure as exc:
        raise Failure(
            "not_ready",
            exc.message,
            retry_after=gateway.settings.model.retry_after_s,
            detail=exc.detail,
        ) from None
    g.error_detail = state.cause  # the request's log line: what the body leaves out
    return jsonify({"status": "ready", "model": state.model, "detail": state.detail})


@api.get("/metrics")
def prometheus() -> Response:
    return Response(current_gateway().metrics.exposition(), mimetype="text/plain; version=0.0.4")


@api.get("/openapi.json")
def openapi() -> Any:
    return jsonify(openapi_document())
