"""CPU time per /predict request: with and without keeping large buffers in the heap, and
for each model contract (``bench.backends.CONTRACTS``).

    uv run python -m bench.cpu_per_request

Runs the gateway app, a model-server stand-in and an image host in one process (Flask test
client, no HTTP server in front) and reports process CPU ms per request, best of 3 rounds
of 300. Each measurement runs in a fresh subprocess, since malloc settings cannot be undone.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(contract: str, rounds: int = 3, requests: int = 300) -> float:
    from bench.backends import CONTRACTS, COURSE_GATEWAY_ENV
    from gateway.app import create_app
    from gateway.settings import Settings
    from tests.support.fake_model_server import FakeModel, serve
    from tests.support.image_host import ImageHost

    server, port = serve(FakeModel(**CONTRACTS[contract], record=False))
    host = ImageHost().start()
    env = {"TF_SERVING_HOST": f"127.0.0.1:{port}", "FETCH_ALLOW": "127.0.0.0/8"}
    if contract == "course":
        env.update(COURSE_GATEWAY_ENV)
    app = create_app(Settings.from_env(env))
    for handler in logging.getLogger("gateway").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115
    client = app.test_client()
    url = host.url("/images/hat.jpg")
    for _ in range(20):
        client.post("/predict", json={"url": url})
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(requests):
            assert client.post("/predict", json={"url": url}).status_code == 200
        best = min(best, (time.process_time() - start) / requests * 1000)
    host.stop()
    server.stop(0)
    return best


def cpu_ms(malloc: str, contract: str) -> float:
    """``measure`` in a fresh process; ``malloc`` is ``default`` or ``heap``."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.cpu_per_request", malloc, contract],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1:  # child: one measurement
        malloc, contract = sys.argv[1:3]
        if malloc == "heap":
            from gateway.gunicorn_conf import keep_large_buffers_in_heap

            assert keep_large_buffers_in_heap()
        print(f"{measure(contract):.2f}")
        return
    for contract in ("course", "export"):
        default, heap = cpu_ms("default", contract), cpu_ms("heap", contract)
        print(
            f"{contract} model: CPU per request {default:.2f} ms with glibc defaults, "
            f"{heap:.2f} ms with large buffers kept in the heap"
        )


if __name__ == "__main__":
    main()
