"""Flask app factory. Nothing happens at import time: ``create_app()`` builds everything,
and the gRPC channel is opened on first use inside the serving process.

Run with gunicorn: ``gunicorn -c python:gateway.gunicorn_conf 'gateway.app:create_app()'``.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from gateway.classifier import Classifier
from gateway.errors import ApiError
from gateway.fetch import FetchLimits, SafeFetcher
from gateway.imaging import Preprocessor
from gateway.logs import configure_logging, request_id_from
from gateway.metrics import Metrics
from gateway.model_client import ModelClient
from gateway.request_parsing import parse_json_body
from gateway.settings import Settings

UPLOAD_FIELDS = ("image", "file")


def build_classifier(settings: Settings, fetcher: SafeFetcher | None = None) -> Classifier:
    preprocessor = Preprocessor(
        height=settings.image_size[0],
        width=settings.image_size[1],
        resize_filter=settings.resize_filter,
        mode=settings.preprocessing,
        exif_transpose=settings.exif_transpose,
        max_pixels=settings.max_image_pixels,
    )
    fetcher = fetcher or SafeFetcher(
        settings.fetch_policy,
        FetchLimits(
            max_bytes=settings.max_image_bytes,
            connect_timeout_s=settings.connect_timeout_s,
            read_timeout_s=settings.read_timeout_s,
            total_timeout_s=settings.download_timeout_s,
            max_redirects=settings.max_redirects,
            user_agent=settings.user_agent,
        ),
    )
    return Classifier(settings, fetcher, preprocessor, ModelClient(settings), Metrics())


def create_app(settings: Settings | None = None, *, fetcher: SafeFetcher | None = None) -> Flask:
    settings = settings or Settings.from_env()
    classifier = build_classifier(settings, fetcher)
    metrics = classifier.metrics
    log = configure_logging()

    app = Flask("gateway")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["classifier"] = classifier

    @app.before_request
    def _start() -> None:
        g.request_id = request_id_from(request.headers.get("X-Request-ID"))
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(elapsed)
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if endpoint not in ("/healthz", "/metrics"):
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round(elapsed * 1000, 2),
                    "error_code": g.get("error_code"),
                },
            )
        return response

    def _error_response(error: ApiError) -> Response:
        g.error_code = error.code
        metrics.errors.labels(error.code).inc()
        response = jsonify(error.body())
        response.status_code = error.status
        if error.retry_after is not None:
            response.headers["Retry-After"] = str(error.retry_after)
        return response

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        if error.status >= 500:
            log.warning("upstream error", extra={"error_code": error.code, "detail": error.message})
        return _error_response(error)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        status = error.code or 500
        codes = {413: "request_too_large", 404: "not_found", 405: "method_not_allowed"}
        message = error.description or error.name
        if status == 413:
            message = f"request body larger than {settings.max_request_bytes} bytes"
        return _error_response(ApiError(status, codes.get(status, "bad_request"), message))

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return _error_response(ApiError(500, "internal_error", "internal error"))

    @app.post("/predict")
    def predict() -> Any:
        mimetype = request.mimetype
        if mimetype == "application/json" or mimetype.endswith("+json"):
            parsed = parse_json_body(request.get_data(cache=False), settings.max_urls)
            result = classifier.classify_urls(parsed.urls)
            return jsonify(result if parsed.batch else _single(result))
        if mimetype == "multipart/form-data":
            upload = next((request.files[f] for f in UPLOAD_FIELDS if f in request.files), None)
            if upload is None:
                raise ApiError(400, "bad_request", "multipart body needs an 'image' file field")
            return jsonify(_single(classifier.classify_upload(upload.read())))
        if mimetype.startswith("image/"):
            return jsonify(_single(classifier.classify_upload(request.get_data(cache=False))))
        raise ApiError(
            415,
            "unsupported_content_type",
            "send application/json ({'url': ...} or {'urls': [...]}), "
            "multipart/form-data with an 'image' field, or an image/* body",
        )

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Any:
        ready, detail = classifier.model.readiness()
        if not ready:
            raise ApiError(503, "not_ready", detail, retry_after=settings.retry_after_s)
        return jsonify({"status": "ready", "detail": detail})

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.exposition(), mimetype="text/plain; version=0.0.4")

    @app.get("/openapi.json")
    def openapi() -> Any:
        return jsonify(openapi_document())

    return app


def _single(result: dict[str, Any]) -> dict[str, Any]:
    """The response for one image: the prediction's fields at the top level."""
    return {"model": result["model"], **result["predictions"][0]}


def openapi_document() -> dict[str, Any]:
    text = resources.files("gateway").joinpath("openapi.json").read_text()
    document: dict[str, Any] = json.loads(text)
    return document
