"""Every failure a client can see: one registry of error codes, and the Flask handlers
that turn any exception into ``{"error": {"code", "message"}}`` (with a ``Failure``'s
``extra`` fields beside the two).

The registry is the single source of each code's HTTP status, its meaning for developers
and its plain words for people: the handlers, the OpenAPI document (``gateway.openapi``),
the README's table (``python -m gateway.errors``) and the website's messages
(``gateway.site``) all come from it. The code that does the work raises
``gateway.failures.Failure`` with a code and knows nothing of HTTP; the status is decided
here, when the handler answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from gateway.failures import Code, Failure
from gateway.logs import UNHANDLED_ERROR
from gateway.metrics import Metrics
from gateway.request_body import too_large


@dataclass(frozen=True)
class ErrorKind:
    status: int
    meaning: str  # for developers: the README's table and the OpenAPI document
    plain: str  # for people: what the website says


ERRORS: dict[Code, ErrorKind] = {
    "bad_request": ErrorKind(
        400,
        "malformed body or request framing, or a missing field",
        "The request was malformed. Reload the page and try again.",
    ),
    "invalid_url": ErrorKind(
        400,
        "URL not http(s), malformed, with credentials, or longer than 2048 characters",
        "That is not a web link this service can use: give a full http:// or https:// link.",
    ),
    "url_not_allowed": ErrorKind(
        400,
        "URL resolves to a private, loopback, link-local or metadata address",
        "That link points to a private network address, which this service does not visit.",
    ),
    "unauthorized": ErrorKind(
        401,
        "no API key, or not a valid one (with API keys on: API_KEYS_FILE)",
        "This service needs a valid API key: enter yours in the API key field.",
    ),
    "https_required": ErrorKind(
        403,
        "a request other than GET/HEAD to the plain-HTTP port of a stack that serves HTTPS",
        "This service takes requests over a secure connection only: use its https:// address.",
    ),
    "not_found": ErrorKind(404, "no such path", "That page does not exist."),
    "method_not_allowed": ErrorKind(
        405,
        "the path exists but not for this method (with Allow)",
        "That page cannot be used this way.",
    ),
    "request_too_large": ErrorKind(
        413, "request body over MAX_IMAGE_BYTES (+64 KiB)", "That file is too large to send."
    ),
    "image_too_large": ErrorKind(
        413,
        "download over MAX_IMAGE_BYTES, more pixels than MAX_IMAGE_PIXELS, over the "
        "decoding memory budget, or a JPEG of more scans than encoders write",
        "That image is too large to classify: try a smaller one.",
    ),
    "request_head_too_large": ErrorKind(
        431,
        "request line or headers over the proxy's limit",
        "The request was too long. Try a shorter link.",
    ),
    "unsupported_media_type": ErrorKind(
        415,
        "the bytes are not a JPEG, PNG, WebP or GIF image",
        "That is not an image: give a JPEG, PNG, WebP or GIF picture.",
    ),
    "unsupported_content_type": ErrorKind(
        415,
        "request Content-Type is not JSON, multipart/form-data or image/*",
        "The request was not understood. Reload the page and try again.",
    ),
    "undecodable_image": ErrorKind(
        422,
        "looks like an image but cannot be decoded",
        "That image looks damaged: it could not be read.",
    ),
    "internal_error": ErrorKind(
        500,
        "a bug (logged with a traceback); the worker keeps serving",
        "Something went wrong on our side. Please try again.",
    ),
    "unsupported_protocol": ErrorKind(
        501,
        "a Transfer-Encoding or HTTP version the proxy does not implement",
        "Your browser sent a request this service does not support.",
    ),
    "download_failed": ErrorKind(
        502,
        "the image host failed, refused or answered nonsense",
        "The site that link points to did not give us the image.",
    ),
    "too_many_redirects": ErrorKind(
        502,
        "the image URL redirected more than MAX_REDIRECTS times",
        "That link redirects too many times.",
    ),
    "model_error": ErrorKind(
        502,
        "the model server answered with an error or a malformed reply",
        "The classifier failed on this image. Please try again.",
    ),
    "model_misconfigured": ErrorKind(
        502,
        "the served model does not fit the gateway's settings (labels, size, signature)",
        "The classifier is set up wrongly: the people who run it have to fix it.",
    ),
    "model_unavailable": ErrorKind(
        503,
        "model server down, model not loaded, or overloaded (with Retry-After)",
        "The classifier is busy or starting. Try again in a moment.",
    ),
    "model_waking": ErrorKind(
        503,
        "the model server sleeps when idle (MODEL_WAKE_ESTIMATE_S) and is not up yet: waking "
        "takes minutes (with Retry-After, and `wake`: how far along)",
        "The classifier was asleep after a quiet spell and is waking up, which takes a few "
        "minutes.",
    ),
    "not_ready": ErrorKind(
        503,
        "/readyz: the model server answers but this gateway cannot serve its model "
        "(model_misconfigured, model_error; with Retry-After)",
        "The classifier is set up wrongly or failing: the people who run it have to fix it.",
    ),
    "server_unavailable": ErrorKind(
        503,
        "the gateway's workers did not answer the proxy in front (with Retry-After)",
        "The service is busy. Try again in a moment.",
    ),
    "decoder_busy": ErrorKind(
        503,
        "the worker's memory for decoding is taken by other large images (with Retry-After)",
        "The service is busy with other large images. Try again in a moment.",
    ),
    "download_timeout": ErrorKind(
        504,
        "the image download passed its deadline",
        "The site that link points to took too long to send the image.",
    ),
    "model_timeout": ErrorKind(
        504,
        "the model call passed its deadline (with Retry-After)",
        "The classifier took too long. Try again in a moment.",
    ),
}
NO_SUCH_PATH = "no such path"  # nginx's 404 says the same


def register_error_handlers(
    app: Flask, metrics: Metrics, log: logging.Logger, max_request_bytes: int
) -> None:
    """Every exception a view raises becomes a JSON error with the registry's status; the
    message is the public part of a ``Failure``, its detail is logged with the request."""

    def respond(error: Failure) -> Response:
        status = ERRORS[error.code].status
        g.error_code = error.code
        g.error_detail = error.detail
        metrics.errors.labels(error.code).inc()
        response = jsonify({"error": {"code": error.code, "message": error.message, **error.extra}})
        response.status_code = status
        if error.retry_after is not None:
            response.headers["Retry-After"] = str(error.retry_after)
        if status == 401:  # RFC 9110: a 401 names the scheme it wants
            response.headers["WWW-Authenticate"] = 'Bearer realm="clothing-serving"'
        return response

    @app.errorhandler(Failure)
    def _failure(error: Failure) -> Response:
        if ERRORS[error.code].status >= 500:
            # the public message, and what it leaves out
            log.warning("upstream error", extra={"error_code": error.code, "detail": str(error)})
        return respond(error)

    @app.errorhandler(MethodNotAllowed)
    def _wrong_method(error: MethodNotAllowed) -> Response:
        allowed = ", ".join(sorted(error.valid_methods or ()))
        response = respond(
            Failure("method_not_allowed", f"{request.method} is not allowed here; use {allowed}")
        )
        response.headers["Allow"] = allowed  # RFC 9110: a 405 says what the path takes
        return response

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Response:
        if error.code == 413:
            return respond(too_large(max_request_bytes))
        if error.code == 404:
            return respond(Failure("not_found", NO_SUCH_PATH))
        # Any other is a request Werkzeug could not make sense of.
        return respond(Failure("bad_request", error.description or error.name))

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception(UNHANDLED_ERROR)
        return respond(Failure("internal_error", "internal error"))


def markdown_table() -> str:
    """The README's error table, from the registry."""
    lines = ["| status | code | when |", "| --- | --- | --- |"]
    for code, kind in sorted(ERRORS.items(), key=lambda item: (item[1].status, item[0])):
        lines.append(f"| {kind.status} | `{code}` | {kind.meaning} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
