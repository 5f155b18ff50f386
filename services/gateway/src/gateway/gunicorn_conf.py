"""gunicorn settings for the gateway: threaded workers, JSON-friendly logging, metrics
shared across workers. Values come from the environment so the container can tune them."""

from __future__ import annotations

import os
import shutil
from typing import Any

from prometheus_client import multiprocess

bind = f"0.0.0.0:{os.environ.get('PORT', '9696')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# Longer than the slowest legal request: download deadline + model deadline.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
keepalive = 5
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10
accesslog = None  # the app logs each request as JSON
errorlog = "-"
worker_tmp_dir = os.environ.get("GUNICORN_TMP_DIR") or None
preload_app = False  # each worker builds its own app, channel and thread pool


def on_starting(server: Any) -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
