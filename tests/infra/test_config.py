"""Bad stack configuration fails before any resource, naming the key and what is allowed."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from infra.config import ConfigError, parse_config, parse_stack_file
from tests.infra.conftest import fake_export, with_export
from tests.infra.harness import run_stack, stack_config

PREFIX = "clothing-serving:"


def _values(stack: str) -> dict[str, Any]:
    return {
        k.removeprefix(PREFIX): v for k, v in stack_config(stack).items() if k.startswith(PREFIX)
    }


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_committed_stacks_are_valid(stack: str) -> None:
    cfg = parse_stack_file(stack)
    assert cfg.model.on_gpu
    assert cfg.region == "us-east-1"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["clusterVersion"], "1.20", "clusterVersion: '1.20' is not one of 1.31"),
        (["natGateways"], "many", "natGateways: Input should be 'single' or 'onePerAz'"),
        (["availabilityZones"], 1, "availabilityZones: Input should be greater than or equal to 2"),
        (
            ["gpuNodes", "capacityType"],
            "CHEAP",
            "gpuNodes.capacityType: Input should be 'ON_DEMAND' or 'SPOT'",
        ),
        (
            ["gpuNodes", "instanceTypes"],
            ["t3.large"],
            "gpuNodes.instanceTypes: 't3.large' is not a GPU instance type",
        ),
        (
            ["gpuNodes", "amiType"],
            "AL2_x86_64_GPU",
            "gpuNodes.amiType: Input should be 'AL2023_x86_64_NVIDIA' or 'BOTTLEROCKET_x86_64_NVIDIA'",
        ),
        (["cpuNodes", "minSize"], 5, "cpuNodes: need minSize <= desiredSize <= maxSize"),
        (
            ["gateway", "replicas"],
            0,
            "gateway.replicas: Input should be greater than or equal to 1",
        ),
        (["gateway", "replicas"], 5, "gateway: need minReplicas <= replicas <= maxReplicas"),
        (
            ["tfServing", "maxReplicas"],
            9,
            "tfServing.maxReplicas (9) needs one GPU node each, but gpuNodes.maxSize is",
        ),
        (
            ["publicAccessCidrs"],
            ["10.0.0.300/32"],
            "publicAccessCidrs: '10.0.0.300/32' is not a CIDR block",
        ),
        (["vpcCidr"], "8.8.0.0/16", "vpcCidr: '8.8.0.0/16' must be a private IPv4 block"),
        (["model", "name"], "Clothing Model!", "model.name: String should match pattern"),
        (["gpuNodes", "spot"], True, "gpuNodes.spot: Extra inputs are not permitted"),
    ],
)
def test_bad_values_name_the_key(path: list[str], value: Any, message: str) -> None:
    values = copy.deepcopy(_values("dev"))
    target = values
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ConfigError) as info:
        parse_config(values, stack="dev", region="us-east-1")
    assert f"{PREFIX}{message}" in str(info.value)


def test_missing_keys_and_region() -> None:
    with pytest.raises(ConfigError, match=r"clothing-serving:gpuNodes: Field required"):
        parse_config(
            {k: v for k, v in _values("dev").items() if k != "gpuNodes"},
            stack="dev",
            region="us-east-1",
        )
    with pytest.raises(ConfigError, match="aws:region: required"):
        parse_config(_values("dev"), stack="dev", region=None)


def test_program_declares_nothing_with_bad_config(tmp_path: Path) -> None:
    config = with_export("dev", fake_export(tmp_path))
    config[f"{PREFIX}natGateways"] = "many"
    with pytest.raises(Exception, match="natGateways"):
        run_stack("dev", config)


def test_program_requires_an_exported_model(tmp_path: Path) -> None:
    config = with_export("dev", tmp_path)  # empty: nothing exported
    with pytest.raises(
        Exception, match=r"model.exportDir: no exported version of a model.*make model"
    ):
        run_stack("dev", config)


def test_the_served_model_is_found_in_the_export(tmp_path: Path) -> None:
    from infra.config import ModelConfig
    from infra.model_export import find_export

    fake_export(tmp_path, "shoes", version=2)
    found = find_export(ModelConfig(exportDir=str(tmp_path)))
    assert (found.name, found.version) == ("shoes", 2)
    fake_export(tmp_path, "hats", version=1)
    with pytest.raises(ConfigError, match="several models"):
        find_export(ModelConfig(exportDir=str(tmp_path)))
    assert find_export(ModelConfig(exportDir=str(tmp_path), name="hats")).name == "hats"
    with pytest.raises(ConfigError, match="no exported version of 'bags'"):
        find_export(ModelConfig(exportDir=str(tmp_path), name="bags"))


def test_entry_point_reports_bad_config_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`infra/__main__.py` (what `pulumi up` runs) turns a ConfigError into a logged error
    and exit status 1."""
    import runpy

    import pulumi

    from tests.infra.harness import ROOT, RecordingMocks

    config = with_export("dev", fake_export(tmp_path))
    config[f"{PREFIX}gpuNodes"] = {**config[f"{PREFIX}gpuNodes"], "capacityType": "CHEAP"}
    pulumi.runtime.set_all_config(
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
    )
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="clothing-serving", stack="dev", preview=False)
    logged: list[str] = []
    monkeypatch.setattr(pulumi.log, "error", lambda msg, *a, **k: logged.append(msg))
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(ROOT / "infra" / "__main__.py"), run_name="__main__")
    assert info.value.code == 1
    assert "clothing-serving:gpuNodes.capacityType" in logged[0]
    assert mocks.resources == []
