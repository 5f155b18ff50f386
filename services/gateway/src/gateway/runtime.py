"""The per-process objects behind the routes, built once by the app factory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flask import current_app

from gateway.api_keys import KeyFile
from gateway.classifier import Classifier
from gateway.decode_memory import MemoryGate
from gateway.fetch import SafeFetcher
from gateway.imaging import Decoder
from gateway.metrics import Metrics
from gateway.model_client import ModelClient
from gateway.settings import Settings


@dataclass(frozen=True)
class Gateway:
    settings: Settings
    classifier: Classifier
    metrics: Metrics
    api_keys: KeyFile | None = None  # None: /predict is open

    @classmethod
    def build(cls, settings: Settings, fetcher: SafeFetcher | None = None) -> Gateway:
        metrics = Metrics()
        classifier = Classifier(
            fetcher=fetcher or SafeFetcher(settings.fetch_policy, settings.fetch),
            decoder=Decoder(
                resize_filter=settings.image.resize_filter,
                exif_transpose=settings.image.exif_transpose,
                max_pixels=settings.image.max_pixels,
                gate=MemoryGate(
                    settings.decode_memory.budget_bytes,
                    settings.decode_memory.wait_s,
                    settings.model.retry_after_s,
                ),
            ),
            model=ModelClient(settings.model, metrics),
            metrics=metrics,
            download_threads=settings.download_threads,
        )
        keys = (
            KeyFile.load(Path(settings.api_keys_file), settings.api_keys_reload_s)
            if settings.api_keys_file
            else None
        )
        return cls(settings, classifier, metrics, keys)


EXTENSION = "gateway"


def current_gateway() -> Gateway:
    gateway: Gateway = current_app.extensions[EXTENSION]
    return gateway
