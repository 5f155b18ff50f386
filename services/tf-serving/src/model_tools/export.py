"""Keras model -> ``<out>/<name>/<version>/`` SavedModel that TF Serving can load.

The export fixes the model's input contract once (``serving_contract.model``):

- ``serving_default`` takes ``image``, uint8 RGB ``[batch, H, W, 3]`` already resized,
  normalises it in the graph with the model's ``preprocess_input`` mode, and returns
  ``logits`` or ``probabilities`` plus ``classes`` (the labels, one row per image);
- ``preprocessed`` is the Keras model as trained: float32 input already preprocessed,
  keyed by the Keras input and output layer names (what the course's notebook sends).

Next to ``saved_model.pb``: ``manifest.json`` and warmup requests for both signatures in
``assets.extra/``; ``<out>/models.config`` lists every exported model for TF Serving. The
version directory appears atomically (written under a temporary name and renamed), so a
TF Serving instance watching ``<out>`` never loads half an export.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from model_tools.errors import ExportError
from model_tools.keras_loader import LoadedModel, load_model
from model_tools.manifest import Manifest, SignatureSpec, TensorSpec
from model_tools.preprocessing import AUTO, choose_mode, normalise
from model_tools.serving_config import write_model_config
from model_tools.warmup import DEFAULT_BATCH_SIZES, write_warmup
from serving_contract.model import (
    CLASSES_OUTPUT,
    IMAGE_INPUT,
    LOGITS_OUTPUT,
    PREPROCESSED_SIGNATURE,
    PROBABILITIES_OUTPUT,
    SIGNATURE,
)

OUTPUT_KINDS = ("auto", "logits", "probabilities")


@dataclass(frozen=True)
class ExportRequest:
    model_path: Path
    out_dir: Path
    model_name: str
    version: int
    class_labels: list[str]
    outputs: str = "auto"
    preprocessing: str = AUTO
    warmup_batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    overwrite: bool = False


@dataclass(frozen=True)
class _Contract:
    height: int
    width: int
    classes: int
    score_output: str  # logits or probabilities
    preprocessing: str


def _check(request: ExportRequest, model: LoadedModel) -> _Contract:
    """The serving contract, or an ExportError saying what is wrong."""
    if request.version <= 0:
        raise ExportError(f"version must be a positive integer, got {request.version}")
    if not request.model_name or "/" in request.model_name or request.model_name.startswith("."):
        raise ExportError(f"invalid model name {request.model_name!r}")
    if request.outputs not in OUTPUT_KINDS:
        raise ExportError(f"--outputs must be one of {', '.join(OUTPUT_KINDS)}")
    shape = model.input_shape
    if len(shape) != 4 or shape[3] != 3 or not all(isinstance(d, int) for d in shape[1:3]):
        raise ExportError(
            f"model input shape is {list(shape)}; expected [batch, height, width, 3] with a "
            "fixed height and width"
        )
    out = model.output_shape
    if len(out) != 2 or not isinstance(out[1], int):
        raise ExportError(f"model output shape is {list(out)}; expected [batch, classes]")
    classes = out[1]
    if len(request.class_labels) != classes:
        raise ExportError(
            f"{len(request.class_labels)} class labels given but the model has {classes} outputs"
        )
    if len(set(request.class_labels)) != len(request.class_labels):
        raise ExportError("class labels must be unique")
    if request.outputs == "auto":
        if model.ends_in_softmax is None:
            raise ExportError(
                "cannot tell whether the model outputs logits or probabilities: "
                "pass --outputs logits or --outputs probabilities"
            )
        logits = not model.ends_in_softmax
    else:
        logits = request.outputs == "logits"
    return _Contract(
        height=int(shape[1]),  # type: ignore[arg-type]
        width=int(shape[2]),  # type: ignore[arg-type]
        classes=classes,
        score_output=LOGITS_OUTPUT if logits else PROBABILITIES_OUTPUT,
        preprocessing=choose_mode(
            request.preprocessing, model.layer_names, model.layer_classes, model.preprocessing
        ),
    )


def export(request: ExportRequest) -> Path:
    """Write the version directory and return its path."""
    model = load_model(request.model_path)
    contract = _check(request, model)
    model_dir = request.out_dir / request.model_name
    version_dir = model_dir / str(request.version)
    if version_dir.exists() and not request.overwrite:
        raise ExportError(f"{version_dir} exists; pick a new --version (or --overwrite)")
    staging = model_dir / f".tmp-{request.version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    model_dir.mkdir(parents=True, exist_ok=True)
    try:
        exported_with = _save(model, staging, contract, request.class_labels)
        write_warmup(
            staging,
            model_name=request.model_name,
            inputs={
                SIGNATURE: (IMAGE_INPUT, "uint8"),
                PREPROCESSED_SIGNATURE: (model.input_name, "float32"),
            },
            height=contract.height,
            width=contract.width,
            batch_sizes=request.warmup_batch_sizes,
        )
        _manifest(request, model, contract, exported_with).write(staging)
        if version_dir.exists():
            shutil.rmtree(version_dir)
        os.replace(staging, version_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_model_config(request.out_dir)
    return version_dir


def _manifest(
    request: ExportRequest, model: LoadedModel, contract: _Contract, exported_with: str
) -> Manifest:
    image = [None, contract.height, contract.width, 3]
    scores = TensorSpec("float32", [None, contract.classes])
    return Manifest(
        model_name=request.model_name,
        version=request.version,
        signatures={
            SIGNATURE: SignatureSpec(
                inputs={IMAGE_INPUT: TensorSpec("uint8", image)},
                outputs={
                    contract.score_output: scores,
                    CLASSES_OUTPUT: TensorSpec("string", [None, contract.classes]),
                },
            ),
            PREPROCESSED_SIGNATURE: SignatureSpec(
                inputs={model.input_name: TensorSpec("float32", image)},
                outputs={model.output_name: scores},
            ),
        },
        class_labels=list(request.class_labels),
        outputs_are_logits=contract.score_output == LOGITS_OUTPUT,
        preprocessing=contract.preprocessing,
        source=request.model_path.name,
        loaded_with=model.loaded_with,
        exported_with=exported_with,
    )


def _save(model: LoadedModel, path: Path, contract: _Contract, labels: list[str]) -> str:
    """Write the SavedModel with both signatures; returns the TensorFlow that wrote it.

    Keras's ExportArchive does the writing: it finds every variable the signatures use,
    whichever Keras (or none) built the model, and writes a SavedModel that TF Serving's
    session loader restores whole (a tf.Module holding a Keras 3 model does not: "Could
    not find variable predictions/bias").
    """
    import keras
    import tensorflow as tf

    image_shape = [None, contract.height, contract.width, 3]
    label_row = tf.constant(labels, dtype=tf.string)[tf.newaxis, :]

    def serve(image: tf.Tensor) -> dict[str, tf.Tensor]:
        scores = tf.cast(model.call(normalise(image, contract.preprocessing)), tf.float32)
        classes = tf.tile(label_row, [tf.shape(scores)[0], 1])
        return {contract.score_output: scores, CLASSES_OUTPUT: classes}

    def preprocessed(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return {model.output_name: tf.cast(model.call(inputs), tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(model.keepalive)
    archive.add_endpoint(
        SIGNATURE, serve, input_signature=[tf.TensorSpec(image_shape, tf.uint8, IMAGE_INPUT)]
    )
    archive.add_endpoint(
        PREPROCESSED_SIGNATURE,
        preprocessed,
        input_signature=[tf.TensorSpec(image_shape, tf.float32, model.input_name)],
    )
    archive.write_out(str(path), verbose=False)
    return f"tensorflow {tf.__version__}"
