"""A real deployment: `pulumi preview`, `up`, a prediction through the load balancer, and
`destroy`, on a throwaway stack with the dev settings. It needs the Pulumi CLI, a Docker
engine (the images are built by `pulumi up`), AWS credentials and an exported model, and
because it bills an AWS account it runs only when CLOTHING_CLOUD_TESTS=1."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from infra.config import ConfigError
from infra.config_sections import ModelConfig
from infra.model_export import find_export
from model_tools.cli import CLOTHING_CLASSES
from tests.infra.harness import ROOT

pytestmark = pytest.mark.cloud
FIXTURE = ROOT / "tests" / "fixtures" / "images" / "pants.jpg"


def _has_aws_credentials() -> bool:
    env = os.environ
    if (
        env.get("AWS_ACCESS_KEY_ID")
        or env.get("AWS_PROFILE")
        or env.get("AWS_WEB_IDENTITY_TOKEN_FILE")
    ):
        return True
    return (Path.home() / ".aws" / "credentials").is_file() or (
        Path.home() / ".aws" / "config"
    ).is_file()


def _docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def _skip_reason() -> str | None:
    if shutil.which("pulumi") is None:
        return "the Pulumi CLI is not installed"
    if not _docker_engine():
        return "no Docker engine: `pulumi up` builds the images"
    if not _has_aws_credentials():
        return "no AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID or ~/.aws)"
    try:
        find_export(ModelConfig())
    except ConfigError:
        return "no exported model: run `make model`"
    if os.environ.get("CLOTHING_CLOUD_TESTS") != "1":
        return "creates billable AWS resources: set CLOTHING_CLOUD_TESTS=1 to run it"
    return None


def _pulumi(*args: str, timeout: int = 3600) -> str:
    result = subprocess.run(
        ["pulumi", *args, "--non-interactive"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"pulumi {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result.stdout.strip()


@pytest.mark.timeout(4 * 3600)
def test_up_predict_destroy() -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    stack = f"it-{uuid.uuid4().hex[:8]}"
    stack_file = ROOT / f"Pulumi.{stack}.yaml"
    shutil.copyfile(ROOT / "Pulumi.dev.yaml", stack_file)
    _pulumi("stack", "init", stack)
    try:
        _pulumi("preview", "--stack", stack)
        _pulumi("up", "--yes", "--skip-preview", "--stack", stack)
        url = _pulumi("stack", "output", "gateway_url", "--stack", stack)
        deadline = time.monotonic() + 15 * 60  # NLB DNS and target registration take minutes
        while True:
            try:
                with FIXTURE.open("rb") as image:
                    response = requests.post(f"{url}/predict", files={"image": image}, timeout=30)
                if response.status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the gateway never answered 200"
            time.sleep(15)
        body = response.json()
        assert set(body["probabilities"]) == set(CLOTHING_CLASSES)
        assert abs(sum(body["probabilities"].values()) - 1) < 1e-4
    finally:
        _pulumi("destroy", "--yes", "--skip-preview", "--stack", stack)
        _pulumi("stack", "rm", "--yes", stack)
        stack_file.unlink(missing_ok=True)
