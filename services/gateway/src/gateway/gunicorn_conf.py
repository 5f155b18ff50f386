"""gunicorn settings for the gateway: threaded workers, JSON-friendly logging, metrics
shared across workers. Values come from the environment so the container can tune them:
the variables and their defaults are ``serving_contract.gateway_env``'s."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
from typing import Any, TypeVar

from prometheus_client import multiprocess

from gateway.settings import Settings
from serving_contract.gateway_env import (
    GUNICORN_GRACEFUL_TIMEOUT,
    GUNICORN_MAX_REQUESTS,
    GUNICORN_TIMEOUT,
    GUNICORN_TMP_DIR,
    HOST,
    PORT,
    PROMETHEUS_MULTIPROC_DIR,
    Var,
)

T = TypeVar("T")


def _env(var: Var[T]) -> str | T:
    """The variable's value, or its default when it is unset or empty."""
    return os.environ.get(var.name) or var.default


# Every setting is read and checked here, in the master, before any worker starts: a bad
# value stops gunicorn with a message naming the variable.
_settings = Settings.from_env()

# Alone, gunicorn serves the gateway's port on every interface; behind the proxy in its
# pod (compose, Kubernetes), HOST=127.0.0.1 and PORT=8000 keep it reachable only from there.
_host, _port = _env(HOST), _env(PORT)
bind = f"{_host}:{_port}"
worker_class = "gthread"
workers = _settings.server.workers
threads = _settings.server.threads
# Longer than the slowest legal request: download deadline + model deadline.
timeout = int(_env(GUNICORN_TIMEOUT))
graceful_timeout = int(_env(GUNICORN_GRACEFUL_TIMEOUT))
keepalive = 5
max_requests = int(_env(GUNICORN_MAX_REQUESTS))
max_requests_jitter = max_requests // 10
accesslog = None  # the app logs each request as JSON
errorlog = "-"
worker_tmp_dir = _env(GUNICORN_TMP_DIR)
preload_app = False  # each worker builds its own app, channel and thread pool
# gunicorn 25+ opens a control socket under $HOME, which the read-only, home-less image
# lacks ("Control server error: Read-only file system"); nothing here uses gunicornc.
control_socket_disable = True


# glibc mallopt() parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 64 * 1024 * 1024


def keep_large_buffers_in_heap() -> bool:
    """Every request allocates and frees a few large buffers (the tensor, its protobuf,
    the serialized message: ~1 MB each for a float32 model, ~270 KB for uint8 pixels). By
    default glibc serves the big ones with mmap and returns them with munmap, so each request
    page-faults its buffers in again. Keeping buffers under 4 MiB in the heap (trimmed only
    past 64 MB) trades a bounded amount of resident memory for that CPU: `python -m
    bench.cpu_per_request` measured 8.6 -> 5.4 ms of CPU per request for a float32 model,
    and no gain (3.6 vs 3.9 ms) for an export's uint8 input.

    Buffers of 4 MiB and more (decoded images, request bodies) stay with mmap, returned as
    soon as they are freed: in the heap each thread's malloc arena would keep the last image
    it decoded, and a worker's RSS would grow to its thread count times an image whatever
    the decoding budget (tests/gateway/test_decode_memory.py measured 425 MiB for eight
    16 MP images through a 138 MiB budget with a 32 MiB threshold, 69 MiB with this one).
    No-op off glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, 4 * 1024 * 1024) and mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)
    )


def post_fork(server: Any, worker: Any) -> None:
    keep_large_buffers_in_heap()


WORKER_READY = "Worker ready"


def post_worker_init(worker: Any) -> None:
    # gunicorn logs "Booting worker" before the app loads; this says it can serve.
    worker.log.info("%s (pid: %s)", WORKER_READY, worker.pid)


def on_starting(server: Any) -> None:
    directory = _env(PROMETHEUS_MULTIPROC_DIR)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    if _env(PROMETHEUS_MULTIPROC_DIR):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
