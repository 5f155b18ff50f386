"""The exported model the stack deploys: found on disk before anything is created.

Only its name and newest version matter here: everything the gateway needs to know about
the model travels in the model's own serving signature.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from infra.config import ConfigError
from infra.config_sections import ModelConfig
from infra.project import PROJECT

EXPORT_KEY = f"{PROJECT}:model.exportDir"


@dataclass(frozen=True)
class ModelExport:
    name: str
    version: int
    path: Path  # <exportDir>, holding models.config and <name>/<version>/


def _versions(model_dir: Path) -> list[int]:
    return sorted(
        int(p.name)
        for p in model_dir.glob("*")
        if p.name.isdigit() and (p / "saved_model.pb").is_file()
    )


def find_export(model: ModelConfig) -> ModelExport:
    """The newest exported version of ``model.name``, or of the only model exported;
    ConfigError when there is none (or it is ambiguous)."""
    root = model.export_path
    names = sorted(p.name for p in root.glob("*") if p.is_dir() and _versions(p))
    if model.name is not None:
        names = [n for n in names if n == model.name]
    if not names:
        wanted = f"{model.name!r}" if model.name else "a model"
        raise ConfigError(
            f"{EXPORT_KEY}: no exported version of {wanted} under {root} "
            "(expected <name>/<version>/saved_model.pb); run `make model`"
        )
    if len(names) > 1:
        raise ConfigError(
            f"{PROJECT}:model.name: {root} holds several models ({', '.join(names)}); "
            "say which one to serve"
        )
    [name] = names
    version = _versions(root / name)[-1]
    manifest_path = root / name / str(version) / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        exported_name, exported_version = manifest["model_name"], int(manifest["version"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{EXPORT_KEY}: {manifest_path} is missing or invalid ({exc}); "
            "re-export with `make model`"
        ) from None
    if (exported_name, exported_version) != (name, version):
        raise ConfigError(
            f"{EXPORT_KEY}: {manifest_path} describes {exported_name!r} version "
            f"{exported_version}, not {name!r} version {version}; re-export with `make model`"
        )
    if not (root / "models.config").is_file():
        raise ConfigError(
            f"{EXPORT_KEY}: {root} has no models.config (TF Serving's model list); "
            "re-export with `make model`"
        )
    return ModelExport(name, version, root)
