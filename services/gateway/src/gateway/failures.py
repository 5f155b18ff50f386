"""What went wrong, in the gateway's own terms: the error the code that fetches, decodes,
reads the body and calls the model raises, named by one of the registry's codes.

No HTTP here: how a code is answered (its status, its words for people) is the registry's
business (``gateway.errors``), the one place that maps a failure to a response. ``Code``
lists the registry's codes so that mypy refuses a code the registry does not have; a test
checks the two name the same codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

Code = Literal[
    "bad_request",
    "invalid_url",
    "url_not_allowed",
    "unauthorized",
    "https_required",
    "not_found",
    "method_not_allowed",
    "request_too_large",
    "image_too_large",
    "request_head_too_large",
    "unsupported_media_type",
    "unsupported_content_type",
    "undecodable_image",
    "internal_error",
    "unsupported_protocol",
    "download_failed",
    "too_many_redirects",
    "model_error",
    "model_misconfigured",
    "model_unavailable",
    "model_waking",
    "not_ready",
    "server_unavailable",
    "decoder_busy",
    "download_timeout",
    "model_timeout",
]


class Failure(Exception):
    """A request the gateway cannot serve: the registry's ``code``, a ``message`` for the
    caller, when retrying later may work ``retry_after`` seconds, ``extra`` fields the
    error object carries beside code and message for programs (public, like the message),
    and a ``detail`` for the gateway's log only.

    The message is public (the load balancer shows it to anyone): the gateway's own words,
    which may name what the caller sent (their URL's host, where their JSON breaks) but
    never what lies behind the gateway. What would (a gRPC status's details, with the model
    server's addresses; a library's or the OS's error; an address in the cluster's DNS)
    goes in ``detail``, which the error handler logs with the request and the exception's
    own text carries."""

    def __init__(
        self,
        code: Code,
        message: str,
        *,
        retry_after: int | None = None,
        detail: str | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message if detail is None else f"{message} ({detail})")
        self.code: Code = code
        self.message = message
        self.retry_after = retry_after
        self.detail = detail
        self.extra: Mapping[str, object] = extra or {}

    def prefixed(self, where: str) -> Failure:
        """The same failure, its message prefixed with which input it concerns."""
        return Failure(
            self.code,
            f"{where}: {self.message}",
            retry_after=self.retry_after,
            detail=self.detail,
            extra=self.extra,
        )


def bad_request(message: str) -> Failure:
    return Failure("bad_request", message)
