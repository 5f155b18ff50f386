"""A model server that sleeps when idle (MODEL_WAKE_ESTIMATE_S): while it is not up, the
gateway answers model_waking with how far along the wake is, stays ready, counts the images
asked for (what wakes the model server), and measures the wake for the next one. Over
loopback gRPC, with the stand-in model server started on a port where nothing listened;
the wake clock is driven by hand rather than by waiting minutes."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from gateway.app import create_app
from gateway.model_errors import MODEL_ASLEEP, MODEL_TIMEOUT, MODEL_UNAVAILABLE, WAKE_RETRY_MAX_S
from gateway.settings import Settings
from gateway.waking import SAME_WAKE_S, WakeClock
from tests.gateway.conftest import TEST_ENV, ClientFactory, GatewayLog, current
from tests.support.fake_model_server import FakeModel, serve
from tests.support.gateway_process import free_port
from tests.support.image_host import FIXTURES, ImageHost

IMAGE = (FIXTURES / "hat.jpg").read_bytes()
ESTIMATE_S = 300


class _Clock:
    """The wake clock's time, set by the test."""

    def __init__(self) -> None:
        self.at = 0.0

    def __call__(self) -> float:
        return self.at


@pytest.fixture
def asleep() -> Iterator[tuple[FlaskClient, int, _Clock]]:
    """A gateway whose model server sleeps: the port it calls has no listener yet."""
    port = free_port()
    env = {
        **TEST_ENV,
        "TF_SERVING_HOST": f"127.0.0.1:{port}",
        "MODEL_WAKE_ESTIMATE_S": str(ESTIMATE_S),
    }
    app = create_app(Settings.from_env(env))
    wake = current(app).classifier.model.wake
    assert wake is not None
    clock = _Clock()
    wake.now = clock
    yield app.test_client(), port, clock
    current(app).classifier.model.close()


def _upload(client: FlaskClient) -> TestResponse:
    return client.post("/predict", data=IMAGE, content_type="image/jpeg")


def _waking(response: TestResponse, estimate_s: int, elapsed_s: int, minutes: str) -> str:
    """The answer is model_waking with this progress and these words; its Retry-After."""
    assert response.status_code == 503, response.json
    assert response.json == {
        "error": {
            "code": "model_waking",
            "message": f"the model is waking up (about {minutes}); retry shortly",
            "wake": {"estimate_s": estimate_s, "elapsed_s": elapsed_s},
        }
    }
    return str(response.headers["Retry-After"])


