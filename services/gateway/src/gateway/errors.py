"""The gateway's error type: every failure a client can see, with its HTTP status."""

from __future__ import annotations


class ApiError(Exception):
    """An error reported to the client as ``{"error": {"code", "message"}}``."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}

    def prefixed(self, where: str) -> ApiError:
        """The same error, its message prefixed with which input it concerns."""
        return ApiError(
            self.status, self.code, f"{where}: {self.message}", retry_after=self.retry_after
        )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)
