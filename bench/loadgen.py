"""A bounded HTTP load generator: a fixed number of requests from a fixed number of threads,
each with its own keep-alive connection. Used by the benchmarks; stops by itself."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    @property
    def count(self) -> int:
        return len(self.latencies_s)

    @property
    def rps(self) -> float:
        return self.count / self.elapsed_s if self.elapsed_s else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s else 0.0

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500 or status == 0)


def run_load(
    base_url: str,
    body_for: Callable[[int], dict[str, object]],
    requests: int,
    concurrency: int,
    max_seconds: float = 300.0,
    path: str = "/predict",
    timeout_s: float = 30.0,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """POST ``body_for(i)`` as JSON for i in range(requests), with ``headers`` (an API key,
    say), to an http:// or https:// ``base_url``; stops early at max_seconds."""
    parts = urlsplit(base_url)
    sent = {"Content-Type": "application/json", **(headers or {})}

    def connect() -> http.client.HTTPConnection:
        host = parts.hostname or "127.0.0.1"
        if parts.scheme == "https":
            return http.client.HTTPSConnection(host, parts.port, timeout=timeout_s)
        return http.client.HTTPConnection(host, parts.port, timeout=timeout_s)

    result = LoadResult()
    lock = threading.Lock()
    next_index = iter(range(requests))
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        conn = connect()
        while time.monotonic() < deadline:
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            payload = json.dumps(body_for(i)).encode()
            started = time.perf_counter()
            try:
                conn.request("POST", path, payload, sent)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = connect()
            latency = time.perf_counter() - started
            with lock:
                result.latencies_s.append(latency)
                result.statuses[status] += 1
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.elapsed_s = time.perf_counter() - started
    return result
