"""The course's reference preprocessing, computed with Keras itself (tests only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt


def keras_xception_input(path: Path, size: tuple[int, int] = (299, 299)) -> npt.NDArray[np.float32]:
    """``load_img(target_size, nearest)`` + ``xception.preprocess_input``, batch of one."""
    from keras.applications.xception import preprocess_input
    from keras.utils import load_img

    img = load_img(str(path), target_size=size, interpolation="nearest")
    x = np.array([np.array(img, dtype="float32")])
    result: npt.NDArray[np.float32] = preprocess_input(x)
    return result


def softmax(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    z = np.asarray(x, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    result: npt.NDArray[np.float64] = e / e.sum(axis=-1, keepdims=True)
    return result
