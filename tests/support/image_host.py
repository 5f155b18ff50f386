"""A real HTTP image host on loopback, with well-behaved and hostile routes."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "images"
CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
}


class _Handler(BaseHTTPRequestHandler):
    server: ImageHost
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def handle(self) -> None:
        with contextlib.suppress(OSError):  # clients (the gateway) may hang up any time
            super().handle()

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self.server.hits.append(parts.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        route = self.server.routes.get(parts.path)
        try:
            if route is not None:
                route(self, query)
            elif parts.path.startswith("/images/"):
                self._file(self.server.resolve(parts.path.removeprefix("/images/")))
            else:
                self._send(404, b"not found", "text/plain")
        except OSError:  # the gateway hung up on a hostile route, as it should
            pass

    def _file(self, path: Path) -> None:
        if not path.is_file():
            self._send(404, b"not found", "text/plain")
            return
        if self.server.delay_s:
            time.sleep(self.server.delay_s)  # stands in for network time to a real host
        self._send(
            200, path.read_bytes(), CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        )

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


Route = Callable[[_Handler, dict[str, str]], None]


def _redirect(h: _Handler, q: dict[str, str]) -> None:
    h._send(int(q.get("status", "302")), b"", "text/plain", {"Location": q["to"]})


def _loop(h: _Handler, q: dict[str, str]) -> None:
    h._send(302, b"", "text/plain", {"Location": "/loop"})


def _trickle(h: _Handler, q: dict[str, str]) -> None:
    """Slowloris-style: a valid JPEG header, then one byte every `every` seconds."""
    every = float(q.get("every", "0.2"))
    h.send_response(200)
    h.send_header("Content-Type", "image/jpeg")
    h.send_header("Content-Length", "1000000")
    h.end_headers()
    h.wfile.write(b"\xff\xd8\xff")
    h.wfile.flush()
    deadline = time.monotonic() + float(q.get("for", "30"))
    while time.monotonic() < deadline and not h.server.stopping.is_set():
        time.sleep(every)
        h.wfile.write(b"\x00")
        h.wfile.flush()


def _endless(h: _Handler, q: dict[str, str]) -> None:
    """A body that never ends (no Content-Length, close-delimited), as fast as it can."""
    h.send_response(200)
    h.send_header("Content-Type", "image/jpeg")
    h.send_header("Connection", "close")
    h.end_headers()
    chunk = b"\xff\xd8\xff" + b"\x00" * 65533
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not h.server.stopping.is_set():
        h.wfile.write(chunk)
        h.server.endless_bytes_sent += len(chunk)


def _huge_declared(h: _Handler, q: dict[str, str]) -> None:
    h.send_response(200)
    h.send_header("Content-Type", "image/jpeg")
    h.send_header("Content-Length", str(10**12))
    h.end_headers()
    h.wfile.write(b"\xff\xd8\xff")


def _slow_headers(h: _Handler, q: dict[str, str]) -> None:
    """Headers trickled one every `every` seconds, forever: bounded only by a total deadline."""
    every = float(q.get("every", "0.2"))
    h.wfile.write(b"HTTP/1.1 200 OK\r\n")
    deadline = time.monotonic() + 30
    i = 0
    while time.monotonic() < deadline and not h.server.stopping.is_set():
        h.wfile.write(f"X-Slow-{i}: x\r\n".encode())
        h.wfile.flush()
        i += 1
        time.sleep(every)


def _status(h: _Handler, q: dict[str, str]) -> None:
    h._send(int(q.get("code", "500")), b"error page", "text/html")


def _text(h: _Handler, q: dict[str, str]) -> None:
    h._send(200, b"<html>not an image</html>", "image/jpeg")


def _gzip_lie(h: _Handler, q: dict[str, str]) -> None:
    import gzip

    body = gzip.compress((FIXTURES / "hat.jpg").read_bytes())
    h._send(200, body, "image/jpeg", {"Content-Encoding": "gzip"})


class ImageHost(ThreadingHTTPServer):
    daemon_threads = True
    # The default listen backlog (5) drops SYNs under benchmark concurrency, and each drop
    # costs the client a 1 s retransmit: a harness artifact, not gateway latency.
    request_queue_size = 256

    def __init__(self, host: str = "127.0.0.1", root: Path = FIXTURES, port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.root = root
        self.delay_s = 0.0
        self.hits: list[str] = []
        self.stopping = threading.Event()
        self.endless_bytes_sent = 0
        self.routes: dict[str, Route] = {
            "/redirect": _redirect,
            "/loop": _loop,
            "/trickle": _trickle,
            "/endless": _endless,
            "/huge-declared": _huge_declared,
            "/slow-headers": _slow_headers,
            "/status": _status,
            "/text": _text,
            "/gzip": _gzip_lie,
        }
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def resolve(self, name: str) -> Path:
        """A file under the root, never outside it."""
        path = (self.root / name).resolve()
        return path if path.is_relative_to(self.root.resolve()) else self.root / "missing"

    @property
    def base(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def start(self) -> ImageHost:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
