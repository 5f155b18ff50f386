"""The /predict pipeline: get image bytes, preprocess, one batched Predict, probabilities."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.errors import ApiError
from gateway.fetch import SafeFetcher
from gateway.imaging import Preprocessor
from gateway.metrics import Metrics
from gateway.model_client import ModelClient
from gateway.postprocess import describe, to_probabilities
from gateway.settings import Settings

Array = npt.NDArray[np.float32]


class Classifier:
    def __init__(
        self,
        settings: Settings,
        fetcher: SafeFetcher,
        preprocessor: Preprocessor,
        model: ModelClient,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.fetcher = fetcher
        self.preprocessor = preprocessor
        self.model = model
        self.metrics = metrics
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _executor(self) -> ThreadPoolExecutor:
        # Created on first use, i.e. in the serving process, never before a fork.
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.settings.download_threads, thread_name_prefix="download"
                )
            return self._pool

    def _prepare(self, data: bytes) -> Array:
        with self.metrics.timed("preprocess"):
            return self.preprocessor(data)

    def _download_and_prepare(self, url: str) -> Array:
        with self.metrics.timed("download"):
            data = self.fetcher.fetch(url)
        return self._prepare(data)

    def _gather(self, jobs: Sequence[Callable[[], Array]]) -> list[Array]:
        """Run jobs (in parallel when more than one); the first failure by index wins."""
        if len(jobs) == 1:
            return [jobs[0]()]
        futures: list[Future[Array]] = [self._executor().submit(job) for job in jobs]
        results: list[Array] = []
        for index, future in enumerate(futures):
            try:
                results.append(future.result())
            except ApiError as exc:
                for pending in futures[index + 1 :]:
                    pending.cancel()
                raise exc.prefixed(f"urls[{index}]") from None
        return results

    def classify_urls(self, urls: Sequence[str]) -> dict[str, Any]:
        arrays = self._gather([partial(self._download_and_prepare, url) for url in urls])
        self.metrics.images.labels("url").inc(len(arrays))
        return self._infer(arrays)

    def classify_upload(self, data: bytes) -> dict[str, Any]:
        arrays = [self._prepare(data)]
        self.metrics.images.labels("upload").inc()
        return self._infer(arrays)

    def _infer(self, arrays: list[Array]) -> dict[str, Any]:
        batch = arrays[0][np.newaxis] if len(arrays) == 1 else np.stack(arrays)
        with self.metrics.timed("inference"):
            prediction = self.model.predict(batch)
        probabilities = to_probabilities(prediction.scores, self.settings.output_activation)
        return {
            "model": {
                "name": self.settings.model_name,
                "version": prediction.model_version,
                "signature": self.settings.signature_name,
            },
            "predictions": [describe(row, self.settings.class_labels) for row in probabilities],
        }
