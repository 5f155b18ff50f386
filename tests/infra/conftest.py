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


# Two keys at once, as during a rotation.
API_KEYS = {
    "ci": "c2VjcmV0LWtleS1mb3ItdGhlLWNpLXJ1bm5lcg==",
    "mobile-app": "bW9iaWxlLWFwcC1rZXktbnVtYmVyLXR3by0yMDI2",
}
CERTIFICATE_ARN = (
    "arn:aws:acm:us-east-1:123456789012:certificate/12345678-90ab-cdef-1234-567890abcdef"
)
# What a deployer adds to prod before its first `pulumi up` (Pulumi.prod.yaml leaves these
# to them): the networks that may reach the Kubernetes API, API keys (as secrets), TLS.
PROD_DEPLOYER = {
    "clothing-serving:publicAccessCidrs": ["203.0.113.0/24"],
    "clothing-serving:apiKeys": API_KEYS,
    "clothing-serving:allowedClientCidrs": ["198.51.100.0/24", "192.0.2.7/32"],
    "clothing-serving:tls": {
        "certificateArn": CERTIFICATE_ARN,
        "dnsName": "classify.example.com",
        "hostedZoneId": "Z0123456789ABCDEFGHIJ",
    },
}
SECRET_KEYS = ("clothing-serving:apiKeys",)


def with_export(stack: str, export_dir: Path) -> dict[str, Any]:
    config = stack_config(stack)
    config["clothing-serving:model"] = {
        **config["clothing-serving:model"],
        "exportDir": str(export_dir),
    }
    if stack == "prod":
        config.update(PROD_DEPLOYER)
    return config


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_export(tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="session")
def stacks(export_dir: Path) -> dict[str, StackRun]:
    return {
        stack: run_stack(stack, with_export(stack, export_dir), SECRET_KEYS)
        for stack in ("dev", "prod")
    }


@pytest.fixture(params=["dev", "prod"])
def run(request: pytest.FixtureRequest, stacks: dict[str, StackRun]) -> StackRun:
    return stacks[request.param]
