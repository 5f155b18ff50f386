"""bench.scaling_calibration against the real gateway under gunicorn (test model server,
image host) and a stand-in of Prometheus's HTTP API whose GPU utilisation follows the load
the model server sees, as a GPU's does."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import promql_parser
import pytest

from bench.loadgen import LoadResult
from bench.scaling_calibration import Step, calibrate, gpu_utilisation, recommended_target
from tests.gateway.conftest import TEST_ENV
from tests.support.fake_model_server import FakeModel
from tests.support.gateway_process import gunicorn_gateway
from tests.support.image_host import ImageHost

# Far above what this machine's gateway can send, so utilisation tracks the load and never
# saturates in the test.
PREDICTS_PER_SECOND_AT_FULL_GPU = 5000.0


class _Prometheus(BaseHTTPRequestHandler):
    """``GET /api/v1/query`` as Prometheus answers it: a vector, here one sample, the
    utilisation the model server's Predict rate over the queried window implies."""

    server: PrometheusStandIn

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if parts.path != "/api/v1/query":
            self.send_error(404)
            return
        expr = query["query"][0]
        promql_parser.parse(expr)  # real Prometheus refuses what does not parse
        self.server.queries.append(expr)
        at = float(query["time"][0])
        result = (
            []
            if self.server.empty
            else [{"metric": {}, "value": [at, str(self.server.utilisation(at))]}]
        )
        body = json.dumps(
            {"status": "success", "data": {"resultType": "vector", "result": result}}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class PrometheusStandIn(ThreadingHTTPServer):
    def __init__(self, model: FakeModel) -> None:
        super().__init__(("127.0.0.1", 0), _Prometheus)
        self.model = model
        self.queries: list[str] = []
        self.empty = False  # answer as for a series Prometheus does not have
        self.marks: list[tuple[float, int]] = [(time.time(), 0)]

    def utilisation(self, at: float) -> float:
        """Predicts since the last query, as a share of what saturates the GPU (%)."""
        then, calls_then = self.marks[-1]
        calls = self.model.predict_calls
        self.marks.append((at, calls))
        rate = (calls - calls_then) / max(at - then, 1e-6)
        return min(100.0, 100 * rate / PREDICTS_PER_SECOND_AT_FULL_GPU)


@pytest.fixture
def prometheus(fake_model: tuple[FakeModel, int]) -> Iterator[tuple[str, PrometheusStandIn]]:
    server = PrometheusStandIn(fake_model[0])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()


def test_calibration_reads_the_utilisation_each_load_step_causes(
    fake_model: tuple[FakeModel, int],
    image_host: ImageHost,
    prometheus: tuple[str, PrometheusStandIn],
) -> None:
    model, port = fake_model
    model.record = False
    url, stand_in = prometheus
    env = {**TEST_ENV, "TF_SERVING_HOST": f"127.0.0.1:{port}"}
    with gunicorn_gateway(env, workers=1, threads=8) as (base, _):
        steps = calibrate(
            base, url, [1, 16], seconds=2, images=[image_host.url("/images/hat.jpg")], headers={}
        )
    assert [s.concurrency for s in steps] == [1, 16]
    assert all(s.load.count > 0 and s.load.errors == 0 for s in steps)
    # more load, more of the GPU
    assert 0 < steps[0].gpu_percent < steps[1].gpu_percent
    assert all('DCGM_FI_DEV_GPU_UTIL{namespace="clothing"}' in q for q in stand_in.queries)
    utilisation, target = recommended_target(steps, 2.5, 0.05, 8)
    assert utilisation == steps[1].gpu_percent
    assert target == max(20, int(utilisation / 1.4))


def test_an_empty_answer_means_the_gpu_is_not_scraped(
    prometheus: tuple[str, PrometheusStandIn],
) -> None:
    """What Prometheus answers for a series it does not have: success, no samples."""
    url, stand_in = prometheus
    stand_in.empty = True
    with pytest.raises(RuntimeError, match="is DCGM scraped"):
        gpu_utilisation(url, 60, time.time())


def _step(gpu: float, p99_ms: float, errors: int = 0) -> Step:
    load = LoadResult(latencies_s=[p99_ms / 1000] * 100, elapsed_s=1.0)
    load.statuses[200] = 100 - errors
    load.statuses[503] = errors
    return Step(1, load, gpu)


def test_the_target_is_the_utilisation_that_held_less_the_growth() -> None:
    steps = [_step(30, 200), _step(70, 900), _step(85, 1900), _step(95, 4000), _step(99, 800, 3)]
    refused = _step(97, 50)
    refused.load.statuses.clear()
    refused.load.statuses[401] = 100  # a wrong API key: fast, and nothing to do with the GPU
    steps.append(refused)
    assert recommended_target(steps, 2.5, 0.05, 8) == (85, 60)  # 85 / 1.4 = 60.7
    assert recommended_target(steps, 2.5, 0.0, 8) == (85, 85)
    assert recommended_target(steps, 0.5, 0.5, 8)[1] == 20  # never below 20
    with pytest.raises(ValueError, match="no step held the objective"):
        recommended_target([_step(40, 3000)], 2.5, 0.05, 8)
