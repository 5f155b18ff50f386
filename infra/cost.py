"""Hourly and monthly cost of a stack from its config and list prices.

    uv run python -m infra.cost [dev prod ...]

Four figures per stack, from the same plan ``pulumi up`` deploys (``infra.program``):
**parked** (``parked: true``: no workload nodes, no monitoring: the fixed part only),
**idle** (a stack whose TF Serving sleeps, ``tfServing.sleepAfterMinutes``, after that long
without a request: TF Serving at zero and no GPU node; the gateway and monitoring stay),
**at minimum** (the autoscalers' minimum replicas on the cheapest nodes that hold them) and
**at maximum** (the Karpenter pools' limits used up on their priciest types); and the same
stack without GPUs (``model.onGpu: false``). Instance prices live in ``infra.capacity``;
the control plane is priced by its Kubernetes version's support on the day
(``infra.eks_versions``). Prices are on-demand Linux list prices in USD of one region
(``capacity.PRICE_REGION``; a stack elsewhere gets a warning): spot is priced at
on-demand, an upper bound (spot usually costs 60-70% less). Data transfer, NAT/LB per-GB
processing, CloudWatch logs and ECR storage are usage-based and left out.

It also prints the EC2 vCPUs each part of the stack needs of its quotas, to deploy and at
its limit (``infra.quotas``, which ``pulumi preview`` checks against the account's): what
to ask AWS for before the first ``pulumi up``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import date

from infra.capacity import (
    INSTANCE_TYPES,
    PRICE_REGION,
    InstanceType,
    Pool,
    Tier,
    monitoring_nodes,
    nodes_needed,
)
from infra.config import ConfigError, StackConfig, parse_stack_file
from infra.eks_versions import VERSIONS
from infra.karpenter import NodePoolArgs
from infra.program import plan
from infra.quotas import Need, needs
from serving_contract.model import DEFAULT_MODEL_NAME

HOURS_A_MONTH = 730  # AWS's own figure for monthly prices
PRICES = {
    "nat_gateway": 0.045,
    "nlb": 0.0225,
    "public_ipv4": 0.005,
    "kms_key": 1.0 / HOURS_A_MONTH,
    "gp3_gb": 0.08 / HOURS_A_MONTH,
}


@dataclass(frozen=True)
class Estimate:
    stack: str
    fixed: list[tuple[str, float]]
    serving_min: list[tuple[str, float]]
    serving_max: list[tuple[str, float]]
    # asleep: TF Serving at zero (None: it never sleeps, so idle is the minimum)
    serving_idle: list[tuple[str, float]] | None
    extended_support: bool
    quotas: list[Need]  # the EC2 vCPU quotas it needs, to deploy and at its limits

    @property
    def parked(self) -> float:
        return sum(v for _, v in self.fixed)

    @property
    def idle(self) -> float:
        items = self.serving_min if self.serving_idle is None else self.serving_idle
        return self.parked + sum(v for _, v in items)

    @property
    def at_min(self) -> float:
        return self.parked + sum(v for _, v in self.serving_min)

    @property
    def at_max(self) -> float:
        return self.parked + sum(v for _, v in self.serving_max)


def _node_hour(instance: InstanceType, disk_gb: int) -> float:
    return instance.hourly_usd + disk_gb * PRICES["gp3_gb"]


def _cheapest(tier: Tier, zones: int, monitoring: bool) -> tuple[str, float]:
    """The cheapest nodes of the tier's pool that hold its minimum of pods, spread over
    ``zones`` nodes at least."""
    work = tier.workload
    pods = work.minimum
    options = []
    for instance in tier.pool.types:
        needed = nodes_needed(instance, work.requests, work.gpus, pods, monitoring)
        nodes = max(needed, min(pods, zones))
        options.append((nodes * _node_hour(instance, tier.pool.disk_size_gb), nodes, instance.name))
    cost, nodes, name = min(options)
    return f"{nodes} x {name}", cost


def _at_limit(pool: Pool) -> tuple[str, float]:
    """The pool's limit (vCPUs or GPUs) used up on its priciest type per unit."""

    def units(t: InstanceType) -> int:
        return t.gpus if pool.gpus else t.vcpus

    priciest = max(pool.types, key=lambda t: _node_hour(t, pool.disk_size_gb) / units(t))
    nodes = pool.limit // units(priciest)
    return f"{nodes} x {priciest.name}", nodes * _node_hour(priciest, pool.disk_size_gb)


def _pool(args: NodePoolArgs) -> Pool:
    return args.capacity(args.name)


