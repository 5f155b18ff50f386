"""Per-request bookkeeping: a request id on every log line and response, request metrics,
and one JSON log line per request (with an error's code and the detail its public message
leaves out)."""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from gateway.logs import request_id_from
from gateway.metrics import Metrics

QUIET_ENDPOINTS = ("/healthz", "/metrics")  # probed every few seconds: no log line


def register_request_hooks(app: Flask, metrics: Metrics, log: logging.Logger) -> None:
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
        if (key_id := g.get("api_key_id")) is not None:
            metrics.key_requests.labels(key_id, str(response.status_code)).inc()
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if endpoint not in QUIET_ENDPOINTS:
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round(elapsed * 1000, 2),
                    "error_code": g.get("error_code"),
                    "error_detail": g.get("error_detail"),
                    "api_key_id": g.get("api_key_id"),
                },
            )
        return response
