"""The model's input normalisation, moved into the SavedModel.

Keras image classifiers expect their inputs run through ``preprocess_input`` of the
``keras.applications`` family they were built on, and the families differ: ``tf`` scales to
[-1, 1] (Xception, MobileNetV2, InceptionV3, ResNetV2), ``caffe`` flips RGB to BGR and
subtracts the ImageNet means (ResNet50, VGG), ``torch`` scales to [0, 1] and standardises
(DenseNet), and ``none`` leaves 0-255 alone because the model normalises inside
(EfficientNet, ConvNeXt, MobileNetV3). Served with the wrong one, a model answers with
confident, wrong probabilities. So the export decides the mode once, from the model's own
layer names where a ``keras.applications`` base is recognised, else from ``--preprocessing``,
and writes the arithmetic into the serving graph; the gateway then only sends pixels.

The families that normalise inside do so only when built with ``include_preprocessing=True``
(their default): built without it, they have no ``Rescaling``/``Normalization`` layer and
were trained on inputs normalised outside, in a way their names do not tell. Then the
export asks for the mode rather than guess.

The operations are Keras's, in float32 and in the same order, so the served model computes
what ``model.predict(preprocess_input(x))`` computes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from model_tools.errors import ExportError
from serving_contract.model import CAFFE_MEAN_RGB, PREPROCESSING_MODES, TORCH_MEAN, TORCH_STD

AUTO = "auto"
# keras.applications model names (Keras 3 and tf_keras spell a few differently) -> mode.
_APPLICATIONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), mode)
    for pattern, mode in (
        (r"xception", "tf"),
        (r"inception_v3", "tf"),
        (r"inception_resnet_v2", "tf"),
        (r"mobilenet_\d\.\d\d_\d+", "tf"),  # MobileNet (v1)
        (r"mobilenetv2_\d\.\d\d_\d+", "tf"),
        (r"nasnet(_mobile|_large)?", "tf"),
        (r"resnet(50|101|152)v2", "tf"),
        (r"resnet(50|101|152)", "caffe"),
        (r"vgg(16|19)", "caffe"),
        (r"densenet(121|169|201)", "torch"),
        (r"efficientnet(b[0-7]|v2-(b[0-3]|s|m|l))", "none"),
        (r"convnext_(tiny|small|base|large|xlarge)", "none"),
        (r"mobilenetv3(small|large)", "none"),
        (r"regnet[xy]\d{3}", "none"),
    )
)


def detect_mode(layer_names: Iterable[str]) -> str | None:
    """The ``preprocess_input`` mode of the ``keras.applications`` models among
    ``layer_names``, or None when there is none or they disagree."""
    modes = {
        mode
        for name in layer_names
        for pattern, mode in _APPLICATIONS
        if pattern.fullmatch(name.lower())
    }
    return modes.pop() if len(modes) == 1 else None


# The layers with which a model normalises its own inputs (keras.layers class names).
_IN_MODEL_NORMALISATION = frozenset({"Rescaling", "Normalization"})


def choose_mode(
    requested: str,
    layer_names: Iterable[str],
    layer_classes: Iterable[str] = (),
    recorded: str | None = None,
) -> str:
    """``requested`` unless it is ``auto``; then what an earlier export recorded, or what
    the layer names (and, for the families that normalise inside, the layer classes) say,
    or an error."""
    if requested != AUTO:
        if requested not in PREPROCESSING_MODES:
            raise ExportError(
                f"--preprocessing must be one of {AUTO}, {', '.join(PREPROCESSING_MODES)}"
            )
        return requested
    if recorded in PREPROCESSING_MODES:
        return recorded
    detected = detect_mode(layer_names)
    if detected is None:
        raise ExportError(
            "cannot tell how this model's inputs are normalised (no keras.applications base "
            "recognised): pass --preprocessing tf|torch|caffe|none, the mode of the "
            "preprocess_input the model was trained with"
        )
    if detected == "none" and not _IN_MODEL_NORMALISATION & set(layer_classes):
        raise ExportError(
            "this model's keras.applications base normalises its inputs itself only when "
            "built with include_preprocessing=True, and it has no Rescaling or Normalization "
            "layer: pass --preprocessing tf|torch|caffe|none, the normalisation its inputs "
            "were trained with"
        )
    return detected


def normalise(pixels: Any, mode: str) -> Any:
    """uint8 RGB ``[batch, H, W, 3]`` -> the float32 tensor the Keras model was trained on."""
    import tensorflow as tf

    x = tf.cast(pixels, tf.float32)
    if mode == "tf":
        return x / tf.constant(127.5, tf.float32) - tf.constant(1.0, tf.float32)
    if mode == "torch":
        x = x / tf.constant(255.0, tf.float32)
        return (x - tf.constant(TORCH_MEAN, tf.float32)) / tf.constant(TORCH_STD, tf.float32)
    if mode == "caffe":
        bgr_mean = tf.constant(CAFFE_MEAN_RGB[::-1], tf.float32)
        return tf.reverse(x, axis=[-1]) - bgr_mean
    if mode == "none":
        return x
    raise ValueError(f"unknown preprocessing mode {mode!r}")
