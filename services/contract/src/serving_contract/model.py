"""The serving contract between an exported model and the gateway.

``model_tools export`` writes SavedModels with these signature, tensor and mode names, and
the gateway reads them back from TF Serving's ``GetModelMetadata`` and ``Predict`` answers,
so a model carries its own input contract and labels and the gateway needs no per-model
settings. This module is the one place the names are spelled.

The default signature (``serving_default``) takes ``image``: uint8 RGB pixels
``[batch, height, width, 3]``, already resized, and normalises them inside the graph. It
returns ``logits`` (softmax them) or ``probabilities`` (use as they are), float32
``[batch, classes]``, and ``classes``: the class labels as strings, ``[batch, classes]``
(one row per image, so TF Serving's batching can split it like any other output).

A second signature, ``preprocessed``, is the Keras model as it was trained: float32 input
already run through ``preprocess_input``, keyed by the Keras layer names (what the course's
notebook client sends).
"""

from __future__ import annotations

# The name TF Serving serves an export under when none is given (`export --name`).
DEFAULT_MODEL_NAME = "clothing-model"
SIGNATURE = "serving_default"
PREPROCESSED_SIGNATURE = "preprocessed"
IMAGE_INPUT = "image"
CLASSES_OUTPUT = "classes"
LOGITS_OUTPUT = "logits"
PROBABILITIES_OUTPUT = "probabilities"
# What the gateway does to a score output, by its name in the signature.
ACTIVATION_BY_OUTPUT = {LOGITS_OUTPUT: "softmax", PROBABILITIES_OUTPUT: "none"}

# keras.applications ``preprocess_input`` modes ("none": the model normalises inside,
# as EfficientNet, ConvNeXt and MobileNetV3 do).
PREPROCESSING_MODES = ("tf", "torch", "caffe", "none")
# keras.applications.imagenet_utils constants, RGB order (caffe subtracts them in BGR).
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)
