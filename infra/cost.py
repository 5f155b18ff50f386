"""Hourly cost of a stack from its config and a table of AWS list prices.

    uv run python -m infra.cost [dev prod ...]

PRICES are us-east-1 on-demand Linux list prices in USD (edit them for another region or
when AWS changes them). Spot GPU nodes are charged at on-demand here, an upper bound:
spot usually costs 60-70% less. Data transfer, NAT/LB per-GB processing, CloudWatch logs
and ECR storage are usage-based and left out.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from infra.config import NodeGroupConfig, StackConfig, parse_stack_file

PRICES = {
    "eks_cluster": 0.10,
    "nat_gateway": 0.045,
    "nlb": 0.0225,
    "public_ipv4": 0.005,
    "kms_key": 1.0 / 730,
    "gp3_gb": 0.08 / 730,
    "t3.large": 0.0832,
    "t3.xlarge": 0.1664,
    "m6i.large": 0.096,
    "m6i.xlarge": 0.192,
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g5.xlarge": 1.006,
    "g6.xlarge": 0.8048,
}


@dataclass(frozen=True)
class Estimate:
    stack: str
    at_desired: float
    at_max: float
    lines: list[tuple[str, float]]


def _nodes(group: NodeGroupConfig, count: int) -> float:
    instance = group.instance_types[0]
    if instance not in PRICES:
        raise KeyError(f"no price for {instance}: add it to infra/cost.py PRICES")
    return count * (PRICES[instance] + group.disk_size_gb * PRICES["gp3_gb"])


def estimate(cfg: StackConfig) -> Estimate:
    nats = 1 if cfg.nat_gateways == "single" else cfg.availability_zones
    fixed = [
        ("EKS control plane", PRICES["eks_cluster"]),
        (
            f"NAT gateways x{nats} (+ their IPv4)",
            nats * (PRICES["nat_gateway"] + PRICES["public_ipv4"]),
        ),
        ("NLB (+ an IPv4 per AZ)", PRICES["nlb"] + cfg.availability_zones * PRICES["public_ipv4"]),
        ("KMS key", PRICES["kms_key"]),
    ]
    cpu, gpu = cfg.cpu_nodes, cfg.gpu_nodes
    desired = [
        (f"CPU nodes {cpu.desired_size} x {cpu.instance_types[0]}", _nodes(cpu, cpu.desired_size)),
        (f"GPU nodes {gpu.desired_size} x {gpu.instance_types[0]}", _nodes(gpu, gpu.desired_size)),
    ]
    base = sum(v for _, v in fixed)
    at_max = base + _nodes(cpu, cpu.max_size) + _nodes(gpu, gpu.max_size)
    return Estimate(cfg.stack, base + sum(v for _, v in desired), at_max, fixed + desired)


def main(argv: list[str]) -> None:
    for stack in argv or ["dev", "prod"]:
        est = estimate(parse_stack_file(stack))
        print(f"{stack}: ${est.at_desired:.2f}/hour at desired size, ${est.at_max:.2f}/hour at max")
        for label, value in est.lines:
            print(f"  {label:<40} ${value:.3f}/h")


if __name__ == "__main__":
    main(sys.argv[1:])
