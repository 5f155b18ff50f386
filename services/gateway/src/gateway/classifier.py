"""The /predict pipeline: get image bytes, decode to the model's input, one batched
Predict, probabilities."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np

from gateway.failures import Failure
from gateway.fetch import SafeFetcher
from gateway.imaging import Decoder, Pixels, scale_pixels
from gateway.metrics import Metrics
from gateway.model_client import ModelClient
from gateway.postprocess import describe, to_probabilities
from gateway.signature import ServingSignature


class Classifier:
    def __init__(
        self,
        fetcher: SafeFetcher,
        decoder: Decoder,
        model: ModelClient,
        metrics: Metrics,
        download_threads: int,
    ) -> None:
        self.fetcher = fetcher
        self.decoder = decoder
        self.model = model
        self.metrics = metrics
        self.download_threads = download_threads
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        # Created on first use, i.e. in the serving process, never before a fork.
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.download_threads, thread_name_prefix="download"
                )
            return self._pool

    def _decode(self, data: bytes, signature: ServingSignature) -> Pixels:
        with self.metrics.timed("preprocess"):
            return self.decoder(data, (signature.height, signature.width))

    def _download_and_decode(self, url: str, signature: ServingSignature) -> Pixels:
        with self.metrics.timed("download"):
            data = self.fetcher.fetch(url)
        return self._decode(data, signature)

    def _gather(self, jobs: Sequence[Callable[[], Pixels]]) -> list[Pixels]:
        """Run jobs (in parallel when more than one); the first failure by index wins."""
        if len(jobs) == 1:
            return [jobs[0]()]
        futures: list[Future[Pixels]] = [self._executor().submit(job) for job in jobs]
        results: list[Pixels] = []
        for index, future in enumerate(futures):
            try:
                results.append(future.result())
            except Failure as exc:
                for pending in futures[index + 1 :]:
                    pending.cancel()
                raise exc.prefixed(f"urls[{index}]") from None
        return results

    def classify_urls(self, urls: Sequence[str]) -> dict[str, Any]:
        signature = self.model.signature()
        images = self._gather([partial(self._download_and_decode, u, signature) for u in urls])
        self.metrics.images.labels("url").inc(len(images))
        return self._infer(signature, images)

    def classify_upload(self, data: bytes) -> dict[str, Any]:
        signature = self.model.signature()
        images = [self._decode(data, signature)]
        self.metrics.images.labels("upload").inc()
        return self._infer(signature, images)

    def _infer(self, signature: ServingSignature, images: list[Pixels]) -> dict[str, Any]:
        batch: np.ndarray[Any, Any] = (
            images[0][np.newaxis] if len(images) == 1 else np.stack(images)
        )
        if signature.input_dtype == "float32":
            assert signature.preprocessing is not None  # parse_signature insists on it
            batch = scale_pixels(batch, signature.preprocessing)
        with self.metrics.timed("inference"):
            prediction = self.model.predict(signature, batch)
        probabilities = to_probabilities(prediction.scores, signature.activation)
        return {
            "model": {
                "name": self.model.settings.name,
                "version": prediction.model_version,
                "signature": self.model.settings.signature_name,
            },
            "predictions": [describe(row, prediction.labels) for row in probabilities],
        }
