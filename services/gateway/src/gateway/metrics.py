"""Prometheus metrics, per app instance; aggregated across gunicorn workers when
``PROMETHEUS_MULTIPROC_DIR`` is set (the gunicorn config sets it up)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

from serving_contract.gateway_env import PROMETHEUS_MULTIPROC_DIR
from serving_contract.metrics import IMAGES_COUNTER

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STAGES = ("download", "preprocess", "inference")
IMAGE_SOURCES = ("url", "upload")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests",
            "HTTP requests handled, by endpoint and status code",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time to answer an HTTP request",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage = Histogram(
            "gateway_stage_duration_seconds",
            "Time spent per stage of /predict: download, preprocess (per image), inference",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "gateway_errors",
            "Error responses, by error code",
            ["code"],
            registry=self.registry,
        )
        self.model_call_errors = Counter(
            "gateway_model_call_errors",
            "Failed calls to the model server, by call (predict, metadata, status) and gRPC "
            "status code (the detail of each is in the log)",
            ["call", "grpc_status"],
            registry=self.registry,
        )
        self.key_requests = Counter(
            "gateway_api_key_requests",
            "Requests to endpoints that need an API key, by key id ('(none)' or '(invalid)' "
            "when refused) and status code",
            ["key_id", "status"],
            registry=self.registry,
        )
        self.images = Counter(
            IMAGES_COUNTER,
            "Images asked to be classified, counted on receipt (before the model is called, "
            "so also while it sleeps), by source (url or upload): the model's demand, which "
            "TF Serving's autoscaler reads",
            ["source"],
            registry=self.registry,
        )
        # Every source's series from the start, at 0: Prometheus's rate() needs a sample
        # before the first image, or the first request a new gateway pod takes would not
        # raise the rate that wakes a sleeping TF Serving.
        for source in IMAGE_SOURCES:
            self.images.labels(source)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage.labels(stage).observe(time.perf_counter() - start)

    def exposition(self) -> bytes:
        if os.environ.get(PROMETHEUS_MULTIPROC_DIR.name):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
