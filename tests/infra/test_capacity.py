"""The capacity model against published figures, and what it says about the stacks."""

from __future__ import annotations

import pytest

from infra.capacity import (
    INSTANCE_TYPES,
    Resources,
    daemonsets_on,
    nodes_needed,
    parse_cpu,
    parse_memory,
)
from infra.config import parse_stack_file
from infra.program import plan
from serving_contract.model import DEFAULT_MODEL_NAME


@pytest.mark.parametrize(
    ("name", "cpu_m", "memory_mib"),
    [
        # Karpenter's reference/instance-types.md (allocatable, before DaemonSets)
        ("t3.large", 1930, 6837),
        ("m6i.large", 1930, 6903),
        ("g4dn.xlarge", 3920, 14481),
        ("g4dn.2xlarge", 7910, 29636),
    ],
)
def test_allocatable_matches_karpenters_figures(name: str, cpu_m: int, memory_mib: int) -> None:
    assert INSTANCE_TYPES[name].allocatable(()) == Resources(cpu_m, memory_mib)


def test_one_one_cpu_gateway_pod_per_m6i_large() -> None:
    """The review's finding: after the node's own pods, an m6i.large holds one 1-CPU pod."""
    node = INSTANCE_TYPES["m6i.large"]
    assert node.pods_that_fit(Resources(1000, 1024), 0, daemonsets_on(node, monitoring=False)) == 1
    assert nodes_needed(node, Resources(1000, 1024), 0, 11, monitoring=False) == 11


def test_gpu_pods_are_limited_by_gpus() -> None:
    node = INSTANCE_TYPES["g4dn.2xlarge"]  # 8 vCPUs, 1 GPU
    assert node.pods_that_fit(Resources(2000, 6144), 1, daemonsets_on(node, monitoring=False)) == 1
    assert node.pods_that_fit(Resources(2000, 6144), 0, daemonsets_on(node, monitoring=False)) == 3


@pytest.mark.parametrize(
    ("text", "millicores"), [("500m", 500), ("2", 2000), ("1.5", 1500), ("250m", 250)]
)
def test_cpu_quantities(text: str, millicores: int) -> None:
    assert parse_cpu(text) == millicores


def test_memory_quantities() -> None:
    assert parse_memory("512Mi") == 512
    assert parse_memory("6Gi") == 6144
    with pytest.raises(ValueError, match="not a memory quantity"):
        parse_memory("6G")


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stacks_fit_their_maximum_plus_a_surge(stack: str) -> None:
    """What the config check enforces, spelled out for the committed stacks."""
    gateway, tf_serving = plan(parse_stack_file(stack), DEFAULT_MODEL_NAME).tiers
    assert tf_serving.workload.maximum + tf_serving.workload.surge <= tf_serving.pool.limit
    worst = max(
        nodes_needed(t, gateway.workload.requests, 0, gateway.workload.maximum + 1, True) * t.vcpus
        for t in gateway.pool.types
    )
    assert worst <= gateway.pool.limit


@pytest.mark.parametrize(("stack", "cpu_limit"), [("dev", 12), ("prod", 34)])
def test_cpu_only_is_one_switch(stack: str, cpu_limit: int) -> None:
    """`model.onGpu: false` alone: TF Serving's pods shrink to fit the CPU types, the CPU
    pool's limit grows to hold them, and they scale on CPU, not on the images asked for (a
    GPU replica's ceiling says nothing of a CPU pod's)."""
    cfg = parse_stack_file(stack)
    cpu_only = cfg.model_copy(update={"model": cfg.model.model_copy(update={"on_gpu": False})})
    gpu, cpu = plan(cfg, DEFAULT_MODEL_NAME), plan(cpu_only, DEFAULT_MODEL_NAME)
    assert (gpu.tf_serving.pods.cpu, cpu.tf_serving.pods.cpu) == ("2", "1")
    assert cpu.tf_serving.gpus == 0 and cpu.tf_serving.demand is None
    assert gpu.tf_serving.demand is not None
    assert cpu.tf_serving.placement.nodes == cpu.gateway.placement.nodes
    assert not cpu.aws.model_on_gpu
    assert cpu.aws.cpu_pool.limit == cpu_limit > gpu.aws.cpu_pool.limit
    [_, tf_tier] = cpu.tiers
    assert not tf_tier.pool.gpus


def test_the_cpu_limit_is_what_the_pods_need_unless_set() -> None:
    cfg = parse_stack_file("dev")
    derived = plan(cfg, DEFAULT_MODEL_NAME).aws.cpu_pool.limit
    one_less = cfg.model_copy(
        update={"cpu_nodes": cfg.cpu_nodes.model_copy(update={"max_vcpus": derived - 1})}
    )
    with pytest.raises(ValueError, match=f"but cpuNodes.maxVcpus is {derived - 1}"):
        plan(one_less, DEFAULT_MODEL_NAME)
    more = cfg.model_copy(update={"cpu_nodes": cfg.cpu_nodes.model_copy(update={"max_vcpus": 40})})
    assert plan(more, DEFAULT_MODEL_NAME).aws.cpu_pool.limit == 40
