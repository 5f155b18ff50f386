from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from model_tools.cli import CLOTHING_CLASSES
from model_tools.export import ExportRequest, export
from tests.support.classifiers import calibrate_batchnorm, fit_head
from tests.support.image_host import FIXTURES

LABELS = list(CLOTHING_CLASSES)
ROOT = Path(__file__).resolve().parents[2]
# The dataset JPEGs (one per class, named after it), in label order.
IMAGES = [FIXTURES / f"{label}.jpg" for label in LABELS]


def tiny_classifier(size: int = 299, classes: int = 10, softmax: bool = False, seed: int = 7):  # type: ignore[no-untyped-def]
    """A small real Keras 3 model with the course model's interface: image in, 10 scores out."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="input_8")  # the course's name
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
    return export(
        ExportRequest(keras_model_file, out, "clothing-model", 1, LABELS, preprocessing="tf")
    )


def course_inputs(keras: Any, size: int = 299) -> npt.NDArray[np.float32]:
    """The course's preprocessing of the fixture JPEGs, with the given Keras's own functions:
    ``load_img(target_size)`` + ``xception.preprocess_input``."""
    pixels = [
        np.array(keras.utils.load_img(path, target_size=(size, size)), dtype="float32")
        for path in IMAGES
    ]
    result: npt.NDArray[np.float32] = keras.applications.xception.preprocess_input(np.stack(pixels))
    return result


@pytest.fixture(scope="session")
def course_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The course's chapter-7 classifier, built and saved as the course did with TensorFlow
    2.x's Keras 2 (here tf_keras): a frozen Xception base called with training=False, then
    GlobalAveragePooling2D, Dense(100, relu), Dropout(0.2), Dense(10) logits; compiled with
    Adam and a from-logits loss, fitted a step, saved by ModelCheckpoint to `.h5`. The base
    is a nested functional model full of SeparableConv2D, which is what Keras 3 cannot read.
    Weights are untrained but calibrated to give distinct answers (tests.support.classifiers).
    """
    import tf_keras as keras

    keras.utils.set_random_seed(42)
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(299, 299, 3))
    x_train = course_inputs(keras)
    # before freezing: a frozen BatchNorm runs in inference mode even when training
    assert calibrate_batchnorm(base, x_train, keras) > 0
    base.trainable = False
    inputs = keras.Input(shape=(299, 299, 3))
    x = base(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(100, activation="relu")(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(10)(x)
    model = keras.Model(inputs, outputs)

    classes = list(range(len(LABELS)))
    fit_head(model, x_train, classes, keras)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-5),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    directory = tmp_path_factory.mktemp("course")
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(directory / "xception_v4_large_{epoch:02d}_{val_accuracy:.3f}.h5"),
        save_best_only=True,
        monitor="val_accuracy",
        mode="max",
    )
    y = np.eye(len(LABELS))[classes]
    model.fit(
        x_train, y, epochs=1, batch_size=len(y), validation_data=(x_train, y),
        callbacks=[checkpoint], verbose=0,
    )  # fmt: skip
    [path] = directory.glob("*.h5")
    return path


@pytest.fixture(scope="session")
def course_export(course_h5: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make model`` with the course-style file on disk, exactly as a user runs it; returns
    the export directory (``<MODEL_DIR>``)."""
    work = tmp_path_factory.mktemp("make-model")
    result = subprocess.run(
        [
            "make", "--no-print-directory", "model",
            f"MODEL_FILE={course_h5}", f"MODEL_DIR={work / 'models'}",
            f"MODEL_CACHE={work / 'cache'}",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work / "models"
