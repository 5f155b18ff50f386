from __future__ import annotations

import os
from collections.abc import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

from tests.support.fake_model_server import FakeModel, serve
from tests.support.image_host import ImageHost


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
