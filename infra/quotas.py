"""The EC2 vCPU quotas the stack needs, looked up before anything bills.

A new AWS account holds, in each region, 0 vCPUs of G and VT instances (on-demand and
spot) and 5 of standard ones (AWS's defaults, which AWS raises for some accounts on its
own). Short of them, the first ``pulumi up`` creates the VPC, the NAT gateways and the
control plane (billing by the hour) and then fails on the system node group, or succeeds
while Karpenter's nodes never launch and TF Serving stays Pending with nothing but
``VcpuLimitExceeded`` in Karpenter's log. So ``check_quotas``, called by
``infra.program.main`` before any resource is declared, looks the quotas up through the
AWS provider (``aws.servicequotas.get_service_quota``, a data source: it runs in
``pulumi preview`` too) and:

- stops, with one line per config key naming the quota, its code, the region, the vCPUs
  held and needed and the command that asks for more, where a quota cannot hold what the
  stack needs to deploy (its **minimum**);
- returns a warning, saying how far the stack can scale, where it cannot hold what the
  node pools' limits allow (its **maximum**).

EC2 quotas are per region and count vCPUs, one per instance family group and purchase
option (``G_AND_VT``, ``STANDARD``). How the needs are reckoned, from the Plan's Args and
``infra.capacity``'s instance figures:

- **Capacity types.** Karpenter launches spot where a pool allows it and, when EC2 refuses
  (``MaxSpotInstanceCountExceeded`` and ``VcpuLimitExceeded`` are "unfulfillable capacity"
  to it: aws/karpenter-provider-aws ``pkg/errors/errors.go``), tries the pool's other
  capacity type: a pool that allows both is covered when either quota holds its need. (It
  could also mix the two, spot to its quota and on-demand for the rest, but only launch by
  refused launch: the check does not count on that.)
- **The system node group** is on-demand only, and its rolling update adds a node
  (``infra.cluster``: ``max_size = size + 1``); its vCPUs come out of the on-demand
  standard quota first, before the CPU pool's.
- **Minimum**: what the first deploy launches. GPU nodes for ``tfServing.minReplicas`` plus
  its surge pod, on the allowed type that needs the fewest vCPUs; the CPU pool's pods (the
  gateway's and, on a CPU-only stack, TF Serving's, each minimum plus surge, and the
  monitoring pods) packed as tightly as their requests allow, on at least one node per
  zone they must spread over. Both are lower bounds, so the stop does not refuse a stack
  that one quota could deploy; a shortfall above them is the warning's.
- **Maximum**: the pools' limits: ``cpuNodes.maxVcpus`` (already vCPUs), and
  ``gpuNodes.maxGpus`` in nodes of the allowed type with the most vCPUs per GPU (Karpenter
  may launch any allowed type, and only that one guarantees the limit can be reached).
- **What to ask for**: the command in a message asks for all the stack may use of that
  quota (the maxima of what it holds together): an increase can take days, so one request
  covers deploying and scaling.
- A **parked** stack launches no workload nodes: its minimum is the system node group's;
  its maximum is what unparking may use.

What the quota holds is compared, not what is free of it: instances that something else
runs in the account and region use the same quota, and no data source reports that usage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi_aws as aws

from infra import capacity
from infra.config import config_error

if TYPE_CHECKING:
    from infra.program import Plan

SERVICE_CODE = "ec2"
ON_DEMAND, SPOT = "on-demand", "spot"


@dataclass(frozen=True)
class Quota:
    """An EC2 vCPU quota of one instance family group and purchase option; its name is the
    one AWS reports with its value."""

    code: str
    family: str
    capacity_type: str

    def request(self, vcpus: float, region: str) -> str:
        """The command that asks for ``vcpus``."""
        return (
            f"aws service-quotas request-service-quota-increase --service-code {SERVICE_CODE} "
            f"--quota-code {self.code} --desired-value {vcpus:g} --region {region}"
        )


# by capacity type, in the order Karpenter prefers them (spot first)
G_AND_VT = {  # "All G and VT Spot Instance Requests", "Running On-Demand G and VT instances"
    SPOT: Quota("L-3819A6DF", "G and VT", SPOT),
    ON_DEMAND: Quota("L-DB2E81BA", "G and VT", ON_DEMAND),
}
STANDARD = {  # "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
    # "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"
    SPOT: Quota("L-34B43A08", "Standard", SPOT),
    ON_DEMAND: Quota("L-1216C47A", "Standard", ON_DEMAND),
}


@dataclass(frozen=True)
class Need:
    """The vCPUs one part of the stack launches, and the quotas that may hold them (any one
    of them: one per capacity type it may use)."""

    key: str  # its config key, for messages
    quotas: tuple[Quota, ...]
    minimum: int  # to deploy
    maximum: int  # at its limit
    minimum_reason: str
    maximum_reason: str


@dataclass(frozen=True)
class Held:
    """A quota's value in the region, as AWS reports it."""

    name: str
    vcpus: float


