"""A failed call to the model server, as the error the client sees.

The client sees fixed words per code: a gRPC status's details are the model server's and
gRPC's own text (``connections to all backends failing; last error: UNKNOWN:
ipv4:10.0.3.7:8500: Failed to connect to remote host``), which name addresses inside the
cluster. They go in the failure's ``detail``, for the log (and the gRPC status to the
``gateway_model_call_errors_total`` metric).

A model server that sleeps when idle (``MODEL_WAKE_ESTIMATE_S``) is not there, or has not
loaded its model, for minutes after a request wakes it: then a request gets
``model_waking``, with how far along the wake is (``gateway.waking``), rather than
``model_unavailable``.
"""

from __future__ import annotations

import math

import grpc

from gateway.failures import Failure
from gateway.waking import Wake

MODEL_TIMEOUT = "the model server did not answer in time"
MODEL_UNAVAILABLE = "the model server is not available now; retry shortly"
MODEL_FAILED = "the model server failed on this request"
MODEL_ANSWER_UNUSABLE = "the model server's answer could not be used"
# What /readyz says of a model server that sleeps and is not up (no request is waiting for
# it, as far as a probe knows, so it may be asleep as well as waking).
MODEL_ASLEEP = "the model server is asleep or waking up; a request wakes it"

# The server is there but cannot serve now: worth a retry after a pause.
_TRANSIENT = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.NOT_FOUND,  # model (version) not loaded yet
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # TF Serving's batch queue is full
    grpc.StatusCode.CANCELLED,
)
# No model server, or its model not loaded yet: all a request finds of a model server that
# sleeps when idle, until it is up. The other transient codes come from a model server that
# is there (its batch queue full, a call cancelled or too slow) and stay what they are.
ABSENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND})
# The longest Retry-After while the model wakes: a client checks back at least this often.
WAKE_RETRY_MAX_S = 30


def grpc_status(exc: grpc.RpcError) -> grpc.StatusCode:
    return exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN


def call_detail(exc: grpc.RpcError, what: str) -> str:
    """What the log says of a failed call ``what``: its gRPC status and details."""
    text = exc.details() if isinstance(exc, grpc.Call) else exc
    return f"{what}: {grpc_status(exc).name}: {text}"


def grpc_error(exc: grpc.RpcError, retry_after: int, what: str) -> Failure:
    """The failure of call ``what``: its public message one of the fixed ones above."""
    code = grpc_status(exc)
    detail = call_detail(exc, what)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Failure("model_timeout", MODEL_TIMEOUT, retry_after=retry_after, detail=detail)
    if code in _TRANSIENT:
        return Failure(
            "model_unavailable", MODEL_UNAVAILABLE, retry_after=retry_after, detail=detail
        )
    return Failure("model_error", MODEL_FAILED, detail=detail)


def model_waking(wake: Wake, retry_after: int, detail: str) -> Failure:
    """``model_waking`` for a request that found the model server asleep or waking up:
    about how many minutes are left (at least one, also when the wake takes longer than
    estimated), a Retry-After of what is left (at least ``retry_after``, at most
    ``WAKE_RETRY_MAX_S``), and the wake's progress for programs."""
    remaining_s = math.ceil(wake.remaining_s)
    minutes = max(1, math.ceil(remaining_s / 60))
    return Failure(
        "model_waking",
        f"the model is waking up (about {minutes} minute{'' if minutes == 1 else 's'}); "
        "retry shortly",
        retry_after=max(retry_after, min(WAKE_RETRY_MAX_S, remaining_s)),
        detail=detail,
        extra={
            "wake": {
                "estimate_s": math.ceil(wake.estimate_s),
                "elapsed_s": math.floor(wake.elapsed_s),
            }
        },
    )


def unusable_answer(detail: str) -> Failure:
    """``model_error`` for an answer the gateway cannot read or that does not fit."""
    return Failure("model_error", MODEL_ANSWER_UNUSABLE, detail=detail)
