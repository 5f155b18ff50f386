"""The EC2 vCPU quotas are checked before anything bills (``infra.quotas``): what each
committed stack needs of them, and what ``pulumi preview``/``up`` does under mocks that
answer the quota look-ups as AWS and the provider do, from a new account's quotas to
enough of them."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import pulumi
import pytest

from infra.capacity import INSTANCE_TYPES
from infra.config import ConfigError, parse_config, parse_stack_file, stack_file
from infra.program import plan
from infra.quotas import G_AND_VT, STANDARD, Held, Need, assess, needs
from serving_contract.model import DEFAULT_MODEL_NAME
from tests.infra.conftest import SECRET_KEYS, with_export
from tests.infra.harness import EC2_QUOTAS, ENOUGH, RecordingMocks, StackRun, run_stack

PREFIX = "clothing-serving:"
G_SPOT, G_ON_DEMAND = "L-3819A6DF", "L-DB2E81BA"
STD_SPOT, STD_ON_DEMAND = "L-34B43A08", "L-1216C47A"
NAMES = {code: name for code, (name, _, _) in EC2_QUOTAS.items()}


def _needs(stack: str) -> dict[str, Need]:
    return {n.key: n for n in needs(plan(parse_stack_file(stack), DEFAULT_MODEL_NAME))}


def _ask(code: str, vcpus: int, region: str = "us-east-1") -> str:
    return (
        "aws service-quotas request-service-quota-increase --service-code ec2 "
        f"--quota-code {code} --desired-value {vcpus} --region {region}"
    )


# --- what the committed stacks need (the figures `python -m infra.cost` prints) ---


def test_dev_needs() -> None:
    need = _needs("dev")
    # one t3.medium system node, and one more while the node group rolls
    assert (need["systemNodes"].minimum, need["systemNodes"].maximum) == (4, 4)
    assert [q.code for q in need["systemNodes"].quotas] == [STD_ON_DEMAND]
    # the gateway's 1 + 1 surge pod and the monitoring pods fit one t3.large (2 vCPUs);
    # maxVcpus is 8; spot first, on-demand its fallback
    assert (need["cpuNodes"].minimum, need["cpuNodes"].maximum) == (2, 8)
    assert [q.code for q in need["cpuNodes"].quotas] == [STD_SPOT, STD_ON_DEMAND]
    # TF Serving's 1 + 1 surge pod: a GPU node each; maxGpus 2: every allowed type has 4 vCPUs
    assert (need["gpuNodes"].minimum, need["gpuNodes"].maximum) == (8, 8)
    assert [q.code for q in need["gpuNodes"].quotas] == [G_SPOT, G_ON_DEMAND]
    assert need["gpuNodes"].minimum_reason == (
        "tfServing.minReplicas 1 + 1 surge pod: 2 x g4dn.xlarge, 4 vCPUs each"
    )


def test_prod_needs() -> None:
    need = _needs("prod")
    assert (need["systemNodes"].minimum, need["systemNodes"].maximum) == (6, 6)  # 3 x m6i.large
    # the gateway's 2 + 1 surge pod spread over 3 zones: 3 nodes, m6i.large the smallest
    assert (need["cpuNodes"].minimum, need["cpuNodes"].maximum) == (6, 26)
    assert need["cpuNodes"].minimum_reason == (
        "gateway 2 + 1 surge pod, the monitoring pods: at least 3 x m6i.large, 2 vCPUs each"
    )
    assert (need["gpuNodes"].minimum, need["gpuNodes"].maximum) == (12, 16)
    # on-demand only: one quota each
    assert [q.code for n in need.values() for q in n.quotas] == [
        STD_ON_DEMAND,
        STD_ON_DEMAND,
        G_ON_DEMAND,
    ]


def test_the_gpu_maximum_counts_the_type_with_the_most_vcpus_per_gpu() -> None:
    cfg = parse_stack_file("dev")
    gpu = cfg.gpu_nodes.model_copy(update={"instance_types": ["g4dn.xlarge", "g4dn.2xlarge"]})
    [*_, need] = needs(plan(cfg.model_copy(update={"gpu_nodes": gpu}), DEFAULT_MODEL_NAME))
    assert INSTANCE_TYPES["g4dn.2xlarge"].vcpus == 8
    assert need.minimum == 8  # 2 x g4dn.xlarge: Karpenter may launch the smaller type
    assert need.maximum == 16  # but may as well fill maxGpus 2 with g4dn.2xlarge
    assert need.maximum_reason == "gpuNodes.maxGpus 2: 2 x g4dn.2xlarge, 8 vCPUs each"


def test_a_cpu_only_stack_needs_no_gpu_quota_and_counts_tf_serving_on_the_cpu_pool() -> None:
    values = {
        k.removeprefix(PREFIX): v
        for k, v in copy.deepcopy(stack_file("dev")).items()
        if k.startswith(PREFIX)
    }
    values["model"]["onGpu"] = False
    values["cpuNodes"].update(instanceTypes=["t3.xlarge"], maxVcpus=16)  # room for TF Serving
    cfg = parse_config(values, stack="dev", region="us-east-1", today=date(2026, 11, 25))
    wanted = needs(plan(cfg, DEFAULT_MODEL_NAME))
    assert [n.key for n in wanted] == ["systemNodes", "cpuNodes"]
    assert "tfServing 1 + 1 surge pod" in wanted[1].minimum_reason
    assert wanted[1].minimum > _needs("dev")["cpuNodes"].minimum


def test_a_parked_stack_needs_only_its_system_nodes_to_deploy() -> None:
    cfg = parse_stack_file("prod").model_copy(update={"parked": True})
    system, cpu, gpu = needs(plan(cfg, DEFAULT_MODEL_NAME))
    assert (system.minimum, cpu.minimum, gpu.minimum) == (6, 0, 0)
    assert (cpu.maximum, gpu.maximum) == (26, 16)  # what unparking may use
    held = {code: Held(NAMES[code], 6.0) for code in EC2_QUOTAS}
    problems, warnings = assess([system, cpu, gpu], held, "us-east-1")
    assert problems == []
    assert [w.split(":")[0] for w in warnings] == ["cpuNodes", "gpuNodes"]


# --- the verdicts, at their boundaries ---


def _held(**vcpus: float) -> dict[str, Held]:
    codes = {"g_spot": G_SPOT, "g_od": G_ON_DEMAND, "std_spot": STD_SPOT, "std_od": STD_ON_DEMAND}
    return {codes[k]: Held(NAMES[codes[k]], v) for k, v in vcpus.items()}


@pytest.mark.parametrize(
    ("g_od", "problems", "warnings"),
    [(11, ["gpuNodes"], []), (12, [], ["gpuNodes"]), (15, [], ["gpuNodes"]), (16, [], [])],
)
def test_prod_gpu_quota_at_the_boundaries(
    g_od: float, problems: list[str], warnings: list[str]
) -> None:
    wanted = list(_needs("prod").values())
    found = assess(wanted, _held(std_od=32, g_od=g_od), "us-east-1")
    assert [[line.split(":")[0] for line in lines] for lines in found] == [problems, warnings]


def test_the_system_nodes_take_their_on_demand_share_first() -> None:
    wanted = list(_needs("prod").values())
    # 11: the system group's 6 leave 5 for the CPU pool's 6
    problems, _ = assess(wanted, _held(std_od=11, g_od=16), "us-east-1")
    assert problems == [
        "cpuNodes: the EC2 quota in us-east-1 cannot hold the 6 vCPUs cpuNodes needs to deploy "
        "(gateway 2 + 1 surge pod, the monitoring pods: at least 3 x m6i.large, 2 vCPUs each): "
        f"'{NAMES[STD_ON_DEMAND]}' ({STD_ON_DEMAND}) holds 11 of the 12 needed (6 for "
        f"systemNodes first); ask for more: {_ask(STD_ON_DEMAND, 32)}"
    ]
    assert assess(wanted, _held(std_od=12, g_od=16), "us-east-1")[0] == []


def test_a_pool_with_both_capacity_types_is_covered_by_either_quota() -> None:
    wanted = list(_needs("dev").values())
    for held in (_held(g_spot=8, g_od=0), _held(g_spot=0, g_od=8)):
        problems, warnings = assess(wanted, {**_held(std_spot=8, std_od=12), **held}, "us-east-1")
        assert (problems, warnings) == ([], [])


# --- under mocks: the program stops, or warns and deploys ---


def _quota_warnings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    logged: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: logged.append(message))
    return logged


def _refused(stack: str, export_dir: Path, quotas: Mapping[str, float]) -> str:
    """The program's error with ``quotas`` raised (the rest at AWS's defaults), after
    checking that it declared nothing."""
    mocks = RecordingMocks(quotas=quotas)
    with pytest.raises(ConfigError) as info:
        run_stack(stack, with_export(stack, export_dir), SECRET_KEYS, mocks)
    assert mocks.resources == []  # stopped before the first resource
    assert {region for region, _ in mocks.quota_lookups} == {"us-east-1"}
    return str(info.value)


def _deployed(
    stack: str, export_dir: Path, quotas: Mapping[str, float], monkeypatch: pytest.MonkeyPatch
) -> tuple[StackRun, list[str]]:
    logged = _quota_warnings(monkeypatch)
    run = run_stack(
        stack, with_export(stack, export_dir), SECRET_KEYS, RecordingMocks(quotas=quotas)
    )
    return run, [w for w in logged if "EC2 quota" in w]


def test_dev_in_a_new_account_stops_for_the_gpu_quotas(export_dir: Path) -> None:
    # nothing raised yet: AWS's defaults, 0 vCPUs of G and VT, 5 of standard (which hold
    # dev's system node group and its CPU pool's minimum, on spot)
    error = _refused("dev", export_dir, {})
    assert error == (
        "invalid stack configuration:\n"
        f"  {PREFIX}gpuNodes: no EC2 quota of gpuNodes.capacityTypes (spot, on-demand) in "
        "us-east-1 can hold the 8 vCPUs gpuNodes needs to deploy (tfServing.minReplicas 1 + 1 "
        "surge pod: 2 x g4dn.xlarge, 4 vCPUs each): "
        f"'All G and VT Spot Instance Requests' ({G_SPOT}) holds 0, "
        f"'Running On-Demand G and VT instances' ({G_ON_DEMAND}) holds 0; "
        f"ask for more: {_ask(G_SPOT, 8)} or {_ask(G_ON_DEMAND, 8)}"
    )


def test_prod_in_a_new_account_stops_for_every_quota_it_lacks(export_dir: Path) -> None:
    error = _refused("prod", export_dir, {})
    lines = error.splitlines()[1:]
    assert [line.split(":")[1] for line in lines] == ["systemNodes", "cpuNodes", "gpuNodes"]
    assert lines[0] == (
        f"  {PREFIX}systemNodes: the EC2 quota in us-east-1 cannot hold the 6 vCPUs systemNodes "
        "needs to deploy (systemNodes.size 2 + 1 during its rolling update: 3 x m6i.large, "
        "2 vCPUs each): "
        f"'Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances' ({STD_ON_DEMAND}) "
        f"holds 5; ask for more: {_ask(STD_ON_DEMAND, 32)}"
    )
    assert lines[2] == (
        f"  {PREFIX}gpuNodes: the EC2 quota in us-east-1 cannot hold the 12 vCPUs gpuNodes needs "
        "to deploy (tfServing.minReplicas 2 + 1 surge pod: 3 x g4dn.xlarge, 4 vCPUs each): "
        f"'Running On-Demand G and VT instances' ({G_ON_DEMAND}) holds 0; "
        f"ask for more: {_ask(G_ON_DEMAND, 16)}"
    )


def test_dev_below_its_minimum_stops(export_dir: Path) -> None:
    error = _refused("dev", export_dir, {G_ON_DEMAND: 4})  # one GPU node, not two
    assert f"'Running On-Demand G and VT instances' ({G_ON_DEMAND}) holds 4;" in error
    assert f"({G_SPOT}) holds 0," in error
    assert "the 8 vCPUs gpuNodes needs to deploy" in error
    assert error.count("\n") == 1  # one line: the standard quotas' defaults do for dev


def test_prod_below_its_minimum_stops(export_dir: Path) -> None:
    error = _refused("prod", export_dir, {STD_ON_DEMAND: 64, G_ON_DEMAND: 8})
    assert error == (
        "invalid stack configuration:\n"
        f"  {PREFIX}gpuNodes: the EC2 quota in us-east-1 cannot hold the 12 vCPUs gpuNodes needs "
        "to deploy (tfServing.minReplicas 2 + 1 surge pod: 3 x g4dn.xlarge, 4 vCPUs each): "
        f"'Running On-Demand G and VT instances' ({G_ON_DEMAND}) holds 8; "
        f"ask for more: {_ask(G_ON_DEMAND, 16)}"
    )


def test_dev_between_minimum_and_maximum_warns_and_deploys(
    export_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 4 vCPUs of standard spot and the default 5 on-demand (4 of them the system group's):
    # the CPU pool deploys (2) but cannot reach maxVcpus 8
    run, warnings = _deployed("dev", export_dir, {G_SPOT: 8, STD_SPOT: 4}, monkeypatch)
    assert warnings == [
        f"{PREFIX}cpuNodes: no EC2 quota of cpuNodes.capacityTypes (spot, on-demand) in "
        "us-east-1 can hold the 8 vCPUs of its limit (cpuNodes.maxVcpus 8): "
        f"'All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests' ({STD_SPOT}) holds "
        f"4, 'Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances' "
        f"({STD_ON_DEMAND}) holds 5 of the 12 needed (4 for systemNodes first); so cpuNodes "
        f"can scale to 4 vCPUs only. Ask for more: {_ask(STD_SPOT, 8)} or "
        f"{_ask(STD_ON_DEMAND, 12)}"
    ]
    assert run.of_type("eks:index:Cluster")


def test_prod_between_minimum_and_maximum_warns_and_deploys(
    export_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, warnings = _deployed("prod", export_dir, {STD_ON_DEMAND: 32, G_ON_DEMAND: 12}, monkeypatch)
    assert warnings == [
        f"{PREFIX}gpuNodes: the EC2 quota in us-east-1 cannot hold the 16 vCPUs of its limit "
        "(gpuNodes.maxGpus 4: 4 x g4dn.xlarge, 4 vCPUs each): "
        f"'Running On-Demand G and VT instances' ({G_ON_DEMAND}) holds 12; so gpuNodes can "
        f"scale to 12 vCPUs only. Ask for more: {_ask(G_ON_DEMAND, 16)}"
    ]
    assert run.of_type("eks:index:Cluster")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_enough_quota_deploys_without_a_warning(
    stack: str, export_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    most = {"dev": {G_SPOT: 8, STD_SPOT: 8}, "prod": {STD_ON_DEMAND: 32, G_ON_DEMAND: 16}}
    run, warnings = _deployed(stack, export_dir, most[stack], monkeypatch)
    assert warnings == []
    assert run.of_type("eks:index:Cluster")


def test_quotas_are_looked_up_in_the_stacks_region(export_dir: Path) -> None:
    config = with_export("dev", export_dir)
    config["aws:region"] = "eu-west-1"
    mocks = RecordingMocks(quotas={})
    with pytest.raises(
        ConfigError, match=f"in eu-west-1 can hold .*{_ask(G_SPOT, 8, 'eu-west-1')}"
    ):
        run_stack("dev", config, mocks=mocks)
    assert sorted(mocks.quota_lookups) == sorted(
        ("eu-west-1", code) for code in (G_SPOT, G_ON_DEMAND, STD_SPOT, STD_ON_DEMAND)
    )


def test_the_mocks_answer_as_the_provider_does() -> None:
    """A quota never raised comes back at its AWS default, under the default's ARN (no
    account in it); a raised one at its value, under the account's ARN; every field the
    provider's result type has is there."""
    import pulumi_aws as aws

    pulumi.runtime.set_mocks(RecordingMocks(quotas={G_ON_DEMAND: 16.0}), preview=False)
    fresh = aws.servicequotas.get_service_quota(
        service_code="ec2", quota_code=G_SPOT, region="us-east-1"
    )
    raised = aws.servicequotas.get_service_quota(
        service_code="ec2", quota_code=G_ON_DEMAND, region="us-east-1"
    )
    assert (fresh.value, fresh.default_value) == (0.0, 0.0)
    assert fresh.arn == fresh.id == f"arn:aws:servicequotas:us-east-1::ec2/{G_SPOT}"
    assert (raised.value, raised.default_value) == (16.0, 0.0)
    assert raised.arn == f"arn:aws:servicequotas:us-east-1:123456789012:ec2/{G_ON_DEMAND}"
    assert raised.quota_name == "Running On-Demand G and VT instances"
    assert raised.adjustable and not raised.global_quota
    [metric] = raised.usage_metrics
    assert metric.metric_dimensions[0].class_ == "G/OnDemand"


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_other_tests_run_with_enough_quota(stack: str) -> None:
    held = {code: Held(NAMES[code], vcpus) for code, vcpus in ENOUGH.items()}
    assert assess(list(_needs(stack).values()), held, "us-east-1") == ([], [])


def test_every_instance_type_is_in_the_quota_family_its_pool_looks_up() -> None:
    """GPU pools look up the G and VT quotas, the rest the standard ones: true of every type
    the config accepts (add a quota to infra/quotas.py before another family)."""
    for name, instance in INSTANCE_TYPES.items():
        assert name[0] in ("g" if instance.gpus else "acdhimrtz"), name
    assert {q.family for q in G_AND_VT.values()} == {"G and VT"}
    assert {q.family for q in STANDARD.values()} == {"Standard"}
