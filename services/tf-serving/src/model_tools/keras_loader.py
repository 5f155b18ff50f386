"""Load a trained model from a .keras file, a legacy .h5 file or a SavedModel directory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_tools.errors import ExportError


@dataclass(frozen=True)
class LoadedModel:
    call: Callable[[Any], Any]  # batch (N, H, W, 3) float32 tensor -> (N, classes) tensor
    input_shape: tuple[int | None, ...]
    output_shape: tuple[int | None, ...]
    ends_in_softmax: bool | None  # None: cannot tell (SavedModel input)
    keepalive: object  # the object whose variables `call` uses


def load_model(path: Path) -> LoadedModel:
    if not path.exists():
        raise ExportError(f"model not found: {path}")
    if path.is_dir():
        return _load_saved_model(path)
    if path.suffix not in (".keras", ".h5", ".hdf5"):
        raise ExportError(f"{path}: expected a .keras or .h5 file or a SavedModel directory")
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise ExportError(f"cannot load Keras model {path}: {exc}") from exc
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(f"{path}: the model must have one input and one output")
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    name = getattr(activation, "__name__", "")
    return LoadedModel(
        call=lambda x: model(x, training=False),
        input_shape=tuple(model.inputs[0].shape),
        output_shape=tuple(model.outputs[0].shape),
        ends_in_softmax=(name == "softmax") if activation is not None else None,
        keepalive=model,
    )


def _load_saved_model(path: Path) -> LoadedModel:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise ExportError(f"cannot load SavedModel {path}: {exc}") from exc
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise ExportError(f"{path}: SavedModel has no serving_default signature")
    _, kwargs = signature.structured_input_signature
    outputs = signature.structured_outputs
    if len(kwargs) != 1 or len(outputs) != 1:
        raise ExportError(f"{path}: serving_default must have one input and one output")
    [(input_name, spec)] = kwargs.items()
    [(output_name, out_spec)] = outputs.items()
    return LoadedModel(
        call=lambda x: signature(**{input_name: x})[output_name],
        input_shape=tuple(spec.shape),
        output_shape=tuple(out_spec.shape),
        ends_in_softmax=None,
        keepalive=loaded,
    )
