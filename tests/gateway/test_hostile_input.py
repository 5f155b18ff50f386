"""Hostile input, generated: whatever an image host answers, whatever URL, image bytes, EXIF
or request framing a client sends, the gateway answers a JSON error with its registry's
status (never internal_error), in bounded time, and keeps serving.

Property-based (hypothesis), not one test per payload. The autouse guard in
tests/conftest.py fails any test here that makes the gateway answer internal_error, and
``gunicorn_gateway`` does the same for the gateway under gunicorn.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import socket
import time
from collections.abc import Iterator
from fractions import Fraction

import psutil
import pytest
import requests
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, TiffImagePlugin

from gateway.app import create_app
from gateway.errors import ERRORS
from gateway.fetch import SafeFetcher
from gateway.netguard import AccessPolicy
from gateway.settings import Settings
from tests.gateway.conftest import TEST_ENV, current
from tests.support.fake_model_server import FakeModel
from tests.support.gateway_process import gunicorn_gateway
from tests.support.image_host import FIXTURES, ImageHost
from tests.support.raw_host import RawHost

FUZZ = settings(
    max_examples=150,
    deadline=None,  # time is asserted per request below, with the gateway's own bounds
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TIME_BOUND_S = 6.0  # the test settings' download deadline (2 s) and model deadline, with room


def _seed(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.open(FIXTURES / "hat.jpg").resize((48, 40)).save(out, fmt)
    return out.getvalue()


# Real files of each accepted format, small, for mutating and for well-formed answers.
SEEDS = {fmt: _seed(fmt) for fmt in ("JPEG", "PNG", "GIF", "WEBP")}


def _check_answer(status: int, body: object, elapsed: float, ok: set[int]) -> None:
    """A success the test allows, or a JSON error whose status its registry code gives."""
    assert elapsed < TIME_BOUND_S, f"took {elapsed:.1f} s"
    if status in ok:
        return
    assert isinstance(body, dict) and set(body) == {"error"}, body
    code = body["error"]["code"]
    assert code != "internal_error"
    assert ERRORS[code].status == status, (code, status)


@pytest.fixture
def fuzz_client(fake_model: tuple[FakeModel, int]) -> Iterator[FlaskClient]:
    _, port = fake_model
    resolve_all_to_loopback = SafeFetcher(
        AccessPolicy.parse(["127.0.0.0/8"]),
        Settings.from_env(TEST_ENV).fetch,
        resolver=lambda host, port: [ipaddress.ip_address("127.0.0.1")],
    )
    env = {**TEST_ENV, "TF_SERVING_HOST": f"127.0.0.1:{port}"}
    app = create_app(Settings.from_env(env), fetcher=resolve_all_to_loopback)
    yield app.test_client()
    current(app).classifier.model.close()


@pytest.fixture(scope="module")
def raw_host() -> Iterator[RawHost]:
    host = RawHost().start()
    yield host
    host.stop()


# --- whatever an image host answers ---------------------------------------------------
def _text(max_size: int = 30) -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8"), max_size=max_size)


def _header_value(name: str) -> st.SearchStrategy[str]:
    typical = {
        "Location": st.one_of(
            _text(),
            st.sampled_from(
                ["/image", "http://[::1", "http://%zz", "//", "ftp://x/y", "http://a..b/"]
            ),
        ),
        "Content-Length": st.one_of(
            st.integers(-5, 10**12).map(str), _text(10), st.sampled_from(["²", "1, 1", "0x10", ""])
        ),
        "Transfer-Encoding": st.sampled_from(["chunked", "gzip, chunked", "identity", "bogus", ""]),
        "Content-Encoding": st.sampled_from(["gzip", "br", "deflate", "identity", "x"]),
        "Content-Type": st.sampled_from(["image/jpeg", "text/html", "image/png; x=y", ""]),
    }
    return typical.get(name, _text())


@st.composite
def image_host_answers(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        status = f"HTTP/1.1 {draw(st.integers(0, 999))} {draw(_text(10))}"
    else:
        status = draw(
            st.sampled_from(["HTTP/1.0 200", "HTTP/2 200 OK", "ICY 200 OK", "", "HTTP/1.1 20x OK"])
        )
    names = draw(
        st.lists(
            st.sampled_from(
                [
                    "Location",
                    "Content-Length",
                    "Transfer-Encoding",
                    "Content-Encoding",
                    "Content-Type",
                    "X-Other",
                ]
            ),
            max_size=5,
        )
    )
    headers = [f"{name}: {draw(_header_value(name))}" for name in names]
    body = draw(
        st.one_of(
            st.binary(max_size=300),
            st.sampled_from(list(SEEDS.values())),
            st.builds(  # chunked framing, sizes right or wrong
                lambda parts, size: (
                    b"".join(f"{size or len(p):x}\r\n".encode() + p + b"\r\n" for p in parts)
                    + b"0\r\n\r\n"
                ),
                st.lists(st.binary(min_size=1, max_size=50), max_size=4),
                st.one_of(st.none(), st.integers(0, 2**20)),
            ),
        )
    )
    head = "\r\n".join([status, *headers]).encode("utf-8", errors="surrogatepass")
    return head + b"\r\n\r\n" + body


@FUZZ
@given(answer=image_host_answers())
def test_whatever_an_image_host_answers(
    answer: bytes, fuzz_client: FlaskClient, raw_host: RawHost
) -> None:
    raw_host.response = answer
    started = time.monotonic()
    response = fuzz_client.post("/predict", json={"url": raw_host.url()})
    _check_answer(response.status_code, response.json, time.monotonic() - started, {200})


# --- whatever URL a client sends -------------------------------------------------------
def _any_text(max_size: int) -> st.SearchStrategy[str]:
    """Any Python string, lone surrogates included: JSON's "\ud800" decodes to one."""
    return st.text(st.characters(exclude_categories=()), max_size=max_size)


