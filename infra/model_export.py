"""The exported model the stack deploys: found on disk before anything is created."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from infra.config import ConfigError, ModelConfig


@dataclass(frozen=True)
class ModelExport:
    name: str
    version: int
    path: Path  # <exportDir>, holding <name>/<version>/
    class_labels: tuple[str, ...]
    outputs_are_logits: bool


def find_export(model: ModelConfig) -> ModelExport:
    """The newest exported version of ``model``; ConfigError when there is none."""
    model_dir = model.export_path / model.name
    versions = (
        sorted(
            int(p.name)
            for p in model_dir.glob("*")
            if p.name.isdigit() and (p / "saved_model.pb").is_file()
        )
        if model_dir.is_dir()
        else []
    )
    if not versions:
        raise ConfigError(
            f"clothing-serving:model.exportDir: no exported version of {model.name!r} under "
            f"{model.export_path} (expected {model.name}/<version>/saved_model.pb); "
            "run `make model`"
        )
    version = versions[-1]
    manifest_path = model_dir / str(version) / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        labels = tuple(str(label) for label in manifest["class_labels"])
        logits = bool(manifest["outputs_are_logits"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"clothing-serving:model.exportDir: {manifest_path} is missing or invalid ({exc}); "
            "re-export with `python -m model_tools export`"
        ) from None
    if manifest.get("model_name") != model.name:
        raise ConfigError(
            f"clothing-serving:model.name: {model.name!r} but {manifest_path} is for "
            f"{manifest.get('model_name')!r}"
        )
    return ModelExport(model.name, version, model.export_path, labels, logits)
