"""The course's reference preprocessing, computed with Keras itself (tests only)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt


def keras_pixels(path: Path, size: tuple[int, int] = (299, 299)) -> npt.NDArray[np.uint8]:
    """``load_img(target_size, nearest)`` as uint8 pixels, batch of one: what the gateway
    sends a model exported by ``model_tools``."""
    from keras.utils import load_img

    img = load_img(str(path), target_size=size, interpolation="nearest")
    return np.array([np.array(img, dtype=np.uint8)])


def keras_input(
    path: Path, size: tuple[int, int] = (299, 299), family: ModuleType | None = None
) -> npt.NDArray[np.float32]:
    """``load_img`` + ``<family>.preprocess_input`` (Xception's by default), batch of one:
    the course's preprocessing."""
    if family is None:
        from keras.applications import xception

        family = xception
    x = keras_pixels(path, size).astype("float32")
    result: npt.NDArray[np.float32] = family.preprocess_input(x)
    return result


def softmax(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    z = np.asarray(x, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    result: npt.NDArray[np.float64] = e / e.sum(axis=-1, keepdims=True)
    return result
