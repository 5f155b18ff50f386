"""One end-to-end check for any served classifier: the gateway, called by URL, by a batch
of URLs and by upload, answers what Keras answers (tests only)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import requests

from tests.support.image_host import ImageHost

TOLERANCE = 1e-5


def _probabilities(prediction: dict[str, object], labels: Sequence[str]) -> npt.NDArray[np.float64]:
    probabilities = prediction["probabilities"]
    assert isinstance(probabilities, dict)
    assert list(probabilities) == list(labels)
    return np.array([probabilities[label] for label in labels])


def check_gateway_matches_keras(
    base: str,
    image_host: ImageHost,
    images: Sequence[Path],
    expected: npt.NDArray[np.float64],
    labels: Sequence[str],
) -> None:
    """``expected[i]``: softmax(Keras predict) for ``images[i]``, a fixture JPEG."""
    ready = requests.get(base + "/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json()["model"] == "available", ready.text
    top = [labels[int(i)] for i in np.argmax(expected, axis=1)]
    assert len(set(top)) >= len(images) // 2, f"outputs too alike to test anything: {top}"

    urls = [image_host.url(f"/images/{path.name}") for path in images]
    batch = requests.post(base + "/predict", json={"urls": urls}, timeout=120)
    assert batch.status_code == 200, batch.text
    for i, prediction in enumerate(batch.json()["predictions"]):
        got = _probabilities(prediction, labels)
        np.testing.assert_allclose(got, expected[i], atol=TOLERANCE, rtol=0, err_msg=urls[i])
        assert prediction["top_class"] == top[i]

    for i in (0, len(images) - 1):
        single = requests.post(base + "/predict", json={"url": urls[i]}, timeout=60)
        assert single.status_code == 200, single.text
        np.testing.assert_allclose(
            _probabilities(single.json(), labels), expected[i], atol=TOLERANCE, rtol=0
        )
        with images[i].open("rb") as upload:
            uploaded = requests.post(base + "/predict", files={"image": upload}, timeout=60)
        assert uploaded.status_code == 200, uploaded.text
        body = uploaded.json()
        np.testing.assert_allclose(
            _probabilities(body, labels), expected[i], atol=TOLERANCE, rtol=0
        )
        assert body["top_class"] == top[i]
