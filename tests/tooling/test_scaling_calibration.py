"""bench.scaling_calibration against the real gateway under gunicorn (test model server,
image host) and a stand-in of Prometheus's HTTP API that scrapes the gateway's real /metrics
and answers the calibration's queries from those samples, as Prometheus would: the image
rate is what the gateway really counted."""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.loadgen import LoadResult
from bench.scaling_calibration import (
    REPLICAS_QUERY,
    Step,
    calibrate,
    measure,
    recommended,
    report,
)
from infra.demand import KNEE, Demand, demand_query
from infra.kube import GATEWAY, TF_SERVING
from infra.serving import NAMESPACE
from serving_contract.metrics import IMAGES_COUNTER
from tests.gateway.conftest import TEST_ENV
from tests.support.fake_model_server import FakeModel
from tests.support.gateway_process import gunicorn_gateway
from tests.support.image_host import ImageHost

LOOKBACK_S = 300.0  # how far back Prometheus looks for an instant vector's latest sample
SCRAPE_S = 0.1  # Prometheus scrapes every 15 s; steps here last seconds

Labels = frozenset[tuple[str, str]]
Vector = list[tuple[Labels, float]]


class Unsupported(Exception):
    """PromQL this stand-in does not evaluate (real Prometheus would)."""


def extrapolated_rate(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """Prometheus's ``rate`` of a counter's ``samples`` within (start, end]: the increase
    (resets added back), extrapolated to the window's edges as promql/functions.go does."""
    increase = samples[-1][1] - samples[0][1]
    for (_, before), (_, after) in itertools.pairwise(samples):
        if after < before:
            increase += before
    first_t, first_v = samples[0]
    last_t = samples[-1][0]
    sampled = last_t - first_t
    average = sampled / (len(samples) - 1)
    to_start, to_end = first_t - start, end - last_t
    if to_start >= average * 1.1:
        to_start = average / 2
    if increase > 0 and first_v >= 0:
        to_start = min(to_start, sampled * first_v / increase)  # a counter is never below 0
    if to_end >= average * 1.1:
        to_end = average / 2
    return increase * (sampled + to_start + to_end) / sampled / (end - start)


class _Prometheus(BaseHTTPRequestHandler):
    """``GET /api/v1/query?query=...&time=...`` as Prometheus answers it."""

    server: PrometheusStandIn

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != "/api/v1/query":
            self.send_error(404)
            return
        query = parse_qs(parts.query)
        expr = query["query"][0]
        try:
            node = promql_parser.parse(expr)  # real Prometheus refuses what does not parse
            vector = self.server.evaluate(node, float(query["time"][0]))
        except (ValueError, Unsupported) as exc:
            self._answer(400, {"status": "error", "errorType": "bad_data", "error": str(exc)})
            return
        self.server.queries.append(expr)
        at = float(query["time"][0])
        result = [
            {"metric": dict(labels), "value": [at, _number(value)]} for labels, value in vector
        ]
        self._answer(200, {"status": "success", "data": {"resultType": "vector", "result": result}})

    def _answer(self, status: int, answer: dict[str, object]) -> None:
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _number(value: float) -> str:
    """As Prometheus writes a sample: the shortest decimal, "1" rather than "1.0"."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


class PrometheusStandIn(ThreadingHTTPServer):
    """Series as Prometheus stores them, from scraping the gateway (with the ``namespace``
    target label the PodMonitor's scrape adds) and from kube-state-metrics (the replicas
    of TF Serving's and the gateway's Deployments), and an evaluator for the PromQL the
    calibration runs: ``sum``, ``rate`` and selectors with ``=`` matchers."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Prometheus)
        self.queries: list[str] = []
        self.series: dict[Labels, list[tuple[float, float]]] = {}
        self.replicas = {TF_SERVING.name: 1, GATEWAY.name: 2}
        self._lock = threading.Lock()

    def add(self, labels: dict[str, str], at: float, value: float) -> None:
        with self._lock:
            self.series.setdefault(frozenset(labels.items()), []).append((at, value))

    @contextmanager
    def scraping(self, gateway: str) -> Iterator[None]:
        """Scrapes ``gateway``'s /metrics and kube-state-metrics every ``SCRAPE_S``."""
        stop = threading.Event()

        def scrape() -> None:
            while not stop.wait(SCRAPE_S):
                at = time.time()  # Prometheus stamps a scrape's samples with its start
                with urllib.request.urlopen(f"{gateway}/metrics", timeout=10) as response:
                    text = response.read().decode()
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        labels = {**sample.labels, "namespace": NAMESPACE}
                        self.add({"__name__": sample.name, **labels}, at, sample.value)
                for deployment, replicas in self.replicas.items():
                    self.add(
                        {
                            "__name__": "kube_deployment_status_replicas_available",
                            "namespace": NAMESPACE,
                            "deployment": deployment,
                        },
                        at,
                        replicas,
                    )

        thread = threading.Thread(target=scrape, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def select(
        self, selector: promql_parser.VectorSelector
    ) -> list[tuple[Labels, list[tuple[float, float]]]]:
        if selector.offset is not None or selector.at is not None or selector.matchers.or_matchers:
            raise Unsupported(str(selector))
        wanted = {"__name__": selector.name} if selector.name else {}
        for matcher in selector.matchers.matchers:
            if matcher.op != promql_parser.MatchOp.Equal:
                raise Unsupported(str(selector))
            wanted[matcher.name] = matcher.value
        with self._lock:
            return [
                (labels, list(samples))
                for labels, samples in self.series.items()
                if all((name, value) in labels for name, value in wanted.items())
            ]

    def evaluate(self, node: object, at: float) -> Vector:
        if isinstance(node, promql_parser.AggregateExpr):
            if str(node.op) != "sum" or node.modifier is not None or node.param is not None:
                raise Unsupported(str(node))
            vector = self.evaluate(node.expr, at)
            # the sum of no series is no series, not 0
            return [(frozenset(), sum(value for _, value in vector))] if vector else []
        if isinstance(node, promql_parser.Call):
            (matrix,) = node.args
            if node.func.name != "rate" or not isinstance(matrix, promql_parser.MatrixSelector):
                raise Unsupported(str(node))
            start = at - matrix.range.total_seconds()
            rates = []
            for labels, samples in self.select(matrix.vector_selector):
                inside = [(t, v) for t, v in samples if start < t <= at]
                if len(inside) >= 2:  # a rate needs two samples
                    without_name = frozenset(kv for kv in labels if kv[0] != "__name__")
                    rates.append((without_name, extrapolated_rate(inside, start, at)))
            return rates
        if isinstance(node, promql_parser.VectorSelector):
            latest = []
            for labels, samples in self.select(node):
                recent = [v for t, v in samples if at - LOOKBACK_S < t <= at]
                if recent:
                    latest.append((labels, recent[-1]))
            return latest
        raise Unsupported(str(node))


@pytest.fixture
def prometheus() -> Iterator[tuple[str, PrometheusStandIn]]:
    server = PrometheusStandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()


def test_the_replicas_query_names_tf_servings_deployment() -> None:
    assert REPLICAS_QUERY == (
        "sum(kube_deployment_status_replicas_available"
        '{namespace="clothing",deployment="tf-serving"})'
    )


def test_calibration_reads_the_image_rate_the_gateway_counted_per_replica(
    fake_model: tuple[FakeModel, int],
    image_host: ImageHost,
    prometheus: tuple[str, PrometheusStandIn],
) -> None:
    model, port = fake_model
    model.record = False
    url, stand_in = prometheus
    env = {**TEST_ENV, "TF_SERVING_HOST": f"127.0.0.1:{port}"}
    with gunicorn_gateway(env, workers=1, threads=8) as (base, _), stand_in.scraping(base):
        steps = calibrate(
            base, url, [1, 16], seconds=2, images=[image_host.url("/images/hat.jpg")], headers={}
        )
    assert [s.concurrency for s in steps] == [1, 16]
    assert all(s.load.count > 0 and s.load.statuses[200] == s.load.count for s in steps)
    assert [s.replicas for s in steps] == [1, 1]  # TF Serving's, not the gateway's 2 too
    # each exactly the query KEDA runs (with the step as the window) and the replicas'
    assert stand_in.queries == [demand_query(NAMESPACE, "2s"), REPLICAS_QUERY] * 2
    # more load, more images asked; one image per request, so about the client's rate
    assert 0 < steps[0].per_replica < steps[1].per_replica
    for step in steps:
        assert step.per_replica == pytest.approx(step.load.rps, rel=0.25)
    result = recommended(steps, 2.5)
    assert result.ceiling == steps[1].per_replica


def test_an_empty_answer_names_what_is_not_scraped(
    prometheus: tuple[str, PrometheusStandIn],
) -> None:
    """What Prometheus answers for a series it does not have: success, no samples."""
    url, stand_in = prometheus
    now = time.time()
    with pytest.raises(RuntimeError, match="is the gateway's /metrics scraped"):
        measure(url, 60, now)
    # the gateway's images, but of another namespace: not the serving one's
    images = {"__name__": f"{IMAGES_COUNTER}_total", "source": "url"}
    for at, count in ((now - 30, 10), (now - 10, 50)):
        stand_in.add({**images, "namespace": "elsewhere"}, at, count)
    with pytest.raises(RuntimeError, match="is the gateway's /metrics scraped"):
        measure(url, 60, now)
    for at, count in ((now - 30, 10), (now - 10, 50)):
        stand_in.add({**images, "namespace": NAMESPACE}, at, count)
    with pytest.raises(RuntimeError, match="is kube-state-metrics scraped"):
        measure(url, 60, now)
    replicas = {"__name__": "kube_deployment_status_replicas_available", "namespace": NAMESPACE}
    stand_in.add({**replicas, "deployment": TF_SERVING.name}, now - 5, 1)
    images_per_second, ready = measure(url, 60, now)
    assert ready == 1
    # 40 images in the 20 s sampled, extrapolated as Prometheus does: back 5 s (where the
    # counter would have been 0, before the 10 s to the window's start) and on 10 s to its
    # end (less than 1.1 of the 20 s between samples), then spread over the 60 s window
    assert images_per_second == pytest.approx(40 * (5 + 20 + 10) / 20 / 60)


def _step(
    per_replica: float, p99_ms: float, status: int = 200, replicas: float = 1, concurrency: int = 1
) -> Step:
    load = LoadResult(latencies_s=[p99_ms / 1000] * 100, elapsed_s=1.0)
    load.statuses[200] = 90
    load.statuses[status] += 10
    return Step(concurrency, load, per_replica * replicas, replicas)


def test_per_replica_divides_by_the_ready_replicas_and_never_by_zero() -> None:
    assert _step(120, 10, replicas=2).per_replica == 120
    assert Step(1, LoadResult(), 50, 0).per_replica == 50


def test_the_recommendation_puts_the_held_rate_at_the_knee_under_the_ceiling() -> None:
    # a wrong API key: fast, refused, and nothing to do with the GPU
    refused = _step(500, 5, status=401, concurrency=64)
    below_knee = [_step(40, 200), _step(80, 900, concurrency=2), _step(120, 4000, concurrency=4)]
    result = recommended([*below_knee, refused], 2.5)
    assert (result.ceiling, result.held, result.broke_at) == (120, 80, 4)
    assert result.images_per_second == 80 / KNEE == 100
    # held above the knee: the ceiling measured caps it
    at_knee = [_step(40, 200), _step(100, 900, concurrency=2), _step(120, 3000, concurrency=4)]
    assert recommended(at_knee, 2.5).images_per_second == 120
    # a 5xx breaks a step however fast it was
    assert recommended([_step(40, 200), _step(60, 100, status=503, concurrency=2)], 2.5) == (
        recommended([_step(40, 200), _step(60, 4000, concurrency=2)], 2.5)
    )
    text = report(result, 2.5, "http://prometheus")
    assert "broke the objective from concurrency 4" in text
    target = Demand(100, None, "http://prometheus", NAMESPACE).target
    assert text.endswith(
        f"tfServing.imagesPerSecond: 100.0  (KEDA then holds each replica at {target:g} images/s)"
    )
    with pytest.raises(ValueError, match="no step held the objective"):
        recommended([_step(40, 3000), refused], 2.5)


def test_load_that_never_broke_the_objective_gives_a_lower_bound() -> None:
    result = recommended([_step(40, 200), _step(70, 400, concurrency=2)], 2.5)
    assert (result.ceiling, result.held, result.broke_at) == (70, 70, None)
    assert result.images_per_second == 70
    assert "never broke the objective: the ceiling was not reached" in report(result, 2.5, "")
    assert "raise --steps" in report(result, 2.5, "")
