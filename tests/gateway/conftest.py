from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from gateway.app import create_app
from gateway.fetch import SafeFetcher
from gateway.logs import LOGGER_NAME
from gateway.runtime import EXTENSION, Gateway
from gateway.settings import Settings
from tests.support.fake_model_server import FakeModel

ClientFactory = Callable[..., FlaskClient]


def current(app: Flask) -> Gateway:
    gateway: Gateway = app.extensions[EXTENSION]
    return gateway


# Loopback is private: tests reach the local image host only through the allowlist.
TEST_ENV = {
    "FETCH_ALLOW": "127.0.0.0/8,::1",
    "CONNECT_TIMEOUT_S": "2",
    "READ_TIMEOUT_S": "1",
    "DOWNLOAD_TIMEOUT_S": "2",
    "MODEL_TIMEOUT_S": "2",
}


@pytest.fixture
def make_client(fake_model: tuple[FakeModel, int]) -> Iterator[ClientFactory]:
    apps = []

    def make(fetcher: SafeFetcher | None = None, **env: str) -> FlaskClient:
        _, port = fake_model
        values = {**TEST_ENV, "TF_SERVING_HOST": f"127.0.0.1:{port}", **env}
        app = create_app(Settings.from_env(values), fetcher=fetcher)
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        current(app).classifier.model.close()


@pytest.fixture
def client(make_client: ClientFactory) -> FlaskClient:
    return make_client()


class GatewayLog(logging.Handler):
    """Every record the gateway's logger emits during a test."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def details(self) -> str:
        """Every detail the gateway logged, one per line."""
        return "\n".join(
            str(getattr(r, name))
            for r in self.records
            for name in ("detail", "error_detail")
            if getattr(r, name, None)
        )

    def messages(self, level: int = logging.INFO) -> list[str]:
        """The messages logged at ``level`` or above, in order."""
        return [r.getMessage() for r in self.records if r.levelno >= level]


@pytest.fixture
def gateway_log() -> Iterator[GatewayLog]:
    handler = GatewayLog()
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
