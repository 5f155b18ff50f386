"""The nginx proxy in front of gunicorn: it keeps slow clients away from gunicorn's
threads, and its own refusals are the gateway's JSON errors (its ports and body limit
agree with the contract: tests/test_one_source.py)."""

from __future__ import annotations

import io
import json
import re
import socket
import statistics
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import requests
from flask.testing import FlaskClient
from PIL import Image

from gateway.errors import ERRORS
from gateway.settings import Settings
from tests.gateway.conftest import TEST_ENV
from tests.support.fake_model_server import FakeModel
from tests.support.gateway_process import gunicorn_gateway
from tests.support.image_host import FIXTURES
from tests.support.proxy import CONFIG, NGINX, nginx_proxy, nginx_servers

needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (Debian's nginx-light; CI installs it)"
)
SLOW_CLIENTS = 64


def test_proxy_errors_are_registry_codes() -> None:
    text = CONFIG.read_text()
    answers = re.findall(r"return (\d{3}) '(\{.*?\})';", text)
    codes = {}
    for status, body in answers:
        if '"error"' in body:
            [code] = re.findall(r'"code": "(\w+)"', body)
            codes[code] = int(status)
    assert set(codes) == {
        "bad_request", "method_not_allowed", "request_too_large", "request_head_too_large",
        "unsupported_protocol", "server_unavailable", "internal_error", "not_found",
        "https_required",
    }  # fmt: skip
    for code, status in codes.items():
        assert ERRORS[code].status == status, code


@pytest.fixture
def gateway(fake_model: tuple[FakeModel, int]) -> Iterator[str]:
    _, port = fake_model
    env = {**TEST_ENV, "TF_SERVING_HOST": f"127.0.0.1:{port}"}
    with gunicorn_gateway(env, workers=2, threads=8) as (base, _):
        yield base


def _latencies(base: str, rounds: int = 10) -> dict[str, float]:
    image = (FIXTURES / "hat.jpg").read_bytes()
    timings: dict[str, list[float]] = {"healthz": [], "predict": []}
    for _ in range(rounds):
        start = time.perf_counter()
        assert requests.get(base + "/healthz", timeout=10).status_code == 200
        timings["healthz"].append(time.perf_counter() - start)
        start = time.perf_counter()
        response = requests.post(
            base + "/predict", data=image, headers={"Content-Type": "image/jpeg"}, timeout=10
        )
        assert response.status_code == 200, response.text
        timings["predict"].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in timings.items()}


class SlowClients:
    """Connections that send a request's headers one byte at a time, for as long as they
    are held open (slowloris)."""

    def __init__(self, base: str, count: int) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.count = count
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._trickle, daemon=True) for _ in range(count)]

    def _trickle(self) -> None:
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nX-Slow: "
        try:
            with socket.create_connection(self.address, timeout=5) as sock:
                for byte in head + b"a" * 10_000:
                    if self.stop.wait(0.5):
                        return
                    sock.sendall(bytes([byte]))
        except OSError:
            return  # the server hung up on a slow client: as it may

    def __enter__(self) -> SlowClients:
        for thread in self.threads:
            thread.start()
        time.sleep(1.5)  # all connected and trickling
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)


@needs_nginx
def test_slow_clients_do_not_slow_the_gateway_behind_the_proxy(gateway: str) -> None:
    upstream = int(gateway.rsplit(":", 1)[1])
    with nginx_proxy(upstream) as proxied:
        normal = _latencies(proxied)
        with SlowClients(proxied, SLOW_CLIENTS):
            under_attack = _latencies(proxied)
    for endpoint, baseline in normal.items():
        assert under_attack[endpoint] <= max(3 * baseline, baseline + 0.1), (
            endpoint, normal, under_attack,
        )  # fmt: skip


def test_without_the_proxy_slow_clients_stall_gunicorn(gateway: str) -> None:
    """The control: the same slow clients straight at gunicorn tie up its threads, which is
    why the proxy is there (and why the test above would notice it missing). Four slow
    clients per thread: the kernel spreads connections unevenly over the two workers."""
    with SlowClients(gateway, SLOW_CLIENTS):  # 4 x (2 workers x 8 threads)
        start = time.perf_counter()
        try:
            requests.get(gateway + "/healthz", timeout=3)
            elapsed = time.perf_counter() - start
        except requests.Timeout:
            elapsed = float("inf")
    assert elapsed > 1.0


