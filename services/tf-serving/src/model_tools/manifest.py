"""The export manifest (format 1): what the gateway needs to know about a model version.

Read by ``gateway.manifest`` (``MODEL_MANIFEST``); keep the two in step.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

FORMAT = 1
FILENAME = "manifest.json"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: list[int | None]
    dtype: str


@dataclass(frozen=True)
class Manifest:
    model_name: str
    version: int
    signature_name: str
    input: TensorSpec
    output: TensorSpec
    class_labels: list[str]
    outputs_are_logits: bool
    preprocessing: dict[str, str]
    source: str
    format: int = FORMAT

    def write(self, version_dir: Path) -> Path:
        path = version_dir / FILENAME
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path
