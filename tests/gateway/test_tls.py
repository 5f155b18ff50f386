"""HTTPS downloads connect to the checked IP address yet verify the certificate against the
URL's host name (SNI included): pinning the address must not weaken TLS."""

from __future__ import annotations

import ipaddress
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gateway.errors import ERRORS
from gateway.failures import Failure
from gateway.fetch import FetchLimits, SafeFetcher
from gateway.netguard import AccessPolicy, IPAddress
from tests.support.image_host import FIXTURES

BODY = (FIXTURES / "hat.jpg").read_bytes()


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA and a certificate for images.test signed by it."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=images.test",
             "-keyout", str(d / "host.key"), "-out", str(d / "host.csr"))  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=DNS:images.test\n")
    _openssl("x509", "-req", "-in", str(d / "host.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
             "-CAcreateserial", "-days", "2", "-extfile", str(d / "ext.cnf"), "-out", str(d / "host.pem"))  # fmt: skip
    return d


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.seen_hosts.append(self.headers["Host"])  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)


@pytest.fixture(scope="module")
def https_host(pki: Path) -> Iterator[tuple[int, list[str], list[str]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.seen_hosts = []  # type: ignore[attr-defined]
    sni: list[str] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki / "host.pem", pki / "host.key")
    context.sni_callback = lambda _sock, name, _ctx: sni.append(name) or None  # type: ignore[func-returns-value]
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], server.seen_hosts, sni  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def _resolver(host: str, port: int) -> list[IPAddress]:
    if host in ("images.test", "other.test"):
        return [ipaddress.ip_address("127.0.0.1")]
    raise OSError(f"unknown host {host}")


def _fetcher(tls: ssl.SSLContext | None) -> SafeFetcher:
    policy = AccessPolicy.parse(["images.test", "other.test"])
    return SafeFetcher(policy, FetchLimits(total_timeout_s=5), _resolver, tls=tls)


def test_verified_https_to_the_pinned_address(
    pki: Path, https_host: tuple[int, list[str], list[str]]
) -> None:
    port, hosts, sni = https_host
    trusted = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    assert _fetcher(trusted).fetch(f"https://images.test:{port}/hat.jpg") == BODY
    assert hosts[-1] == f"images.test:{port}"
    assert sni[-1] == "images.test"


def test_certificate_for_another_name_is_refused(
    pki: Path, https_host: tuple[int, list[str], list[str]]
) -> None:
    port, _, _ = https_host
    trusted = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    with pytest.raises(Failure) as info:
        _fetcher(trusted).fetch(f"https://other.test:{port}/hat.jpg")  # same IP, wrong name
    assert (ERRORS[info.value.code].status, info.value.code) == (502, "download_failed")
    assert "TLS" in info.value.message


def test_untrusted_certificate_is_refused(https_host: tuple[int, list[str], list[str]]) -> None:
    port, _, _ = https_host
    with pytest.raises(Failure) as info:
        _fetcher(None).fetch(f"https://images.test:{port}/hat.jpg")  # system CAs only
    assert (ERRORS[info.value.code].status, info.value.code) == (502, "download_failed")
    assert "certificate verify failed" in info.value.message
