"""Model scores -> per-class probabilities and the JSON shape the API returns."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.failures import Failure


def to_probabilities(scores: npt.NDArray[np.float64], activation: str) -> npt.NDArray[np.float64]:
    """Softmax over the last axis (for logits), or the scores as they are."""
    values = scores.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise Failure("model_error", "the model returned non-finite scores")
    if activation == "none":
        return values
    shifted = values - values.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    result: npt.NDArray[np.float64] = exp / exp.sum(axis=-1, keepdims=True)
    return result


def describe(row: npt.NDArray[np.float64], labels: tuple[str, ...]) -> dict[str, Any]:
    """One image's result: top class, its probability, and every class's probability."""
    top = int(np.argmax(row))
    return {
        "top_class": labels[top],
        "top_probability": float(row[top]),
        "probabilities": {label: float(p) for label, p in zip(labels, row, strict=True)},
    }
