"""Structured JSON logs; every record made while serving a request carries its id."""

from __future__ import annotations

import logging
import re
import sys
import uuid
import warnings

from flask import g, has_request_context
from pythonjsonlogger.json import JsonFormatter

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
LOGGER_NAME = "gateway"
UNHANDLED_ERROR = "unhandled error"  # the message of every internal_error (a bug)


def request_id_from(header: str | None) -> str:
    """The caller's X-Request-ID when it is sane, else a fresh one."""
    if header and _REQUEST_ID_RE.match(header):
        return header
    return uuid.uuid4().hex


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context() and "request_id" in g:
            record.request_id = g.request_id
        return True


def configure_logging(level: str = "INFO") -> logging.Logger:
    """JSON lines on stderr for the ``gateway`` logger (idempotent)."""
    # Pillow warns on stderr about the images clients send (malformed metadata, sizes past
    # its own bomb threshold): a line per request, at a rate a client chooses. The gateway
    # decodes or refuses the image all the same (its pixel and memory limits come first),
    # and logs the refusal.
    warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
    logger = logging.getLogger(LOGGER_NAME)
    if not any(getattr(h, "_gateway_json", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
        handler.addFilter(_RequestIdFilter())
        handler._gateway_json = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)
    return logger
