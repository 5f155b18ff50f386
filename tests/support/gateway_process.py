"""Run the real gateway under gunicorn on a loopback port (tests and benchmarks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from gateway.gunicorn_conf import WORKER_READY
from gateway.logs import UNHANDLED_ERROR

GATEWAY_CONFIG = "python:gateway.gunicorn_conf"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until_serving(
    url: str,
    process: subprocess.Popen[bytes],
    timeout_s: float,
    also: Callable[[], bool] = lambda: True,
) -> None:
    """Until ``url`` gets any HTTP answer and ``also()`` holds; fails if ``process`` exits
    (with its stderr, when it was piped) or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            detail = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"the server exited with {process.returncode}: {detail}")
        try:
            requests.get(url, timeout=5)
            if also():
                return
        except requests.RequestException:
            pass  # refused (not bound yet) or timed out (bound, still starting)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")
        time.sleep(0.05)


@contextmanager
def gunicorn_gateway(
    env: dict[str, str],
    workers: int = 2,
    threads: int = 8,
    extra_args: tuple[str, ...] = (),
    app: str = "gateway.app:create_app()",
    log_path: Path | None = None,
    config: str | None = GATEWAY_CONFIG,
    allow_internal_errors: bool = False,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Yields the base URL and the gunicorn master process; stops it on exit.

    ``config=None`` runs gunicorn with its defaults (how the course ran its gateway). On
    exit its log is read: an internal_error the gateway answered (a bug) fails the test
    unless ``allow_internal_errors``."""
    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        metrics_dir = Path(work) / "metrics"
        metrics_dir.mkdir()
        log_path = log_path or Path(work) / "gunicorn.log"
        full_env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "WEB_CONCURRENCY": str(workers),
            "GUNICORN_THREADS": str(threads),
            **env,
        }
        log = open(log_path, "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                *(["-c", config] if config else []),
                "--bind",
                f"127.0.0.1:{port}",
                *extra_args,
                app,
            ],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            # Any HTTP answer means gunicorn is serving (the reference app has no /healthz
            # and answers 404); with the gateway's config, every worker must also have
            # loaded the app (tests that load all workers need them all). A fresh checkout
            # with no bytecode yet imports slowly.
            wait_until_serving(
                base + "/healthz",
                process,
                timeout_s=60,
                also=lambda: (
                    config != GATEWAY_CONFIG
                    or log_path.read_bytes().count(WORKER_READY.encode()) >= workers
                ),
            )
            yield base, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
        text = log_path.read_text(errors="replace")
        if not allow_internal_errors and f'"message": "{UNHANDLED_ERROR}"' in text:
            raise AssertionError(f"the gateway answered internal_error:\n{text[-4000:]}")
