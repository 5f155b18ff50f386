"""The request body, read once, whatever its framing, before any view parses it.

Werkzeug caps a body at ``MAX_CONTENT_LENGTH`` by cutting it short when it has no
``Content-Length`` (chunked transfer encoding): a valid image followed by junk was then
classified. And a malformed chunked framing raised the WSGI server's own parse error out
of ``request.get_data()`` as a 500. Here the body is read to its end or one byte past the
cap: more than the cap is 413 whatever the framing, a framing that cannot be read is 400,
and the views get the bytes back as an ordinary ``Content-Length`` body.
"""

from __future__ import annotations

import io

from flask import Flask, request
from werkzeug.exceptions import HTTPException

from gateway.errors import ApiError, bad_request

_CHUNK = 64 * 1024


def read_bounded(stream: io.RawIOBase | io.BufferedIOBase, max_bytes: int) -> bytes:
    """All of ``stream``, or 413 as soon as it is longer than ``max_bytes``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(_CHUNK, max_bytes + 1 - size))
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_bytes:
            raise ApiError("request_too_large", f"request body larger than {max_bytes} bytes")
        chunks.append(chunk)


def register_body_reader(app: Flask, max_bytes: int) -> None:
    @app.before_request
    def _buffer_body() -> None:
        environ = request.environ
        length = request.content_length
        if length is None and "wsgi.input_terminated" not in environ:
            return  # no body (the server could not tell where one would end)
        if length is not None and length > max_bytes:
            raise ApiError("request_too_large", f"request body larger than {max_bytes} bytes")
        try:
            body = read_bounded(environ["wsgi.input"], max_bytes if length is None else length)
        except (ApiError, HTTPException):
            raise
        except Exception as exc:  # noqa: BLE001  (the WSGI server's own framing errors)
            raise bad_request(f"malformed request body: {exc}") from None
        if length is not None and len(body) < length:
            raise bad_request(f"request body ended after {len(body)} of {length} bytes")
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("wsgi.input_terminated", None)
        environ.pop("HTTP_TRANSFER_ENCODING", None)