def test_a_sleeping_model_server_wakes_and_its_wake_is_measured(
    asleep: tuple[FlaskClient, int, _Clock], image_host: ImageHost, gateway_log: GatewayLog
) -> None:
    client, port, clock = asleep

    # Probes find the model server asleep without starting a wake.
    clock.at = 500.0
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json == {"status": "ready", "model": "waking", "detail": MODEL_ASLEEP}

    # A request starts the wake; Retry-After is what the estimate leaves, 5 s to 30 s.
    clock.at = 1000.0
    assert _waking(_upload(client), ESTIMATE_S, 0, "5 minutes") == str(WAKE_RETRY_MAX_S)
    clock.at = 1100.0
    urls = [image_host.url("/images/hat.jpg"), image_host.url("/images/pants.jpg")]
    waking = client.post("/predict", json={"urls": urls})
    assert _waking(waking, ESTIMATE_S, 100, "4 minutes") == "30"
    clock.at = 1280.0
    assert _waking(_upload(client), ESTIMATE_S, 280, "1 minute") == "20"
    clock.at = 1400.4  # longer than estimated: still about a minute, at RETRY_AFTER_S
    assert _waking(_upload(client), ESTIMATE_S, 400, "1 minute") == "5"
    assert client.get("/readyz").json["model"] == "waking"

    # Every image asked for was counted: what the autoscaler wakes the model server on.
    metrics = client.get("/metrics").text
    assert 'gateway_images_total{source="upload"} 3.0' in metrics
    assert 'gateway_images_total{source="url"} 2.0' in metrics
    assert 'gateway_errors_total{code="model_waking"} 4.0' in metrics
    assert 'gateway_model_call_errors_total{call="metadata",grpc_status="UNAVAILABLE"}' in metrics

    # The model server comes up: the next request that reaches it ends the wake.
    clock.at = 1430.0
    server, _ = serve(FakeModel(), port=port)
    try:
        deadline = time.monotonic() + 10
        while (answer := _upload(client)).status_code != 200:
            assert answer.json["error"]["code"] == "model_waking"
            assert time.monotonic() < deadline, "the gateway did not reach the model server"
            time.sleep(0.1)
        assert client.get("/readyz").json["model"] == "available"
    finally:
        server.stop(None)
    assert gateway_log.messages().count("model woke in 430 s") == 1

    # The next wake, in this process, is estimated with the one it measured.
    clock.at = 20_000.0
    deadline = time.monotonic() + 10
    while (answer := _upload(client)).status_code == 200:
        assert time.monotonic() < deadline, "the model server did not stop"
        time.sleep(0.1)
    assert _waking(answer, 430, 0, "8 minutes") == "30"


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        (grpc.StatusCode.UNAVAILABLE, 503, "model_waking"),
        (grpc.StatusCode.NOT_FOUND, 503, "model_waking"),  # the model not loaded yet
        # from a model server that is up: what they always were
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 503, "model_unavailable"),
        (grpc.StatusCode.CANCELLED, 503, "model_unavailable"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504, "model_timeout"),
    ],
)
def test_only_a_missing_model_server_or_model_is_waking(
    make_client: ClientFactory,
    fake_model: tuple[FakeModel, int],
    code: grpc.StatusCode,
    status: int,
    error: str,
) -> None:
    model, _ = fake_model
    model.fail_with = code
    response = _upload(make_client(MODEL_WAKE_ESTIMATE_S=str(ESTIMATE_S)))
    assert response.status_code == status
    assert response.json["error"]["code"] == error
    if error == "model_waking":
        assert response.json["error"]["wake"] == {"estimate_s": ESTIMATE_S, "elapsed_s": 0}
    else:
        assert response.json == {
            "error": {
                "code": error,
                "message": MODEL_TIMEOUT if status == 504 else MODEL_UNAVAILABLE,
            }
        }
    assert response.headers["Retry-After"] == ("30" if error == "model_waking" else "5")


def test_the_wake_clock(gateway_log: GatewayLog) -> None:
    """A wake goes on while failures come at most max(estimate, SAME_WAKE_S) apart, and a
    success at most SAME_WAKE_S after the last one measures it for the next wake."""
    assert SAME_WAKE_S > WAKE_RETRY_MAX_S  # a client that retries as told stays in its wake
    clock = _Clock()
    wake = WakeClock(ESTIMATE_S, now=clock)

    def failed(at: float) -> tuple[float, float]:
        clock.at = at
        seen = wake.failed()
        return seen.estimate_s, seen.elapsed_s

    def succeeded(at: float) -> None:
        clock.at = at
        wake.succeeded()

    assert [failed(at) for at in (0, 200, 500)] == [(300, 0), (300, 200), (300, 500)]
    assert failed(801) == (300, 0)  # quiet for longer than a wake: a new one
    succeeded(801 + SAME_WAKE_S + 1)  # no request waited for it: the wake ends, unmeasured
    assert failed(1000) == (300, 0)
    succeeded(1003)  # a restart of three seconds, measured...
    # ...does not split the next wake, whose retries come farther apart than that
    assert [failed(at) for at in (5000, 5030, 5090)] == [(3, 0), (3, 30), (3, 90)]
    succeeded(5100)
    assert failed(9000) == (100, 0)
    assert gateway_log.messages() == ["model woke in 3 s", "model woke in 100 s"]
