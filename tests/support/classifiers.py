"""Real Keras image classifiers for the tests, built with ``weights=None`` but giving
answers that differ from image to image (tests only).

Untrained weights make every image look alike: with BatchNorm statistics at their
defaults, the features hardly vary and every softmax is ~0.1 for every class, so "same top
class" would prove nothing. Two fixes, both on real arithmetic of the real architecture:

- ``calibrate_batchnorm``: set each BatchNorm's moving mean and variance to the statistics
  of a batch of real images (momentum 0 for one forward pass in training mode), so the
  activations are normalised as in a trained network;
- ``fit_head``: set the last Dense layer so the fixture images score their own class
  highest (least squares on the penultimate features), as a trained head would.

Works with Keras 3 and with tf_keras (Keras 2), which share these APIs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

TARGET_LOGIT = 4.0  # softmax gives the right class ~0.86 among 10


def _walk(layer: Any) -> Iterator[Any]:
    yield layer
    for child in getattr(layer, "layers", ()):
        yield from _walk(child)


def calibrate_batchnorm(model: Any, x: npt.NDArray[np.float32], keras: Any) -> int:
    """Moving statistics := the statistics of ``x``; returns how many layers it set."""
    layers = [layer for layer in _walk(model) if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(layers, saved, strict=True):
        layer.momentum = momentum
    return len(layers)


def fit_head(model: Any, x: npt.NDArray[np.float32], classes: Sequence[int], keras: Any) -> None:
    """Set the final Dense layer so image ``i`` of ``x`` scores class ``classes[i]``."""
    head = model.layers[-1]
    features_model = keras.Model(model.inputs, model.layers[-2].output)
    features = np.asarray(features_model.predict(x, verbose=0), dtype=np.float64)
    kernel, bias = head.get_weights()
    targets = np.zeros((len(classes), kernel.shape[1]))
    targets[np.arange(len(classes)), list(classes)] = TARGET_LOGIT
    design = np.hstack([features, np.ones((len(features), 1))])
    solution, *_ = np.linalg.lstsq(design, targets, rcond=None)
    head.set_weights([solution[:-1].astype(kernel.dtype), solution[-1].astype(bias.dtype)])
