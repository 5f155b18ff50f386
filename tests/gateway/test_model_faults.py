"""The model server dies with requests in flight and comes back: the gateway (real gunicorn)
answers 503/504 JSON with Retry-After meanwhile, in words that name nothing behind it, never
hangs past its deadline, loses no worker, stays ready (saying the model is unavailable), and
serves again within seconds of the model's return, without a restart."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests

from tests.gateway.conftest import TEST_ENV
from tests.support.fake_model_server import FakeModel, serve
from tests.support.gateway_process import free_port, gunicorn_gateway
from tests.support.image_host import FIXTURES

IMAGE = (FIXTURES / "hat.jpg").read_bytes()
MODEL_TIMEOUT_S = 2.0


def _predict(base: str) -> tuple[int, dict[str, object], dict[str, str], float]:
    started = time.monotonic()
    response = requests.post(
        base + "/predict", data=IMAGE, headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    return response.status_code, response.json(), dict(response.headers), time.monotonic() - started


def _workers(master: int) -> set[int]:
    return {child.pid for child in psutil.Process(master).children()}


def _says_nothing_internal(body: dict[str, object], target: str) -> None:
    """What the load balancer shows anyone: no address, port, gRPC status or gRPC's text."""
    text = json.dumps(body)
    port = target.rsplit(":", 1)[1]
    assert not re.search(r"\d+\.\d+\.\d+\.\d+|ipv[46]|grpc", text, re.IGNORECASE), text
    assert "UNAVAILABLE" not in text and port not in text and target not in text, text


@pytest.mark.timeout(120)
def test_model_server_outage_and_recovery(tmp_path: Path) -> None:
    port = free_port()
    model = FakeModel(delay_s=1.0)  # every Predict is in flight for a second
    server, _ = serve(model, port=port)
    env = {
        **TEST_ENV,
        "TF_SERVING_HOST": f"127.0.0.1:{port}",
        "MODEL_TIMEOUT_S": str(MODEL_TIMEOUT_S),
    }
    target = env["TF_SERVING_HOST"]
    log = tmp_path / "gateway.log"
    with gunicorn_gateway(env, workers=2, threads=8, log_path=log) as (base, master):
        assert requests.get(base + "/readyz", timeout=5).json()["model"] == "available"
        assert _predict(base)[0] == 200
        workers = _workers(master.pid)

        # 1. Kill the model server while 8 requests are in flight.
        with ThreadPoolExecutor(8) as pool:
            in_flight = [pool.submit(_predict, base) for _ in range(8)]
            time.sleep(0.4)
            server.stop(grace=None)
            results = [f.result() for f in in_flight]
        for status, body, headers, elapsed in results:
            assert status in (503, 504), body
            assert body["error"]["code"] in ("model_unavailable", "model_timeout")
            assert headers["Retry-After"] == "5"
            assert elapsed < MODEL_TIMEOUT_S + 1.5  # bounded by the deadline, no hang
            _says_nothing_internal(body, target)

        # 2. While it is down: new requests fail fast, /readyz says so (and stays ready, so a
        # load balancer keeps sending the gateway requests for it to answer), /healthz too.
        for _ in range(5):
            status, body, headers, elapsed = _predict(base)
            assert status == 503 and body["error"]["code"] == "model_unavailable"
            assert headers["Retry-After"] == "5"
            assert elapsed < MODEL_TIMEOUT_S + 1.5
            _says_nothing_internal(body, target)
            assert (
                body["error"]["message"] == "the model server is not available now; retry shortly"
            )
        ready = requests.get(base + "/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["model"] == "unavailable"
        _says_nothing_internal(ready.json(), target)
        # the log has what the answers left out: which call, the gRPC status, the address
        logged = [json.loads(line) for line in log.read_text().splitlines() if line[:1] == "{"]
        details = [r.get("detail") or "" for r in logged if r["message"] == "upstream error"]
        assert any("predict: UNAVAILABLE: " in d and target in d for d in details), details
        probes = [r.get("error_detail") or "" for r in logged if r.get("path") == "/readyz"]
        assert any("status: UNAVAILABLE: " in d and target in d for d in probes), probes
        assert requests.get(base + "/healthz", timeout=5).status_code == 200

        # 3. The model server returns on the same address.
        model.delay_s = 0.0
        server, _ = serve(model, port=port)
        back = time.monotonic()
        while _predict(base)[0] != 200:
            assert time.monotonic() - back < 5, "gateway did not recover within 5 s"
            time.sleep(0.1)
        recovery = time.monotonic() - back
        assert requests.get(base + "/readyz", timeout=5).json()["model"] == "available"
        assert all(_predict(base)[0] == 200 for _ in range(10))
        assert _workers(master.pid) == workers, "a worker crashed or was restarted"
        print(f"recovered {recovery:.2f} s after the model server came back")
    server.stop(None)
