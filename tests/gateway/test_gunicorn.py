"""The gateway as it runs in the container: gunicorn, threaded workers, real HTTP."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests

from tests.gateway.conftest import TEST_ENV
from tests.support.fake_model_server import FakeModel
from tests.support.gateway_process import gunicorn_gateway
from tests.support.image_host import ImageHost


def test_gunicorn_serves_predictions_across_workers(
    fake_model: tuple[FakeModel, int], image_host: ImageHost
) -> None:
    model, port = fake_model
    env = {**TEST_ENV, "TF_SERVING_HOST": f"127.0.0.1:{port}"}
    with gunicorn_gateway(env, workers=2, threads=4) as (base, _):
        assert requests.get(base + "/readyz", timeout=5).json()["model"] == "available"
        # every worker's image series exists at 0 before any request (rate() needs it)
        fresh = requests.get(base + "/metrics", timeout=5).text
        assert 'gateway_images_total{source="url"} 0.0' in fresh
        url = image_host.url("/images/shorts.jpg")

        def call(_: int) -> int:
            return requests.post(base + "/predict", json={"url": url}, timeout=10).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(call, range(40)))
        assert statuses == [200] * 40
        assert model.predict_calls == 40
        bad = requests.post(
            base + "/predict", data=b"{", headers={"Content-Type": "application/json"}, timeout=5
        )
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
        # /metrics aggregates every worker's counters
        text = requests.get(base + "/metrics", timeout=5).text
        assert 'gateway_requests_total{endpoint="/predict",status="200"} 40.0' in text
        assert 'gateway_images_total{source="url"} 40.0' in text


def test_gunicorn_config_keeps_large_buffers_in_heap() -> None:
    from gateway.gunicorn_conf import keep_large_buffers_in_heap, post_fork

    assert keep_large_buffers_in_heap()  # glibc accepted both mallopt settings
    post_fork(None, None)  # the hook gunicorn calls in every worker