def _raw(base: str, data: bytes, may_close: bool = False) -> tuple[int, bytes, dict[str, str]]:
    """Send raw bytes; the status, body and headers of the answer ((0, b"", {}) when the
    server closes without one and ``may_close``)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    if not reply and may_close:
        return 0, b"", {}
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), body, headers


@needs_nginx
def test_bodies_larger_than_the_proxys_buffer_reach_the_gateway(gateway: str) -> None:
    """Over client_body_buffer_size nginx spills the body to a temp file first (its worker,
    not root, writes there), then passes it on whole."""
    noise = np.random.default_rng(0).integers(0, 256, (1100, 1100, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(noise).save(out, "PNG")
    assert 2**20 < len(out.getvalue()) < Settings().fetch.max_bytes
    upstream = int(gateway.rsplit(":", 1)[1])
    with nginx_proxy(upstream) as proxied:
        response = requests.post(
            proxied + "/predict",
            data=out.getvalue(),
            headers={"Content-Type": "image/png"},
            timeout=30,
        )
    assert response.status_code == 200, response.text


@needs_nginx
def test_the_website_passes_the_proxy_with_its_headers(gateway: str) -> None:
    """The page's policy and the assets' caching reach the browser through nginx."""
    upstream = int(gateway.rsplit(":", 1)[1])
    with nginx_proxy(upstream) as proxied:
        page = requests.get(proxied + "/", timeout=10)
        assert page.status_code == 200 and page.headers["Content-Security-Policy"]
        again = requests.get(proxied + "/", headers={"If-None-Match": page.headers["ETag"]})
        assert again.status_code == 304
        [script] = re.findall(r'src="(/static/site\.js\?v=\w+)"', page.text)
        asset = requests.get(proxied + script, timeout=10)
        assert asset.status_code == 200
        assert asset.headers["Cache-Control"] == "public, max-age=31536000, immutable"


@needs_nginx
def test_every_route_answers_a_wrong_method_in_json_through_the_proxy(
    gateway: str, client: FlaskClient
) -> None:
    """nginx refuses TRACE itself, and names what the path takes as the gateway would (its
    map of the gateway's routes); any other wrong method reaches the gateway, whose 405 and
    Allow header pass through. /metrics is not on this port at all."""
    upstream = int(gateway.rsplit(":", 1)[1])
    with nginx_proxy(upstream) as proxied:
        for rule in client.application.url_map.iter_rules():
            path = re.sub(r"<(?:\w+:)?\w+>", "site.css", rule.rule)
            allowed = ", ".join(sorted(rule.methods or ()))
            wrong = "GET" if "GET" not in (rule.methods or ()) else "DELETE"
            for method in ("TRACE", wrong):
                request = f"{method} {path}?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                status, body, headers = _raw(proxied, request.encode())
                assert headers["content-type"] == "application/json", (method, path)
                if path == "/metrics" and method != "TRACE":
                    assert status == 404, body
                    continue
                assert status == 405, (method, path, body)
                assert headers["allow"] == allowed, (method, path)
                error = json.loads(body)["error"]
                assert error["code"] == "method_not_allowed"
                assert error["message"].endswith(f"use {allowed}"), (method, path)


@needs_nginx
def test_metrics_only_on_the_metrics_port(gateway: str) -> None:
    """The load balancer's port never shows /metrics; Prometheus's port shows only it."""
    from serving_contract.ports import GATEWAY_PORT, METRICS_PORT

    upstream = int(gateway.rsplit(":", 1)[1])
    assert requests.get(gateway + "/metrics", timeout=5).status_code == 200  # gunicorn has it
    with nginx_servers(upstream) as servers:
        public = requests.get(servers[GATEWAY_PORT] + "/metrics", timeout=5)
        assert public.status_code == 404
        assert public.json()["error"]["code"] == "not_found"
        inside = requests.get(servers[METRICS_PORT] + "/metrics", timeout=5)
        assert inside.status_code == 200 and "gateway_requests_total" in inside.text
        for path in ("/predict", "/", "/readyz"):
            other = requests.get(servers[METRICS_PORT] + path, timeout=5)
            assert other.status_code == 404, path


@needs_nginx
def test_plain_http_goes_to_https_or_is_refused(gateway: str) -> None:
    """The load balancer's plain-HTTP port when TLS ends there: browsers are redirected to
    the same address over HTTPS; API calls are refused, not silently resent."""
    from serving_contract.ports import REDIRECT_PORT

    upstream = int(gateway.rsplit(":", 1)[1])
    with nginx_servers(upstream) as servers:
        base = servers[REDIRECT_PORT]
        page = requests.get(
            base + "/?q=1", headers={"Host": "classify.example.com"}, allow_redirects=False
        )
        assert page.status_code == 308
        assert page.headers["Location"] == "https://classify.example.com/?q=1"
        call = requests.post(base + "/predict", json={"url": "x"}, headers={"X-API-Key": "k"})
        assert call.status_code == ERRORS["https_required"].status
        assert call.json()["error"]["code"] == "https_required"
        status, body, _ = _raw(base, b"GET / HTTP/1.0\r\n\r\n", may_close=True)  # no Host
        assert status == 400 and b'"bad_request"' in body


@needs_nginx
def test_the_proxys_own_refusals_are_json_errors(gateway: str) -> None:
    upstream = int(gateway.rsplit(":", 1)[1])
    with nginx_proxy(upstream, client_body_timeout="1s") as proxied:
        too_big = b"x" * (Settings().max_request_bytes + 1)
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nConnection: close\r\n"
        cases = {
            "request_too_large": head + b"Content-Length: %d\r\n\r\n" % len(too_big) + too_big,
            "bad_request": head + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            "request_head_too_large": b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            "method_not_allowed": b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n",
            "unsupported_protocol": head + b"Transfer-Encoding: gzip\r\n\r\nabc",
        }
        header = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n"
        garbage = b"NOT HTTP AT ALL\r\n\r\n"
        raw_utf8 = "GET /healthz?q=bücher HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        for code, request in [
            *cases.items(),
            ("request_head_too_large", header),
            ("bad_request", garbage),
            ("bad_request", raw_utf8),  # gunicorn would answer its own HTML 400
            ("bad_request", b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n"),
        ]:
            status, body, headers = _raw(proxied, request)
            assert headers["content-type"] == "application/json", code
            assert json.loads(body)["error"]["code"] == code
            assert status == ERRORS[code].status
        # a body that stops coming: the connection is closed, gunicorn never sees it
        started = time.monotonic()
        status, body, _ = _raw(proxied, head + b"Content-Length: 100\r\n\r\nonly part", True)
        assert (status, body) == (0, b"") and time.monotonic() - started < 5
    # gunicorn gone: the proxy says so, with a Retry-After
    with nginx_proxy(upstream_port=1) as orphan:
        response = requests.get(orphan + "/healthz", timeout=10)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "server_unavailable"
        assert response.headers["Retry-After"] == "5"
