from __future__ import annotations

import logging
import os
from collections.abc import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

from gateway.logs import LOGGER_NAME, UNHANDLED_ERROR
from tests.support.fake_model_server import FakeModel, serve
from tests.support.image_host import ImageHost


class _InternalErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == UNHANDLED_ERROR:
            self.records.append(record)


@pytest.fixture(autouse=True)
def _no_unexpected_internal_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test fails if the gateway (in this process) answered internal_error, unless
    the test is marked ``allow_internal_error``: a 500 is a bug, wherever a test finds it.
    (Gateways under gunicorn are checked by ``tests.support.gateway_process``.)"""
    handler = _InternalErrors()
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)
    if handler.records and request.node.get_closest_marker("allow_internal_error") is None:
        first = handler.records[0]
        detail = logging.Formatter().formatException(first.exc_info) if first.exc_info else ""
        pytest.fail(f"the gateway answered internal_error {len(handler.records)}x:\n{detail}")


@pytest.fixture(scope="session")
def image_host() -> Iterator[ImageHost]:
    host = ImageHost().start()
    yield host
    host.stop()


@pytest.fixture
def fake_model() -> Iterator[tuple[FakeModel, int]]:
    model = FakeModel()
    server, port = serve(model)
    yield model, port
    server.stop(0)
