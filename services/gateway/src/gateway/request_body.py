"""The request body, read once, whatever its framing, before any view parses it.

Werkzeug caps a body at ``MAX_CONTENT_LENGTH`` by cutting it short when it has no
``Content-Length`` (chunked transfer encoding): a valid image followed by junk was then
classified. And a malformed chunked framing raised the WSGI server's own parse error out
of ``request.get_data()`` as a 500. Here the body is read to its end or one byte past the
cap: more than the cap is ``request_too_large`` whatever the framing, a framing that cannot
be read is ``bad_request``, and the views get the bytes back as an ordinary
``Content-Length`` body. It works on the WSGI environ alone; ``gateway.guards`` runs it
before every view.
"""

from __future__ import annotations

import io
from collections.abc import MutableMapping
from typing import Any

from gateway.failures import Failure
from serving_contract.gateway_env import mib

_CHUNK = 64 * 1024


def read_bounded(stream: io.RawIOBase | io.BufferedIOBase, max_bytes: int) -> bytes:
    """All of ``stream``, or ``request_too_large`` as soon as it is longer than
    ``max_bytes``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(_CHUNK, max_bytes + 1 - size))
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise too_large(max_bytes)
        chunks.append(chunk)


def buffer_body(environ: MutableMapping[str, Any], length: int | None, max_bytes: int) -> None:
    """Replace the request's ``wsgi.input`` with its whole body, at most ``max_bytes``;
    ``length`` is its Content-Length (None: chunked, or no body)."""
    if length is None and "wsgi.input_terminated" not in environ:
        return  # no body (the server could not tell where one would end)
    if length is not None and length > max_bytes:
        raise too_large(max_bytes)
    try:
        body = read_bounded(environ["wsgi.input"], max_bytes if length is None else length)
    except Failure:
        raise
    except Exception as exc:  # noqa: BLE001  (the WSGI server's own framing errors)
        raise Failure("bad_request", "malformed request body framing", detail=repr(exc)) from None
    if length is not None and len(body) < length:
        raise Failure(
            "bad_request",
            "the request body ended before its Content-Length",
            detail=f"{len(body)} of {length} bytes",
        )
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("wsgi.input_terminated", None)
    environ.pop("HTTP_TRANSFER_ENCODING", None)


def too_large(max_bytes: int) -> Failure:
    """``request_too_large`` for a body over ``max_bytes`` (nginx's page says the same)."""
    return Failure("request_too_large", f"request body larger than {mib(max_bytes)}")
