from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from gateway.app import create_app
from gateway.fetch import SafeFetcher
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