@st.composite
def urls(draw: st.DrawFn, port: int) -> str:
    scheme = draw(st.sampled_from(["http", "https", "HTTP", "ftp", "", "javascript"]))
    host = draw(
        st.one_of(
            _any_text(20),
            st.sampled_from(["bücher.example", "例え.テスト", "[::1]", "xn--zz", "a" * 70]),
        )
    )
    path = draw(_any_text(40))
    query = draw(_any_text(20))
    port_part = draw(st.sampled_from([f":{port}", "", ":0", ":99999", ":x"]))
    return f"{scheme}://{host}{port_part}/{path}?{query}"


@FUZZ
@given(data=st.data())
def test_whatever_url_a_client_sends(
    data: st.DataObject, fuzz_client: FlaskClient, image_host_port: int
) -> None:
    url = data.draw(urls(image_host_port))
    started = time.monotonic()
    response = fuzz_client.post("/predict", json={"url": url})
    _check_answer(response.status_code, response.json, time.monotonic() - started, {200})


@pytest.fixture
def image_host_port(image_host: ImageHost) -> int:
    return int(image_host.server_address[1])


# --- whatever image bytes and EXIF -----------------------------------------------------
@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(list(SEEDS.values()))))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "duplicate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[max(at, 8) :]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
    return bytes(data)


@FUZZ
@given(image=mutated_images())
def test_whatever_image_bytes(image: bytes, fuzz_client: FlaskClient) -> None:
    started = time.monotonic()
    response = fuzz_client.post("/predict", data=image, content_type="image/png")
    _check_answer(response.status_code, response.json, time.monotonic() - started, {200})


