from __future__ import annotations

from pathlib import Path

import pytest

from model_tools.cli import CLOTHING_CLASSES
from model_tools.export import ExportRequest, export

LABELS = CLOTHING_CLASSES.split(",")


def tiny_classifier(size: int = 299, classes: int = 10, softmax: bool = False, seed: int = 7):  # type: ignore[no-untyped-def]
    """A small real Keras model with the course model's interface: image in, 10 scores out."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="input_8")  # the course's name; must not leak
    x = keras.layers.AveragePooling2D(8)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(
        classes, activation="softmax" if softmax else None, name="dense_7"
    )(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="session")
def keras_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keras") / "tiny.keras"
    tiny_classifier().save(path)
    return path


@pytest.fixture(scope="session")
def exported(keras_model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The version directory of the tiny model exported with the real export code."""
    out = tmp_path_factory.mktemp("models")
    return export(ExportRequest(keras_model_file, out, "clothing-model", 1, LABELS))
