"""What the served model wants and returns, read from its signature (GetModelMetadata).

An export from ``model_tools`` carries its whole contract (``serving_contract.model``): a uint8
image input of a fixed size, a score output whose name says logits or probabilities, and a
``classes`` output with the labels. So the gateway needs no per-model settings.

Explicit settings (``IMAGE_SIZE``, ``PREPROCESSING``, ``CLASS_LABELS``,
``OUTPUT_ACTIVATION``, tensor names) exist for models exported some other way: they fill
in what a signature does not say. Where the signature does say, a setting must agree with
it, and one that contradicts it (another size, a second normalisation, softmax over
probabilities, labels besides the model's own) is a ``model_misconfigured`` error that
``/readyz`` reports, never a silently wrong answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway._proto.tensorflow.core.framework import types_pb2
from gateway._proto.tensorflow.core.protobuf import meta_graph_pb2
from gateway._proto.tensorflow_serving.apis import get_model_metadata_pb2
from gateway.failures import Failure
from gateway.model_errors import unusable_answer
from gateway.settings import ModelSettings
from gateway.tensors import dims, dtype_name
from serving_contract.model import ACTIVATION_BY_OUTPUT, CLASSES_OUTPUT

_SCORE_DTYPES = (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_HALF)
_INPUT_DTYPES = {types_pb2.DT_UINT8: "uint8", types_pb2.DT_FLOAT: "float32"}


@dataclass(frozen=True)
class ServingSignature:
    """How to call the model and read its answer."""

    input_name: str
    input_dtype: str  # uint8: send pixels; float32: send preprocess_input(pixels)
    height: int
    width: int
    preprocessing: str | None  # the gateway-side mode, for float32 inputs only
    score_output: str
    activation: str  # softmax (logits) or none (probabilities)
    classes_output: str | None  # the labels output, unless CLASS_LABELS overrides it
    class_count: int | None  # from the score output's shape, when the model says

    @property
    def outputs(self) -> list[str]:
        return [self.score_output] + ([self.classes_output] if self.classes_output else [])


def _misconfigured(message: str) -> Failure:
    return Failure("model_misconfigured", message)


def _pick(
    tensors: Mapping[str, meta_graph_pb2.TensorInfo],
    candidates: Sequence[str],
    configured: str | None,
    kind: str,
    setting: str,
) -> str:
    if configured is not None:
        if configured not in tensors:
            raise _misconfigured(
                f"{setting}={configured!r} is not a signature {kind}; the model has "
                f"{sorted(tensors)}"
            )
        return configured
    if len(candidates) != 1:
        raise _misconfigured(
            f"the signature has {kind}s {sorted(candidates)}; set {setting} to choose one"
        )
    return candidates[0]


def parse_signature(
    response: get_model_metadata_pb2.GetModelMetadataResponse, settings: ModelSettings
) -> ServingSignature:
    """The contract of ``settings.signature_name``, or ``model_misconfigured`` saying why
    the model and the settings do not fit."""
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    if "signature_def" not in response.metadata or not response.metadata["signature_def"].Unpack(
        sig_map
    ):
        raise unusable_answer("model metadata has no signature_def")
    if settings.signature_name not in sig_map.signature_def:
        served = sorted(key for key in sig_map.signature_def if not key.startswith("__"))
        raise _misconfigured(
            f"model {settings.name!r} has no signature {settings.signature_name!r}; it has {served}"
        )
    sig = sig_map.signature_def[settings.signature_name]

    input_name = _pick(
        sig.inputs, list(sig.inputs), settings.input_name, "input", "MODEL_INPUT_NAME"
    )
    info = sig.inputs[input_name]
    if info.dtype not in _INPUT_DTYPES:
        raise _misconfigured(
            f"model input {input_name!r} is {dtype_name(info.dtype)}; the gateway sends "
            "images as uint8 pixels or float32"
        )
    input_dtype = _INPUT_DTYPES[info.dtype]
    shape = dims(info.tensor_shape)
    if len(shape) not in (0, 4) or (len(shape) == 4 and shape[3] not in (-1, 3)):
        raise _misconfigured(
            f"model input {input_name!r} has shape {list(shape)}; expected "
            "[batch, height, width, 3]"
        )
    height, width = _size(shape, settings.image_size, input_name)
    preprocessing = _preprocessing(input_dtype, settings.preprocessing, input_name)

    scores = [
        name
        for name, tensor in sig.outputs.items()
        if name != CLASSES_OUTPUT and tensor.dtype in _SCORE_DTYPES
    ]
    score_output = _pick(sig.outputs, scores, settings.output_name, "output", "MODEL_OUTPUT_NAME")
    if score_output not in scores:
        raise _misconfigured(
            f"MODEL_OUTPUT_NAME={score_output!r} is not a score output (float "
            f"[batch, classes]); the model's score outputs are {sorted(scores)}"
        )
    score_shape = dims(sig.outputs[score_output].tensor_shape)
    class_count = score_shape[-1] if score_shape and score_shape[-1] > 0 else None
    activation = _activation(score_output, settings.output_activation)
    classes_output = _labels(sig, settings, class_count, score_output)
    return ServingSignature(
        input_name=input_name,
        input_dtype=input_dtype,
        height=height,
        width=width,
        preprocessing=preprocessing,
        score_output=score_output,
        activation=activation,
        classes_output=classes_output,
        class_count=class_count,
    )


def _activation(score_output: str, configured: str | None) -> str:
    said = ACTIVATION_BY_OUTPUT.get(score_output)
    if configured is not None and said is not None and configured != said:
        holds = "logits" if said == "softmax" else "probabilities"
        raise _misconfigured(
            f"OUTPUT_ACTIVATION={configured} contradicts the model: its output "
            f"{score_output!r} holds {holds} (OUTPUT_ACTIVATION={said}); unset OUTPUT_ACTIVATION"
        )
    activation = configured or said
    if activation is None:
        raise _misconfigured(
            f"cannot tell whether output {score_output!r} holds logits or probabilities; "
            "set OUTPUT_ACTIVATION (softmax or none)"
        )
    return activation


def _labels(
    sig: meta_graph_pb2.SignatureDef,
    settings: ModelSettings,
    class_count: int | None,
    score_output: str,
) -> str | None:
    """The output that carries the labels, or None when CLASS_LABELS gives them."""
    classes = sig.outputs.get(CLASSES_OUTPUT)
    carries_labels = classes is not None and classes.dtype == types_pb2.DT_STRING
    if settings.class_labels:
        if carries_labels:
            raise _misconfigured(
                f"model {settings.name!r} carries its own class labels (its "
                f"{CLASSES_OUTPUT!r} output), and CLASS_LABELS could only contradict them; "
                "unset CLASS_LABELS (re-export with --labels to change them)"
            )
        if class_count is not None and class_count != len(settings.class_labels):
            raise _misconfigured(
                f"model output {score_output!r} has {class_count} classes but "
                f"{len(settings.class_labels)} class labels are configured (CLASS_LABELS)"
            )
        return None
    if not carries_labels:
        raise _misconfigured(
            f"model {settings.name!r} has no {CLASSES_OUTPUT!r} output with its class labels; "
            "re-export it with `model_tools export` or set CLASS_LABELS"
        )
    return CLASSES_OUTPUT


def _size(
    shape: tuple[int, ...], configured: tuple[int, int] | None, input_name: str
) -> tuple[int, int]:
    known = (shape[1], shape[2]) if len(shape) == 4 and shape[1] > 0 and shape[2] > 0 else None
    if configured is not None:
        if known is not None and known != configured:
            raise _misconfigured(
                f"model input {input_name!r} is {known[0]}x{known[1]} but IMAGE_SIZE is "
                f"{configured[0]}x{configured[1]}"
            )
        return configured
    if known is None:
        raise _misconfigured(
            f"model input {input_name!r} has no fixed height and width; set IMAGE_SIZE"
        )
    return known


def _preprocessing(input_dtype: str, configured: str | None, input_name: str) -> str | None:
    if input_dtype == "uint8":
        if configured not in (None, "none"):
            raise _misconfigured(
                f"model input {input_name!r} takes uint8 pixels and normalises them itself, "
                f"but PREPROCESSING={configured} would normalise them twice; unset it"
            )
        return None
    if configured is None:
        raise _misconfigured(
            f"model input {input_name!r} takes preprocessed float32 tensors; set "
            "PREPROCESSING to the model's preprocess_input mode (tf, torch, caffe, none), "
            "or re-export it with `model_tools export`, which moves that into the model"
        )
    return configured
