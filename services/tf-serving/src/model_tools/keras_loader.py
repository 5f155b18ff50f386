"""Load a trained model with the Keras that wrote it.

Keras 3 cannot read what Keras 2 wrote: the course's ``xception_v4_large_08_0.894.h5``
(TensorFlow 2.x, an Xception base nested in the classifier) fails with
"Unrecognized keyword arguments passed to SeparableConv2D: {'groups': 1, ...}". So the file
itself decides:

- ``.h5``: the ``keras_version`` attribute Keras writes at the file's root;
- ``.keras``: ``keras_version`` in the archive's ``metadata.json``;
- a SavedModel directory: ``keras_metadata.pb`` is written only by Keras 2; without it the
  SavedModel is plain TensorFlow and its ``serving_default`` signature (or, for an earlier
  ``model_tools`` export, its ``preprocessed`` one) is called as it is.

Keras 2 files load with ``tf_keras`` (Keras 2 on PyPI, kept by the TensorFlow team for
this), everything else with Keras 3. Neither config is edited.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_tools.errors import ExportError
from model_tools.manifest import FILENAME as MANIFEST_FILE
from serving_contract.model import PREPROCESSED_SIGNATURE, SIGNATURE

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclass(frozen=True)
class LoadedModel:
    call: Callable[[Any], Any]  # float32 batch (N, H, W, 3), preprocessed -> (N, classes)
    input_shape: tuple[int | None, ...]
    output_shape: tuple[int | None, ...]
    input_name: str  # the Keras names, kept for the `preprocessed` signature
    output_name: str
    layer_names: tuple[str, ...]  # the model's and every nested layer's name
    layer_classes: frozenset[str]  # their class names (e.g. Rescaling, Normalization)
    ends_in_softmax: bool | None  # None: cannot tell (plain SavedModel)
    preprocessing: str | None  # recorded by the model_tools export it was loaded from
    loaded_with: str  # e.g. "tf_keras 2.21.0", for the manifest
    keepalive: object  # the object whose variables `call` uses


def keras_version_of(path: Path) -> str | None:
    """The Keras version recorded in a ``.h5``/``.keras`` file, or None if it has none."""
    if path.suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as archive:
                metadata = json.loads(archive.read("metadata.json"))
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise ExportError(f"{path}: not a Keras archive ({exc})") from None
        version = metadata.get("keras_version") if isinstance(metadata, dict) else None
        return str(version) if version else None
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            version = h5.attrs.get("keras_version")
    except OSError as exc:
        raise ExportError(f"{path}: not an HDF5 model file ({exc})") from None
    if isinstance(version, bytes):
        version = version.decode()
    return str(version) if version else None


def load_model(path: Path) -> LoadedModel:
    if not path.exists():
        raise ExportError(f"model not found: {path}")
    if path.is_dir():
        if (path / "keras_metadata.pb").is_file():
            return _load_keras(path, keras2=True)
        return _load_saved_model(path)
    if path.suffix not in KERAS_SUFFIXES:
        raise ExportError(f"{path}: expected a .keras or .h5 file or a SavedModel directory")
    version = keras_version_of(path)
    if version is None:
        raise ExportError(f"{path}: the file does not say which Keras wrote it (no keras_version)")
    return _load_keras(path, keras2=not version.startswith("3."))


def _walk(layer: Any) -> Iterator[Any]:
    yield layer
    for child in getattr(layer, "layers", ()):
        yield from _walk(child)


def _load_keras(path: Path, *, keras2: bool) -> LoadedModel:
    if keras2:
        import tf_keras as keras_module
    else:
        import keras as keras_module
    label = f"{keras_module.__name__} {keras_module.__version__}"
    try:
        model = keras_module.models.load_model(path, compile=False)
    except Exception as exc:
        raise ExportError(f"cannot load {path} with {label}: {exc}") from exc
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(f"{path}: the model must have one input and one output")
    activation = getattr(model.layers[-1], "activation", None)
    layers = list(_walk(model))
    return LoadedModel(
        call=lambda x: model(x, training=False),
        input_shape=tuple(model.inputs[0].shape),
        output_shape=tuple(model.outputs[0].shape),
        input_name=str(model.inputs[0].name).split(":", 1)[0],
        output_name=model.layers[-1].name,
        layer_names=tuple(layer.name for layer in layers),
        layer_classes=frozenset(type(layer).__name__ for layer in layers),
        ends_in_softmax=(
            getattr(activation, "__name__", "") == "softmax" if activation is not None else None
        ),
        preprocessing=None,
        loaded_with=label,
        keepalive=model,
    )


def _load_saved_model(path: Path) -> LoadedModel:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise ExportError(f"cannot load SavedModel {path}: {exc}") from exc
    # A model_tools export keeps the trained model as `preprocessed`; anything else is
    # called through its serving_default.
    key = PREPROCESSED_SIGNATURE if PREPROCESSED_SIGNATURE in loaded.signatures else SIGNATURE
    signature = loaded.signatures.get(key)
    if signature is None:
        raise ExportError(f"{path}: SavedModel has no {SIGNATURE} signature")
    _, kwargs = signature.structured_input_signature
    outputs = signature.structured_outputs
    if len(kwargs) != 1 or len(outputs) != 1:
        raise ExportError(f"{path}: {key} must have one input and one output")
    [(input_name, spec)] = kwargs.items()
    [(output_name, out_spec)] = outputs.items()
    # An earlier export says how its `preprocessed` model was trained and what it returns.
    recorded = _earlier_export(path) if key == PREPROCESSED_SIGNATURE else {}
    logits = recorded.get("outputs_are_logits")
    return LoadedModel(
        call=lambda x: signature(**{input_name: x})[output_name],
        input_shape=tuple(spec.shape),
        output_shape=tuple(out_spec.shape),
        input_name=input_name,
        output_name=output_name,
        layer_names=(),
        layer_classes=frozenset(),
        ends_in_softmax=None if not isinstance(logits, bool) else not logits,
        preprocessing=recorded.get("preprocessing") if recorded else None,
        loaded_with=f"tensorflow {tf.__version__} (SavedModel)",
        keepalive=loaded,
    )


def _earlier_export(path: Path) -> dict[str, Any]:
    """The manifest a ``model_tools`` export wrote beside the SavedModel, if any."""
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}
