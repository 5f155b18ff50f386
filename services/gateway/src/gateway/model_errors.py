"""A failed call to the model server, as the error the client sees.

The client sees fixed words per code: a gRPC status's details are the model server's and
gRPC's own text (``connections to all backends failing; last error: UNKNOWN:
ipv4:10.0.3.7:8500: Failed to connect to remote host``), which name addresses inside the
cluster. They go in the failure's ``detail``, for the log (and the gRPC status to the
``gateway_model_call_errors_total`` metric).
"""

from __future__ import annotations

import grpc

from gateway.failures import Failure

MODEL_TIMEOUT = "the model server did not answer in time"
MODEL_UNAVAILABLE = "the model server is not available now; retry shortly"
MODEL_FAILED = "the model server failed on this request"
MODEL_ANSWER_UNUSABLE = "the model server's answer could not be used"

# The server is there but cannot serve now: worth a retry after a pause.
_TRANSIENT = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.NOT_FOUND,  # model (version) not loaded yet
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # TF Serving's batch queue is full
    grpc.StatusCode.CANCELLED,
)


def grpc_status(exc: grpc.RpcError) -> grpc.StatusCode:
    return exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN


def grpc_error(exc: grpc.RpcError, retry_after: int, what: str) -> Failure:
    """The failure of call ``what``: its public message one of the fixed ones above."""
    code = grpc_status(exc)
    detail = f"{what}: {code.name}: {exc.details() if isinstance(exc, grpc.Call) else exc}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Failure("model_timeout", MODEL_TIMEOUT, retry_after=retry_after, detail=detail)
    if code in _TRANSIENT:
        return Failure(
            "model_unavailable", MODEL_UNAVAILABLE, retry_after=retry_after, detail=detail
        )
    return Failure("model_error", MODEL_FAILED, detail=detail)


def unusable_answer(detail: str) -> Failure:
    """``model_error`` for an answer the gateway cannot read or that does not fit."""
    return Failure("model_error", MODEL_ANSWER_UNUSABLE, detail=detail)
