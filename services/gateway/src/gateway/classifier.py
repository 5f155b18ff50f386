"""The /predict pipeline: get image bytes, turn each into the model's input (decode,
resize and, for a model that takes preprocessed float32, scale: all of it the
``preprocess`` stage), one batched Predict, probabilities."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

import numpy as np
import numpy.typing as npt

from gateway.failures import Failure
from gateway.fetch import SafeFetcher
from gateway.imaging import Decoder, scale_pixels
from gateway.metrics import IMAGE_SOURCES, Metrics
from gateway.model_client import ModelClient
from gateway.postprocess import Classification, to_probabilities
from gateway.signature import ServingSignature

URL, UPLOAD = IMAGE_SOURCES
# One image as the model takes it: uint8 pixels, or float32 for preprocessed input.
ModelInput = npt.NDArray[np.uint8] | npt.NDArray[np.float32]


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

    def _preprocess(self, data: bytes, signature: ServingSignature) -> ModelInput:
        """The image as the model's input: decoded and resized, then scaled when the model
        takes preprocessed float32 (the signature then says how)."""
        with self.metrics.timed("preprocess"):
            pixels = self.decoder(data, (signature.height, signature.width))
            if signature.preprocessing is None:
                return pixels
            return scale_pixels(pixels, signature.preprocessing)

    def _download_and_preprocess(self, url: str, signature: ServingSignature) -> ModelInput:
        with self.metrics.timed("download"):
            data = self.fetcher.fetch(url)
        return self._preprocess(data, signature)

    def _gather(self, jobs: Sequence[Callable[[], ModelInput]]) -> list[ModelInput]:
        """Run jobs (in parallel when more than one); the first failure by index wins."""
        if len(jobs) == 1:
            return [jobs[0]()]
        futures: list[Future[ModelInput]] = [self._executor().submit(job) for job in jobs]
        results: list[ModelInput] = []
        for index, future in enumerate(futures):
            try:
                results.append(future.result())
            except Failure as exc:
                for pending in futures[index + 1 :]:
                    pending.cancel()
                raise exc.prefixed(f"urls[{index}]") from None
        return results

    # Both count their images first, before anything can fail: the count is the model's
    # demand, which TF Serving's autoscaler reads, also to wake a model server that sleeps
    # (every call to it fails until it is up).
    def classify_urls(self, urls: Sequence[str]) -> Classification:
        self.metrics.images.labels(URL).inc(len(urls))
        signature = self.model.signature()
        jobs = [partial(self._download_and_preprocess, url, signature) for url in urls]
        return self._infer(signature, self._gather(jobs))

    def classify_upload(self, data: bytes) -> Classification:
        self.metrics.images.labels(UPLOAD).inc()
        signature = self.model.signature()
        return self._infer(signature, [self._preprocess(data, signature)])

    def _infer(self, signature: ServingSignature, images: list[ModelInput]) -> Classification:
        batch = images[0][np.newaxis] if len(images) == 1 else np.stack(images)
        with self.metrics.timed("inference"):
            prediction = self.model.predict(signature, batch)
        return Classification(
            model_name=self.model.settings.name,
            model_version=prediction.model_version,
            signature_name=self.model.settings.signature_name,
            labels=prediction.labels,
            probabilities=to_probabilities(prediction.scores, signature.activation),
        )
