from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from model_tools.cli import CLOTHING_CLASSES
from tests.infra.harness import StackRun, run_stack, stack_config

LABELS = list(CLOTHING_CLASSES)


def fake_export(root: Path, name: str = "clothing-model", version: int = 3) -> Path:
    """The shape of a `model_tools export` on disk (the bytes of the model do not matter here)."""
    version_dir = root / name / str(version)
    version_dir.mkdir(parents=True)
    (version_dir / "saved_model.pb").write_bytes(b"not a real graph")
    (version_dir / "manifest.json").write_text(
        json.dumps({"format": 2, "model_name": name, "version": version, "class_labels": LABELS})
    )
    (root / "models.config").write_text(f'model_config_list {{ config {{ name: "{name}" }} }}')
    return root


def with_export(stack: str, export_dir: Path) -> dict[str, Any]:
    config = stack_config(stack)
    config["clothing-serving:model"] = {
        **config["clothing-serving:model"],
        "exportDir": str(export_dir),
    }
    return config


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_export(tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="session")
def stacks(export_dir: Path) -> dict[str, StackRun]:
    return {stack: run_stack(stack, with_export(stack, export_dir)) for stack in ("dev", "prod")}


@pytest.fixture(params=["dev", "prod"])
def run(request: pytest.FixtureRequest, stacks: dict[str, StackRun]) -> StackRun:
    return stacks[request.param]
