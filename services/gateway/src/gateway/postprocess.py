"""Model scores -> per-class probabilities, and the one place the answer /predict sends is
given its JSON shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Classification:
    """What the model said about a batch of images, and which model said it."""

    model_name: str
    model_version: int
    signature_name: str
    labels: tuple[str, ...]
    probabilities: npt.NDArray[np.float64]  # (images, classes), in the request's order


def to_probabilities(scores: npt.NDArray[np.float64], activation: str) -> npt.NDArray[np.float64]:
    """Softmax over the last axis (for logits), or the scores as they are. The scores are
    finite: ``model_client.read_prediction`` refuses any other answer."""
    values = scores.astype(np.float64)
    if activation == "none":
        return values
    shifted = values - values.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    result: npt.NDArray[np.float64] = exp / exp.sum(axis=-1, keepdims=True)
    return result


def answer(result: Classification, *, batch: bool) -> dict[str, Any]:
    """The JSON /predict answers: ``{"model", "predictions": [...]}`` for a list of URLs;
    for one image, its prediction's fields beside ``"model"``."""
    model = {
        "name": result.model_name,
        "version": result.model_version,
        "signature": result.signature_name,
    }
    predictions = [_prediction(row, result.labels) for row in result.probabilities]
    if batch:
        return {"model": model, "predictions": predictions}
    return {"model": model, **predictions[0]}


def _prediction(row: npt.NDArray[np.float64], labels: tuple[str, ...]) -> dict[str, Any]:
    """One image's result: top class, its probability, and every class's probability."""
    top = int(np.argmax(row))
    return {
        "top_class": labels[top],
        "top_probability": float(row[top]),
        "probabilities": {label: float(p) for label, p in zip(labels, row, strict=True)},
    }