def _nodes(count: int, instance: capacity.InstanceType) -> str:
    return f"{count} x {instance.name}, {instance.vcpus} vCPUs each"


def _quotas(family: dict[str, Quota], capacity_types: list[str]) -> tuple[Quota, ...]:
    return tuple(quota for kind, quota in family.items() if kind in capacity_types)


def _system(stack: Plan) -> Need:
    system = stack.on_aws.system_nodes
    instance = capacity.INSTANCE_TYPES[system.instance_type]
    nodes = system.size + 1
    reason = (
        f"systemNodes.size {system.size} + 1 during its rolling update: {_nodes(nodes, instance)}"
    )
    vcpus = nodes * instance.vcpus
    return Need("systemNodes", (STANDARD[ON_DEMAND],), vcpus, vcpus, reason, reason)


def _cpu_pool(stack: Plan) -> Need:
    pool = stack.on_aws.cpu_pool
    quotas = _quotas(STANDARD, pool.capacity_types)
    maximum = f"cpuNodes.maxVcpus {pool.limit}"
    if stack.gateway.placement.parked:
        return Need("cpuNodes", quotas, 0, pool.limit, "parked", maximum)
    monitoring = stack.monitoring is not None
    tiers = [t for t in stack.tiers if not t.pool.gpus]  # the gateway, TF Serving on CPU
    pods = [(t.workload.requests, t.workload.minimum + t.workload.surge) for t in tiers]
    parts = [f"{t.key} {t.workload.minimum} + {t.workload.surge} surge pod" for t in tiers]
    if monitoring:
        pods += [(pod.requests, 1) for pod in capacity.MONITORING_PODS]
        parts.append("the monitoring pods")
    total = sum((requests for requests, count in pods for _ in range(count)), capacity.NOTHING)
    count = sum(n for _, n in pods)
    zones = stack.on_aws.availability_zones if stack.gateway.placement.high_availability else 1
    spread = max(min(t.workload.minimum + t.workload.surge, zones) for t in tiers)
    options = []
    for name in pool.instance_types:
        instance = capacity.INSTANCE_TYPES[name]
        daemonsets = capacity.daemonsets_on(instance, monitoring)
        free = instance.allocatable(daemonsets)
        nodes = max(
            math.ceil(total.cpu_m / free.cpu_m),
            math.ceil(total.memory_mib / free.memory_mib),
            math.ceil(count / (instance.max_pods - len(daemonsets))),
            spread,
        )
        options.append((nodes * instance.vcpus, nodes, instance))
    vcpus, nodes, instance = min(options, key=lambda option: option[0])
    reason = f"{', '.join(parts)}: at least {_nodes(nodes, instance)}"
    return Need("cpuNodes", quotas, vcpus, pool.limit, reason, maximum)


