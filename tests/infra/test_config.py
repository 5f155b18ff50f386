"""Bad stack configuration fails before any resource, naming the key and what is allowed:
the schema's checks (``infra.config``) and the plan's (``infra.program.plan``: what fits)."""

from __future__ import annotations

import copy
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from infra.config import ConfigError, parse_config, parse_stack_file
from infra.eks_versions import newest_in_standard_support, support_warning
from infra.program import plan
from serving_contract.model import DEFAULT_MODEL_NAME
from tests.infra.conftest import fake_export, with_export
from tests.infra.harness import run_stack, stack_config

PREFIX = "clothing-serving:"
TODAY = date(2026, 11, 25)  # version support is checked against a fixed day here


def _values(stack: str) -> dict[str, Any]:
    return {
        k.removeprefix(PREFIX): v for k, v in stack_config(stack).items() if k.startswith(PREFIX)
    }


def test_the_local_stack_is_valid_without_aws() -> None:
    cfg = parse_stack_file("local")
    assert (cfg.target, cfg.region, cfg.on_gpu, cfg.monitored) == ("local", None, False, False)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_committed_stacks_are_valid_and_current(stack: str) -> None:
    """Valid today (the real date: CI fails when a version leaves support), on the newest
    version in standard support, with no support warning."""
    cfg = parse_stack_file(stack)
    assert cfg.model.on_gpu
    assert cfg.region == "us-east-1"
    assert cfg.cluster_version == newest_in_standard_support(date.today())
    assert support_warning(cfg.cluster_version, date.today()) is None


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["clusterVersion"], "1.20", "clusterVersion: '1.20' is not an EKS version"),
        (["natGateways"], "many", "natGateways: Input should be 'single' or 'onePerAz'"),
        (["availabilityZones"], 1, "availabilityZones: Input should be greater than or equal to 2"),
        (
            ["gpuNodes", "capacityTypes"],
            ["cheap"],
            "gpuNodes.capacityTypes.0: Input should be 'on-demand' or 'spot'",
        ),
        (
            ["gpuNodes", "instanceTypes"],
            ["t3.large"],
            "gpuNodes.instanceTypes: 't3.large' is not a GPU instance type",
        ),
        (
            ["cpuNodes", "instanceTypes"],
            ["g4dn.xlarge"],
            "cpuNodes.instanceTypes: 'g4dn.xlarge' is a GPU instance type",
        ),
        (
            ["cpuNodes", "instanceTypes"],
            ["x9.huge"],
            "cpuNodes.instanceTypes: 'x9.huge' is not an instance type this project",
        ),
        (
            ["gpuNodes", "amiFamily"],
            "al2",
            "gpuNodes.amiFamily: Input should be 'al2023' or 'bottlerocket'",
        ),
        (
            ["gateway", "minReplicas"],
            0,
            "gateway.minReplicas: Input should be greater than or equal to 1",
        ),
        (["gateway", "minReplicas"], 5, "gateway: need minReplicas <= maxReplicas"),
        (["gateway", "cpu"], "lots", "gateway.cpu: 'lots' is not a CPU quantity"),
        (  # the gateway's own start-up check, run at preview
            ["gateway", "memory"],
            "512Mi",
            "gateway: memory 512Mi is too little for the gateway: the container's memory "
            "limit (512 MiB) leaves 0 MiB per worker for decoding",
        ),
        (
            ["tfServing", "maxReplicas"],
            2,
            "tfServing.maxReplicas (2) + 1 surge pod need 3 GPUs but gpuNodes.maxGpus is 2",
        ),
        (
            ["cpuNodes", "maxVcpus"],
            6,
            "gateway.maxReplicas (3) + 1 surge pod and the monitoring pods (monitoring.enabled) may need 8 vCPUs of cpuNodes.instanceTypes, but cpuNodes.maxVcpus is 6",
        ),
        (
            ["tfServing", "memory"],
            "20Gi",
            "a tfServing pod (2 CPU, 20Gi) does not fit on g4dn.xlarge",
        ),
        (
            ["systemNodes", "instanceType"],
            "t3.micro",
            "systemNodes.instanceType t3.micro leaves",
        ),
        (
            ["publicAccessCidrs"],
            ["10.0.0.300/32"],
            "publicAccessCidrs: '10.0.0.300/32' is not a CIDR block",
        ),
        (
            ["adminPrincipalArns"],
            ["bob"],
            "adminPrincipalArns: 'bob' is not an IAM role or user ARN",
        ),
        (
            ["adminPrincipalArns"],
            ["arn:aws:sts::123456789012:assumed-role/ci-deploy/gha-42"],
            "adminPrincipalArns: 'arn:aws:sts::123456789012:assumed-role/ci-deploy/gha-42' is "
            "a role's session, which EKS access entries refuse: use the role, "
            "arn:aws:iam::123456789012:role/ci-deploy",
        ),
        (["logRetentionDays"], 10, "logRetentionDays: 10 is not a CloudWatch retention"),
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
        plan(parse_config(values, stack="dev", region="us-east-1", today=TODAY), DEFAULT_MODEL_NAME)
    assert f"{PREFIX}{message}" in str(info.value)


def test_versions_out_of_support_are_refused_and_near_the_end_warned() -> None:
    values = copy.deepcopy(_values("dev"))
    values["clusterVersion"] = "1.31"
    parse_config(values, stack="dev", region="us-east-1", today=TODAY)  # extended, still on
    with pytest.raises(
        ConfigError, match=r"clusterVersion: 1.31 left EKS extended support on 2026-11-26"
    ):
        parse_config(values, stack="dev", region="us-east-1", today=date(2026, 11, 27))
    assert "bills $0.60/h" in (support_warning("1.31", TODAY) or "")
    warning = support_warning("1.34", TODAY)  # standard support ends 2026-12-02
    assert warning and "in 7 days" in warning and "to 1.36" in warning
    assert support_warning("1.36", TODAY) is None


def test_high_availability_needs_two_of_everything() -> None:
    values = copy.deepcopy(_values("prod"))
    values["tfServing"]["minReplicas"] = 1
    with pytest.raises(ConfigError, match=r"highAvailability needs tfServing.minReplicas >= 2"):
        parse_config(values, stack="prod", region="us-east-1", today=TODAY)
    values = copy.deepcopy(_values("prod"))
    values["systemNodes"]["size"] = 1
    with pytest.raises(ConfigError, match=r"highAvailability needs systemNodes.size >= 2"):
        parse_config(values, stack="prod", region="us-east-1", today=TODAY)


def test_missing_keys_and_region() -> None:
    with pytest.raises(ConfigError, match=r"clothing-serving:gpuNodes: required \(target aws\)"):
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
    from infra.config_sections import ModelConfig
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


def test_compose_gives_the_gateway_the_memory_of_a_pod() -> None:
    """`make run` sizes the gateway's decoding budget as the cluster does."""
    from infra.gateway import POD
    from tests.support.compose import compose_services

    mem_limit = compose_services()["gateway"]["mem_limit"]
    assert mem_limit.endswith("g")
    assert int(mem_limit[:-1]) * 1024 == POD.requests.memory_mib
