"""Slow and hostile image servers against the real downloader: every one is cut off by a
timeout or the byte cap, and the time it held a request is measured."""

from __future__ import annotations

import time

import pytest
from flask.testing import FlaskClient

from gateway.errors import ERRORS
from gateway.failures import Failure
from gateway.fetch import FetchLimits, SafeFetcher
from gateway.netguard import AccessPolicy
from tests.support.image_host import ImageHost

LOOPBACK = AccessPolicy.parse(["127.0.0.0/8"])
TOTAL_S = 2.0
READ_S = 1.0
CAP = 1024 * 1024
SLACK_S = 1.5  # scheduling on a loaded 2-core machine


def _fetch(url: str, **limits: float) -> tuple[Failure, float]:
    fetcher = SafeFetcher(
        LOOPBACK,
        FetchLimits(
            max_bytes=CAP,
            read_timeout_s=limits.get("read", READ_S),
            total_timeout_s=limits.get("total", TOTAL_S),
            max_redirects=3,
        ),
    )
    started = time.monotonic()
    with pytest.raises(Failure) as info:
        fetcher.fetch(url)
    return info.value, time.monotonic() - started


def test_slowloris_body_is_cut_at_the_total_deadline(image_host: ImageHost) -> None:
    # A byte every 0.3 s never trips the 1 s read timeout; only the total deadline stops it.
    error, elapsed = _fetch(image_host.url("/trickle?every=0.3&for=30"))
    assert (ERRORS[error.code].status, error.code) == (504, "download_timeout")
    assert TOTAL_S - 0.1 <= elapsed <= TOTAL_S + SLACK_S
    print(f"trickled body held the request {elapsed:.2f} s (total deadline {TOTAL_S} s)")


def test_slowloris_headers_are_cut_at_the_total_deadline(image_host: ImageHost) -> None:
    error, elapsed = _fetch(image_host.url("/slow-headers?every=0.3"))
    assert (ERRORS[error.code].status, error.code) == (504, "download_timeout")
    assert TOTAL_S - 0.1 <= elapsed <= TOTAL_S + SLACK_S


def test_stalled_body_is_cut_at_the_read_timeout(image_host: ImageHost) -> None:
    # Nothing after the first bytes: the read timeout fires well before the total deadline.
    error, elapsed = _fetch(image_host.url("/trickle?every=10&for=30"), total=5.0)
    assert (ERRORS[error.code].status, error.code) == (504, "download_timeout")
    assert READ_S - 0.1 <= elapsed <= READ_S + SLACK_S


def test_endless_body_stops_at_the_byte_cap(image_host: ImageHost) -> None:
    sent_before = image_host.endless_bytes_sent
    error, elapsed = _fetch(image_host.url("/endless"))
    assert (ERRORS[error.code].status, error.code) == (413, "image_too_large")
    assert elapsed < TOTAL_S
    time.sleep(0.3)  # let the server notice the closed socket
    sent = image_host.endless_bytes_sent - sent_before
    # What the host pushed is the cap plus what loopback socket buffers absorb: megabytes,
    # not the gigabytes 30 s of an endless stream would be.
    assert sent < CAP + 16 * 1024 * 1024
    print(f"endless body: cut after {elapsed:.2f} s; host managed to send {sent / 1e6:.1f} MB")


def test_declared_huge_body_is_refused_before_reading(image_host: ImageHost) -> None:
    error, elapsed = _fetch(image_host.url("/huge-declared"))
    assert (ERRORS[error.code].status, error.code) == (413, "image_too_large")
    assert elapsed < 0.5


def test_redirect_loop_stops_at_the_cap(image_host: ImageHost) -> None:
    hits_before = image_host.hits.count("/loop")
    error, elapsed = _fetch(image_host.url("/loop"))
    assert (ERRORS[error.code].status, error.code) == (502, "too_many_redirects")
    assert image_host.hits.count("/loop") - hits_before == 4  # first request + 3 redirects
    assert elapsed < TOTAL_S


def test_gateway_answers_504_json_for_a_trickling_host(
    client: FlaskClient, image_host: ImageHost
) -> None:
    started = time.monotonic()
    response = client.post("/predict", json={"url": image_host.url("/trickle?every=0.3")})
    assert response.status_code == 504
    assert response.json["error"]["code"] == "download_timeout"
    assert time.monotonic() - started <= 2.0 + SLACK_S  # DOWNLOAD_TIMEOUT_S is 2 in TEST_ENV