def _gpu_pool(stack: Plan) -> Need:
    pool = stack.on_aws.gpu_pool
    types = [capacity.INSTANCE_TYPES[name] for name in pool.instance_types]
    quotas = _quotas(G_AND_VT, pool.capacity_types)
    # at the limit: maxGpus in nodes of the type with the most vCPUs for them
    most, nodes, instance = max(
        (((pool.limit // t.gpus) * t.vcpus, pool.limit // t.gpus, t) for t in types),
        key=lambda option: option[0],
    )
    maximum = f"gpuNodes.maxGpus {pool.limit}: {_nodes(nodes, instance)}"
    if stack.tf_serving.placement.parked:
        return Need("gpuNodes", quotas, 0, most, "parked", maximum)
    work = stack.tf_serving.workload
    pods = work.minimum + work.surge
    monitoring = stack.monitoring is not None
    # every pod fits every allowed type (infra.program.plan checked it): nodes_needed > 0
    options = [
        (n * t.vcpus, n, t)
        for t in types
        for n in [capacity.nodes_needed(t, work.requests, work.gpus, pods, monitoring)]
    ]
    vcpus, nodes, instance = min(options, key=lambda option: option[0])
    reason = (
        f"tfServing.minReplicas {work.minimum} + {work.surge} surge pod: {_nodes(nodes, instance)}"
    )
    return Need("gpuNodes", quotas, vcpus, most, reason, maximum)


def needs(stack: Plan) -> list[Need]:
    """What the stack needs of each quota, the system node group first (it is on-demand
    only, so it takes its share of the on-demand standard quota before the CPU pool)."""
    result = [_system(stack), _cpu_pool(stack)]
    if stack.tf_serving.gpus:  # else the GPU pool launches nothing: nothing tolerates it
        result.append(_gpu_pool(stack))
    return result


def assess(
    wanted: list[Need], held: Mapping[str, Held], region: str
) -> tuple[list[str], list[str]]:
    """The problems (no quota of a need can hold its minimum) and warnings (nor its maximum)
    of ``wanted`` against the quotas ``held`` (by code), one line per need."""
    # what the stack may use of each quota at most: what to ask for
    most: dict[str, int] = {}
    for need in wanted:
        for quota in need.quotas:
            most[quota.code] = most.get(quota.code, 0) + need.maximum
    problems, warnings = [], []
    taken: dict[str, list[Need]] = {}  # the needs with one quota, which take their share first
    for need in wanted:
        before = {q.code: list(taken.get(q.code, [])) for q in need.quotas}
        if one := len(need.quotas) == 1:
            taken.setdefault(need.quotas[0].code, []).append(need)
        subject = (
            "the EC2 quota"
            if one
            else f"no EC2 quota of {need.key}.capacityTypes "
            f"({', '.join(q.capacity_type for q in need.quotas)})"
        )
        verb = "cannot hold" if one else "can hold"
        asks = " or ".join(q.request(most[q.code], region) for q in need.quotas)
        for at_maximum in (False, True):
            vcpus = need.maximum if at_maximum else need.minimum
            rooms = [
                held[q.code].vcpus
                - sum(n.maximum if at_maximum else n.minimum for n in before[q.code])
                for q in need.quotas
            ]
            if not vcpus or max(rooms) >= vcpus:  # 0: parked
                continue
            states = ", ".join(
                f"'{held[q.code].name}' ({q.code}) holds {held[q.code].vcpus:g}"
                + _with(before[q.code], vcpus, at_maximum)
                for q in need.quotas
            )
            if at_maximum:
                warnings.append(
                    f"{need.key}: {subject} in {region} {verb} the {vcpus} vCPUs of its limit "
                    f"({need.maximum_reason}): {states}; so {need.key} can scale to "
                    f"{max(0.0, *rooms):g} vCPUs only. Ask for more: {asks}"
                )
            else:
                problems.append(
                    f"{need.key}: {subject} in {region} {verb} the {vcpus} vCPUs {need.key} needs "
                    f"to deploy ({need.minimum_reason}): {states}; ask for more: {asks}"
                )
                break  # one line per need
    return problems, warnings


def _with(first: list[Need], vcpus: int, at_maximum: bool) -> str:
    """What a quota must hold for ``vcpus`` more than the needs that take their share of it
    ``first``."""
    if not first:
        return ""
    shares = [(n.key, n.maximum if at_maximum else n.minimum) for n in first]
    total = vcpus + sum(share for _, share in shares)
    firsts = ", ".join(f"{share} for {key}" for key, share in shares)
    return f" of the {total} needed ({firsts} first)"


def look_up(codes: list[str], region: str) -> dict[str, Held]:
    """The quotas' values in ``region``. A synchronous invoke: it answers before any
    resource is declared, in preview as in an update."""
    result = {}
    for code in codes:
        quota = aws.servicequotas.get_service_quota(
            service_code=SERVICE_CODE, quota_code=code, region=region
        )
        result[code] = Held(quota.quota_name, quota.value)
    return result


def check_quotas(stack: Plan) -> list[str]:
    """Raise ConfigError where a quota cannot hold what the stack needs to deploy; return
    the warnings where one cannot hold what its pools may scale to (each starting with the
    config key it is about)."""
    wanted = needs(stack)
    codes = list(dict.fromkeys(q.code for need in wanted for q in need.quotas))
    problems, warnings = assess(wanted, look_up(codes, stack.on_aws.region), stack.on_aws.region)
    if problems:
        raise config_error(*problems)
    return warnings
