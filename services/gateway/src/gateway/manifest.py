"""Reader for the export manifest written by ``model_tools export`` (``manifest.json``).

The gateway uses it, when ``MODEL_MANIFEST`` is set, for defaults that describe the model:
class labels in output order, tensor names, input size and whether outputs are logits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPPORTED_FORMAT = 1


class ManifestError(ValueError):
    pass


@dataclass(frozen=True)
class ModelManifest:
    model_name: str
    signature_name: str
    input_name: str
    input_size: tuple[int, int]
    output_name: str
    class_labels: tuple[str, ...]
    outputs_are_logits: bool


def _get(data: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        raise ManifestError(f"{where}: '{key}' missing or not a {kind.__name__}")
    return value


def load_manifest(path: str | Path) -> ModelManifest:
    where = str(path)
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read {where}: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: not a JSON object")
    if data.get("format") != SUPPORTED_FORMAT:
        raise ManifestError(f"{where}: unsupported format {data.get('format')!r}")
    inp = _get(data, "input", dict, where)
    out = _get(data, "output", dict, where)
    shape = _get(inp, "shape", list, where + " input")
    if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape[1:3]):
        raise ManifestError(f"{where}: input shape must be [batch, height, width, channels]")
    labels = _get(data, "class_labels", list, where)
    if not labels or not all(isinstance(label, str) for label in labels):
        raise ManifestError(f"{where}: class_labels must be a non-empty list of strings")
    return ModelManifest(
        model_name=_get(data, "model_name", str, where),
        signature_name=_get(data, "signature_name", str, where),
        input_name=_get(inp, "name", str, where + " input"),
        input_size=(shape[1], shape[2]),
        output_name=_get(out, "name", str, where + " output"),
        class_labels=tuple(labels),
        outputs_are_logits=_get(data, "outputs_are_logits", bool, where),
    )
