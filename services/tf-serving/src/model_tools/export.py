"""Keras model -> ``<out>/<name>/<version>/`` SavedModel that TF Serving can load.

The ``serving_default`` signature always has one input named ``image``
(float32 ``[batch, height, width, 3]``, already preprocessed) and one output named
``logits`` or ``probabilities`` (float32 ``[batch, classes]``), whatever the Keras layers
were called. Next to ``saved_model.pb``: ``manifest.json`` (see ``model_tools.manifest``)
and warmup requests in ``assets.extra/``. The version directory appears atomically (it is
written under a temporary name and renamed), so a TF Serving instance watching ``<out>``
never loads half an export.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from model_tools.errors import ExportError
from model_tools.keras_loader import LoadedModel, load_model
from model_tools.manifest import Manifest, TensorSpec
from model_tools.warmup import DEFAULT_BATCH_SIZES, write_warmup

INPUT_NAME = "image"
SIGNATURE_NAME = "serving_default"
OUTPUT_KINDS = ("auto", "logits", "probabilities")


@dataclass(frozen=True)
class ExportRequest:
    model_path: Path
    out_dir: Path
    model_name: str
    version: int
    class_labels: list[str]
    outputs: str = "auto"
    preprocessing: str = "tf"
    resize_filter: str = "nearest"
    warmup_batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    overwrite: bool = False


def _check(request: ExportRequest, model: LoadedModel) -> tuple[int, int, int, bool]:
    """(height, width, classes, outputs_are_logits) or an ExportError saying what is wrong."""
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
    return int(shape[1]), int(shape[2]), classes, logits  # type: ignore[arg-type]


def export(request: ExportRequest) -> Path:
    """Write the version directory and return its path."""
    model = load_model(request.model_path)
    height, width, classes, logits = _check(request, model)
    model_dir = request.out_dir / request.model_name
    version_dir = model_dir / str(request.version)
    if version_dir.exists() and not request.overwrite:
        raise ExportError(f"{version_dir} exists; pick a new --version (or --overwrite)")
    staging = model_dir / f".tmp-{request.version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    model_dir.mkdir(parents=True, exist_ok=True)
    output_name = "logits" if logits else "probabilities"
    try:
        _save(model, staging, height, width, output_name)
        write_warmup(
            staging,
            model_name=request.model_name,
            signature_name=SIGNATURE_NAME,
            input_name=INPUT_NAME,
            height=height,
            width=width,
            batch_sizes=request.warmup_batch_sizes,
        )
        Manifest(
            model_name=request.model_name,
            version=request.version,
            signature_name=SIGNATURE_NAME,
            input=TensorSpec(INPUT_NAME, [None, height, width, 3], "float32"),
            output=TensorSpec(output_name, [None, classes], "float32"),
            class_labels=list(request.class_labels),
            outputs_are_logits=logits,
            preprocessing={"mode": request.preprocessing, "resize_filter": request.resize_filter},
            source=request.model_path.name,
        ).write(staging)
        if version_dir.exists():
            shutil.rmtree(version_dir)
        os.replace(staging, version_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return version_dir


def _save(model: LoadedModel, path: Path, height: int, width: int, output_name: str) -> None:
    import tensorflow as tf

    spec = tf.TensorSpec([None, height, width, 3], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])  # type: ignore[untyped-decorator]
    def serve(image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {output_name: tf.cast(model.call(image), tf.float32)}

    module = tf.Module()
    module.model = model.keepalive  # tracks the variables
    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={SIGNATURE_NAME: serve})
