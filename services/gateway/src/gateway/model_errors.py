"""A failed call to the model server, as the error the client sees."""

from __future__ import annotations

import grpc

from gateway.failures import Failure

# The server is there but cannot serve now: worth a retry after a pause.
_TRANSIENT = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.NOT_FOUND,  # model (version) not loaded yet
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # TF Serving's batch queue is full
    grpc.StatusCode.CANCELLED,
)


def grpc_error(exc: grpc.RpcError, retry_after: int, what: str) -> Failure:
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Failure(
            "model_timeout",
            f"{what}: the model server did not answer in time",
            retry_after=retry_after,
        )
    if code in _TRANSIENT:
        return Failure(
            "model_unavailable",
            f"{what}: model server unavailable ({code.name}: {detail})",
            retry_after=retry_after,
        )
    return Failure("model_error", f"{what}: model server error ({code.name}: {detail})")
