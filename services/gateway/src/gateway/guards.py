"""What a request passes before any view, in this order: the API key, for the endpoints
that need one (the keys: ``gateway.api_keys``), then its body, read once and bounded
(``gateway.request_body``). So no body is read for a caller without a valid key."""

from __future__ import annotations

import re
from collections.abc import Callable

from flask import Flask, g, request
from werkzeug.datastructures import Headers

from gateway.api_keys import KeyFile
from gateway.failures import Failure
from gateway.request_body import buffer_body

_BEARER = re.compile(r"^bearer +(\S+)$", re.IGNORECASE)
# Metric labels of refused requests: no key id can be either (ids start with [a-z0-9]).
NO_KEY = "(none)"
WRONG_KEY = "(invalid)"
UNAUTHORIZED = "a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'"


def presented_key(headers: Headers) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or else ``X-API-Key``."""
    bearer = _BEARER.match(headers.get("Authorization", "").strip())
    if bearer:
        return bearer.group(1)
    key = headers.get("X-API-Key", "").strip()
    return key or None


def register_guards(
    app: Flask,
    keys: Callable[[], KeyFile | None],
    endpoints: frozenset[str],
    max_body_bytes: int,
) -> None:
    """With a key file, a request to one of ``endpoints`` without a valid key fails as
    ``unauthorized`` (one message, whatever was wrong), and ``g.api_key_id`` names the key
    of one that passes; then every request's body is buffered (``buffer_body``)."""

    @app.before_request
    def _check_key() -> None:
        key_file = keys()
        if key_file is None or request.endpoint not in endpoints:
            return
        key = presented_key(request.headers)
        key_id = key_file.digests().match(key) if key else None
        g.api_key_id = key_id or (NO_KEY if key is None else WRONG_KEY)
        if key_id is None:
            raise Failure("unauthorized", UNAUTHORIZED)

    @app.before_request
    def _read_body() -> None:
        buffer_body(request.environ, request.content_length, max_body_bytes)