EXIF_VALUES = st.one_of(
    st.integers(-(2**31), 2**32 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
    st.builds(TiffImagePlugin.IFDRational, st.integers(-1000, 1000), st.integers(-10, 10)),
    st.builds(lambda n, d: Fraction(n, d), st.integers(-100, 100), st.integers(1, 100)),
)


@FUZZ
@given(orientation=EXIF_VALUES, fmt=st.sampled_from(["JPEG", "PNG", "WEBP"]))
def test_whatever_exif_orientation(orientation: object, fmt: str, fuzz_client: FlaskClient) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    try:
        raw_exif = exif.tobytes()
    except Exception:
        return
    out = io.BytesIO()
    Image.open(FIXTURES / "shoes.jpg").resize((40, 30)).save(out, fmt, exif=raw_exif)
    started = time.monotonic()
    response = fuzz_client.post("/predict", data=out.getvalue(), content_type="image/jpeg")
    _check_answer(response.status_code, response.json, time.monotonic() - started, {200})
    assert response.status_code == 200  # odd EXIF is ignored, not an error


# --- whatever framing a request body has (under gunicorn) ------------------------------
@st.composite
def request_framings(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A raw request, and whether it is complete as framed (so a server owes an answer
    rather than waiting for the rest of a body that never comes)."""
    body = draw(st.one_of(st.binary(max_size=200), st.sampled_from(list(SEEDS.values()))))
    pad = b"\0" * draw(st.sampled_from([0, 0, 70_000]))  # sometimes over the test's cap
    body += pad
    method = draw(st.sampled_from([b"POST", b"POST", b"PUT", b"GET", b"TRACE", b"PATCH"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/3.7"]))
    head = [
        method + b" /predict " + version,
        b"Host: x",
        b"Content-Type: image/jpeg",
        b"Connection: close",
    ]
    if draw(st.booleans()):
        head.append(draw(st.sampled_from([b"Expect: 100-continue", b"Expect: nope"])))
    framing = draw(
        st.sampled_from(
            ["length", "wrong-length", "bad-length", "chunked", "bad-chunked", "coded", "none"]
        )
    )
    complete = framing in ("length", "bad-length", "coded", "none")
    if framing == "coded":  # a transfer coding other than chunked, with or without a length
        head.append(b"Transfer-Encoding: " + draw(st.sampled_from([b"gzip", b"x", b"gzip, x"])))
        if draw(st.booleans()):
            head.append(b"Content-Length: %d" % len(body))
    elif framing == "length":
        head.append(b"Content-Length: %d" % len(body))
    elif framing == "wrong-length":
        length = draw(st.integers(0, len(body) + 10))
        head.append(b"Content-Length: %d" % length)
        complete = length <= len(body)
    elif framing == "bad-length":
        head.append(
            b"Content-Length: " + draw(st.sampled_from([b"-1", b"1e3", b"abc", b"1, 2", b""]))
        )
    elif framing in ("chunked", "bad-chunked"):
        head.append(b"Transfer-Encoding: chunked")
        sizes = draw(st.lists(st.integers(1, 4096), min_size=1, max_size=6))
        chunks, offset = [], 0
        for size in sizes:
            part = body[offset : offset + size]
            offset += size
            declared = f"{len(part):x}".encode()
            if framing == "bad-chunked" and draw(st.booleans()):
                declared = draw(
                    st.sampled_from([b"zz", b"-1", b"fffffffffffffffff", b"", b"1;ext=\x01"])
                )
            chunks.append(declared + b"\r\n" + part + b"\r\n")
        ends = draw(st.booleans())
        body = b"".join(chunks) + (b"0\r\n\r\n" if ends else b"")
        complete = ends and framing == "chunked" and version == b"HTTP/1.1"
    return b"\r\n".join(head) + b"\r\n\r\n" + body, complete


def _send_raw(base: str, data: bytes, half_close: bool) -> tuple[int, bytes]:
    """Send a whole request; the status and body of the answer, or (0, b"") when the
    server hung up without one (a server may reset a connection whose unread body it
    refuses, or close one whose body stopped coming: a refusal, not a failure).
    ``half_close``: shut the sending side after the request (gunicorn then sees the end of
    a body that never came at once; nginx takes it for a client gone and answers nothing,
    as it should)."""
    host, port = base.removeprefix("http://").split(":")
    reply = b""
    with socket.create_connection((host, int(port)), timeout=TIME_BOUND_S) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                reply += chunk
    while reply.startswith(b"HTTP/1.1 1"):  # an interim answer (100 Continue) first
        reply = reply.partition(b"\r\n\r\n")[2]
    if not reply:
        return 0, b""
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture(scope="module")
def gunicorn_under_fuzz() -> Iterator[tuple[str, str | None, psutil.Process]]:
    """gunicorn, and the proxy in front of it when nginx is installed (as deployed)."""
    from tests.support.fake_model_server import serve
    from tests.support.proxy import NGINX, nginx_proxy

    server, port = serve(FakeModel(record=False))
    env = {**TEST_ENV, "TF_SERVING_HOST": f"127.0.0.1:{port}", "MAX_IMAGE_BYTES": "50000"}
    try:
        with gunicorn_gateway(env, workers=1, threads=4) as (base, master):
            if NGINX is None:
                yield base, None, psutil.Process(master.pid)
            else:
                upstream = int(base.rsplit(":", 1)[1])
                with nginx_proxy(
                    upstream,
                    client_max_body_size="114k",
                    client_header_timeout="1s",  # a request that stops coming ends fast
                    client_body_timeout="1s",
                ) as proxied:
                    yield base, proxied, psutil.Process(master.pid)
    finally:
        server.stop(0)


@settings(FUZZ, max_examples=100)
@given(framed=request_framings(), via_proxy=st.booleans())
def test_whatever_framing_a_request_body_has(
    framed: tuple[bytes, bool],
    via_proxy: bool,
    gunicorn_under_fuzz: tuple[str, str | None, psutil.Process],
) -> None:
    """Straight at gunicorn, its own protocol-level 400s (before the gateway runs) are its
    HTML; the gateway's answers are JSON and never 500. Through the proxy, as deployed,
    every answer is the gateway's JSON, and a complete request always gets one."""
    import json

    request, complete = framed
    direct, proxied, master = gunicorn_under_fuzz
    through_proxy = bool(via_proxy and proxied)
    base = proxied if through_proxy and proxied else direct
    started = time.monotonic()
    status, body = _send_raw(base, request, half_close=not through_proxy)
    elapsed = time.monotonic() - started
    assert status != 500
    if through_proxy and complete:
        assert status, "the proxy answered nothing to a complete request"
    if status and (base == proxied or body.startswith(b"{")):
        _check_answer(status, json.loads(body), elapsed, {200})
    # the worker is alive, fast, and its memory bounded
    started = time.monotonic()
    assert requests.get(direct + "/healthz", timeout=TIME_BOUND_S).status_code == 200
    assert time.monotonic() - started < 1.0
    rss = sum(p.memory_info().rss for p in [master, *master.children()])
    assert rss < 600 * 2**20
