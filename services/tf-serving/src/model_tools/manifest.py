"""``manifest.json`` beside each exported version: what was exported, from what, and how.

For people and for the Pulumi program (which reads the model's name and version from it).
The gateway does not need it: everything it needs travels in the serving signature
(see ``serving_contract.model``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

FORMAT = 2
FILENAME = "manifest.json"


@dataclass(frozen=True)
class TensorSpec:
    dtype: str
    shape: list[int | None]


@dataclass(frozen=True)
class SignatureSpec:
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


@dataclass(frozen=True)
class Manifest:
    model_name: str
    version: int
    signatures: dict[str, SignatureSpec]
    class_labels: list[str]
    outputs_are_logits: bool
    preprocessing: str
    source: str
    loaded_with: str
    exported_with: str
    format: int = FORMAT

    def write(self, version_dir: Path) -> Path:
        path = version_dir / FILENAME
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path