def estimate(cfg: StackConfig, on: date | None = None) -> Estimate:
    """The stack's costs on day ``on`` (the config's today by default), from the plan
    ``pulumi up`` would deploy, unparked (parked, only the fixed part bills)."""
    on = on or cfg.today
    stack = plan(cfg.model_copy(update={"parked": False}), DEFAULT_MODEL_NAME)
    aws = stack.on_aws
    version = VERSIONS[aws.cluster_version]
    nats = aws.nat_gateway_count
    system = INSTANCE_TYPES[aws.system_nodes.instance_type]
    support = "extended support" if on > version.end_of_standard else "standard support"
    fixed = [
        (f"EKS control plane ({aws.cluster_version}, {support})", version.hourly_price(on)),
        (
            f"NAT gateways x{nats} (+ their IPv4)",
            nats * (PRICES["nat_gateway"] + PRICES["public_ipv4"]),
        ),
        ("NLB (+ an IPv4 per AZ)", PRICES["nlb"] + aws.availability_zones * PRICES["public_ipv4"]),
        ("KMS key", PRICES["kms_key"]),
        (
            f"system nodes {aws.system_nodes.size} x {system.name}",
            aws.system_nodes.size * _node_hour(system, aws.system_nodes.disk_size_gb),
        ),
    ]
    # highly available: the pods are spread over zones, so over that many nodes at least
    zones = aws.availability_zones if stack.gateway.placement.high_availability else 1
    gateway, tf = stack.tiers
    monitoring = stack.monitoring is not None
    gw_label, gw_cost = _cheapest(gateway, zones, monitoring)
    tf_label, tf_cost = _cheapest(tf, zones, monitoring)
    tf_nodes = (f"TF Serving nodes {tf_label}", tf_cost)
    serving_min = [(f"gateway nodes {gw_label}", gw_cost), tf_nodes]
    cpu_pool = _pool(aws.cpu_pool)
    if monitoring:  # its own nodes, an upper bound: it may share the gateway's
        cost, nodes, name = min(
            (nodes * _node_hour(t, cpu_pool.disk_size_gb), nodes, t.name)
            for t in cpu_pool.types
            if (nodes := monitoring_nodes(t))
        )
        serving_min.append((f"monitoring nodes {nodes} x {name}", cost))
    cpu_label, cpu_cost = _at_limit(cpu_pool)
    serving_max = [(f"CPU pool at maxVcpus: {cpu_label}", cpu_cost)]
    if stack.tf_serving.gpus:
        gpu_label, gpu_cost = _at_limit(_pool(aws.gpu_pool))
        serving_max.append((f"GPU pool at maxGpus: {gpu_label}", gpu_cost))
    idle = [item for item in serving_min if item is not tf_nodes]
    return Estimate(
        cfg.stack,
        fixed,
        serving_min,
        serving_max,
        idle if stack.tf_serving.sleeps else None,
        on > version.end_of_standard,
        needs(stack),
    )


def _money(hourly: float) -> str:
    return f"${hourly:.2f}/h (${hourly * HOURS_A_MONTH:,.0f}/month)"


def without_gpus(cfg: StackConfig) -> StackConfig:
    """The stack with ``model.onGpu: false``: TF Serving on CPU nodes."""
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"on_gpu": False})})


def report(cfg: StackConfig) -> list[str]:
    """What ``make cost`` prints for one stack."""
    est = estimate(cfg)
    stack = plan(cfg, DEFAULT_MODEL_NAME)
    state = " (parked now)" if cfg.parked else ""
    idle = (
        f"{_money(est.idle)} idle (TF Serving asleep, no GPU node)"
        if est.serving_idle is not None
        else "never idle (TF Serving keeps its minimum)"
    )
    lines = [
        f"{cfg.stack}{state}: {_money(est.parked)} parked, {idle}, {_money(est.at_min)} at "
        f"minimum, {_money(est.at_max)} at maximum",
        f"  pool limits: {stack.on_aws.cpu_pool.limit} vCPUs (cpuNodes), "
        f"{stack.on_aws.gpu_pool.limit} GPUs (gpuNodes)",
    ]
    for title, items in (
        ("always", est.fixed),
        ("idle, asleep", est.serving_idle or []),
        ("at minimum", est.serving_min),
        ("at maximum", est.serving_max),
    ):
        if not items:
            continue
        lines.append(f"  {title}:")
        lines += [f"    {label:<48} ${value:.3f}/h" for label, value in items]
    lines.append("  EC2 vCPUs (to deploy / at the limit), of one quota listed:")
    for need in est.quotas:
        quotas = " or ".join(f"{q.code} ({q.family} {q.capacity_type})" for q in need.quotas)
        lines.append(f"    {need.key:<12} {need.minimum:>3} / {need.maximum:<3} {quotas}")
    if cfg.model.on_gpu:
        cpu = estimate(without_gpus(cfg))
        limit = plan(without_gpus(cfg), DEFAULT_MODEL_NAME).on_aws.cpu_pool.limit
        lines.append(
            f"  without GPUs (model.onGpu: false): {_money(cpu.at_min)} at minimum, "
            f"{_money(cpu.at_max)} at maximum ({limit} vCPUs)"
        )
    return lines


def main(argv: list[str]) -> int:
    print(f"On-demand list prices in {PRICE_REGION}, USD, {HOURS_A_MONTH} hours a month.")
    for name in argv or ["dev", "prod"]:
        try:
            cfg = parse_stack_file(name)
            lines = report(cfg)
        except ConfigError as exc:
            # one line per bad key, each naming it (the first line only says "invalid")
            for problem in str(exc).splitlines()[1:]:
                print(f"error: Pulumi.{name}.yaml: {problem.strip()}", file=sys.stderr)
            return 1
        except FileNotFoundError:
            print(f"error: no Pulumi.{name}.yaml", file=sys.stderr)
            return 1
        for warning in cfg.warnings:
            print(f"warning: Pulumi.{name}.yaml: {warning}", file=sys.stderr)
        if cfg.region != PRICE_REGION:
            print(
                f"warning: {name} deploys to {cfg.region}; these are {PRICE_REGION} prices",
                file=sys.stderr,
            )
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
