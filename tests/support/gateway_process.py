"""Run the real gateway under gunicorn on a loopback port (tests and benchmarks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def gunicorn_gateway(
    env: dict[str, str],
    workers: int = 2,
    threads: int = 8,
    extra_args: tuple[str, ...] = (),
    app: str = "gateway.app:create_app()",
    log_path: Path | None = None,
    config: str | None = "python:gateway.gunicorn_conf",
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Yields the base URL and the gunicorn master process; stops it on exit.

    ``config=None`` runs gunicorn with its defaults (how the course ran its gateway)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as metrics_dir:
        full_env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
            "WEB_CONCURRENCY": str(workers),
            "GUNICORN_THREADS": str(threads),
            **env,
        }
        log = open(log_path or os.devnull, "wb")  # noqa: SIM115
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
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"gunicorn exited with {process.returncode}")
                try:
                    # any HTTP answer means gunicorn is serving (the reference app has no
                    # /healthz and answers 404)
                    requests.get(base + "/healthz", timeout=5)
                    break
                except requests.RequestException:
                    # refused (not bound yet) or timed out (bound by the master, workers
                    # still importing: slow on a fresh checkout with no bytecode yet)
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("gateway did not start within 60 s")
                time.sleep(0.1)
            yield base, process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
