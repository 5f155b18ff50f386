"""What fits on a node: the instance types the stacks may use, what of each is left for
pods after the node's own reservations and DaemonSets, how many nodes a workload's pods
need, and the check that every workload fits its pool (``check``).

The figures are the ones Karpenter and the EKS AMIs use:

- kube-reserved CPU: 6% of the first core, 1% of the second, 0.5% of cores 3-4, 0.25%
  above; kube-reserved memory: 255 MiB + 11 MiB per pod the node may run (the VPC CNI's
  max pods); hard eviction at 100 MiB free (awslabs/amazon-eks-ami
  ``nodeadm/internal/kubelet/config.go``);
- Karpenter also sets 7.5% of memory aside for the hypervisor (``vmMemoryOverheadPercent``),
  so its ``reference/instance-types.md`` lists t3.large as 1930m / 6837Mi allocatable;
- the DaemonSets on every node (``NODE_DAEMONSETS``) and on GPU nodes.

Prices are ``PRICE_REGION`` on-demand Linux list prices in USD per hour (edit for another
region); spot is charged at on-demand here, an upper bound.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

PRICE_REGION = "us-east-1"  # where the prices below (and infra.cost's) are from
VM_MEMORY_OVERHEAD = 0.075
EVICTION_MIB = 100


@dataclass(frozen=True)
class Resources:
    cpu_m: int  # millicores
    memory_mib: int

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu_m + other.cpu_m, self.memory_mib + other.memory_mib)


NOTHING = Resources(0, 0)


def parse_cpu(quantity: str) -> int:
    """Kubernetes CPU quantity -> millicores ("500m", "1", "1.5")."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m?)", quantity.strip())
    if not match:
        raise ValueError(f"{quantity!r} is not a CPU quantity such as 500m or 2")
    value = float(match.group(1))
    return math.ceil(value if match.group(2) else value * 1000)


_MEMORY_UNITS = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}


def parse_memory(quantity: str) -> int:
    """Kubernetes memory quantity -> MiB ("512Mi", "6Gi")."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti)", quantity.strip())
    if not match:
        raise ValueError(f"{quantity!r} is not a memory quantity such as 512Mi or 6Gi")
    return math.ceil(float(match.group(1)) * _MEMORY_UNITS[match.group(2)])


@dataclass(frozen=True)
class DaemonSet:
    name: str
    requests: Resources


# On every node: what EKS's own add-ons request (aws-node: the VPC CNI chart's 25m;
# kube-proxy: the EKS add-on's 100m; the pod identity agent requests nothing).
NODE_DAEMONSETS = (
    DaemonSet("aws-node", Resources(25, 0)),
    DaemonSet("kube-proxy", Resources(100, 0)),
    DaemonSet("eks-pod-identity-agent", Resources(0, 0)),
)
# On GPU nodes (AL2023 NVIDIA AMI), the device plugin this project deploys.
DEVICE_PLUGIN = DaemonSet("nvidia-device-plugin", Resources(10, 32))


# With monitoring on (infra.monitoring, which sets these requests in the charts' values):
# Prometheus's node exporter on every node, NVIDIA's DCGM exporter on GPU nodes.
NODE_EXPORTER = DaemonSet("node-exporter", Resources(20, 32))
DCGM_EXPORTER = DaemonSet("dcgm-exporter", Resources(100, 128))


@dataclass(frozen=True)
class SystemPod:
    name: str
    requests: Resources


# What runs on the system node group (one node must hold them all). Karpenter's requests
# are set by this project (its docs suggest 1 CPU / 1 GiB for big clusters); CoreDNS (two
# replicas) and metrics-server are the EKS add-ons' defaults.
KARPENTER = SystemPod("karpenter", Resources(500, 1024))
SYSTEM_PODS = (
    KARPENTER,
    SystemPod("coredns", Resources(100, 70)),
    SystemPod("coredns", Resources(100, 70)),
    SystemPod("metrics-server", Resources(100, 200)),
)


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_gib: int
    gpus: int
    max_pods: int  # VPC CNI without prefix delegation: ENIs x (IPs per ENI - 1) + 2
    hourly_usd: float

    def _reserved_cpu_m(self) -> int:
        tiers = ((1, 60.0), (1, 10.0), (2, 5.0))  # cores, millicores reserved per core
        reserved, left = 0.0, self.vcpus
        for cores, per_core in tiers:
            taken = min(cores, left)
            reserved += taken * per_core
            left -= taken
        return math.ceil(reserved + left * 2.5)

    def allocatable(self, daemonsets: tuple[DaemonSet, ...]) -> Resources:
        """What is left for workload pods after reservations and ``daemonsets``."""
        memory = self.memory_gib * 1024 * (1 - VM_MEMORY_OVERHEAD)
        memory -= 255 + 11 * self.max_pods + EVICTION_MIB
        free = Resources(self.vcpus * 1000 - self._reserved_cpu_m(), math.floor(memory))
        for ds in daemonsets:
            free = Resources(
                free.cpu_m - ds.requests.cpu_m, free.memory_mib - ds.requests.memory_mib
            )
        return free

    def pods_that_fit(self, pod: Resources, gpus: int, daemonsets: tuple[DaemonSet, ...]) -> int:
        free = self.allocatable(daemonsets)
        counts = [
            free.cpu_m // pod.cpu_m if pod.cpu_m else self.max_pods,
            free.memory_mib // pod.memory_mib if pod.memory_mib else self.max_pods,
            self.max_pods - len(daemonsets),
        ]
        if gpus:
            counts.append(self.gpus // gpus)
        return max(0, min(counts))


INSTANCE_TYPES = {
    t.name: t
    for t in (
        InstanceType("t3.micro", 2, 1, 0, 4, 0.0104),
        InstanceType("t3.medium", 2, 4, 0, 17, 0.0416),
        InstanceType("t3.large", 2, 8, 0, 35, 0.0832),
        InstanceType("t3.xlarge", 4, 16, 0, 58, 0.1664),
        InstanceType("m6i.large", 2, 8, 0, 29, 0.096),
        InstanceType("m6i.xlarge", 4, 16, 0, 58, 0.192),
        InstanceType("m7i.large", 2, 8, 0, 29, 0.1008),
        InstanceType("c6i.large", 2, 4, 0, 29, 0.085),
        InstanceType("c6i.xlarge", 4, 8, 0, 58, 0.17),
        InstanceType("g4dn.xlarge", 4, 16, 1, 29, 0.526),
        InstanceType("g4dn.2xlarge", 8, 32, 1, 29, 0.752),
        InstanceType("g5.xlarge", 4, 16, 1, 58, 1.006),
        InstanceType("g5.2xlarge", 8, 32, 1, 58, 1.212),
        InstanceType("g6.xlarge", 4, 16, 1, 58, 0.8048),
        InstanceType("g6.2xlarge", 8, 32, 1, 58, 0.9776),
    )
}


@dataclass(frozen=True)
class MonitoringPod:
    name: str
    requests: Resources
    memory_limit_mib: int


# The monitoring stack's pods, on the CPU pool (requests and memory limits; each pod's
# sidecars, such as the config reloaders, included), and KEDA's, which scale TF Serving on
# what that Prometheus holds. KEDA's are counted wherever monitoring runs (an upper bound
# where TF Serving is on CPU and KEDA is not installed), with the chart's limits and half
# its 100m requests, so that dev's gateway and monitoring pods still fit one 2-vCPU node
# (a request reserves; the limit bounds what they may use).
MONITORING_PODS = (
    MonitoringPod("prometheus", Resources(260, 1074), 3072),
    MonitoringPod("grafana", Resources(100, 320), 512),
    MonitoringPod("prometheus-operator", Resources(50, 128), 256),
    MonitoringPod("kube-state-metrics", Resources(50, 128), 256),
    MonitoringPod("alertmanager", Resources(35, 114), 256),
    MonitoringPod("keda-operator", Resources(50, 100), 1000),
    MonitoringPod("keda-metrics-apiserver", Resources(50, 100), 1000),
    MonitoringPod("keda-admission-webhooks", Resources(50, 100), 1000),
)


def daemonsets_on(instance: InstanceType, monitoring: bool) -> tuple[DaemonSet, ...]:
    daemonsets = NODE_DAEMONSETS + ((DEVICE_PLUGIN,) if instance.gpus else ())
    if monitoring:
        daemonsets += (NODE_EXPORTER,) + ((DCGM_EXPORTER,) if instance.gpus else ())
    return daemonsets


def nodes_needed(
    instance: InstanceType, pod: Resources, gpus: int, pods: int, monitoring: bool
) -> int:
    """Nodes of ``instance`` that ``pods`` such pods need (math.inf-free: 0 if none fit)."""
    per_node = instance.pods_that_fit(pod, gpus, daemonsets_on(instance, monitoring))
    return math.ceil(pods / per_node) if per_node else 0


def monitoring_nodes(instance: InstanceType) -> int:
    """Nodes of ``instance`` that the monitoring pods need, on their own (0: one of them
    does not fit on it)."""
    free = instance.allocatable(daemonsets_on(instance, monitoring=True))
    if any(
        p.requests.cpu_m > free.cpu_m or p.requests.memory_mib > free.memory_mib
        for p in MONITORING_PODS
    ):
        return 0
    total = sum((p.requests for p in MONITORING_PODS), NOTHING)
    return max(math.ceil(total.cpu_m / free.cpu_m), math.ceil(total.memory_mib / free.memory_mib))


@dataclass(frozen=True)
class Workload:
    """A workload's pods as capacity planning sees them (the workload's Args make it from
    the values its pods are built from)."""

    requests: Resources  # per pod, sidecars included
    gpus: int  # per pod
    minimum: int
    maximum: int
    surge: int  # pods a rolling update adds before it removes one
    size: str  # the pod's size as the config writes it, for messages ("2 CPU, 6Gi")


@dataclass(frozen=True)
class Pool:
    """A node pool as capacity planning sees it; ``key`` and ``limit_key`` name it in the
    stack config, for messages."""

    key: str
    types: tuple[InstanceType, ...]
    limit: int  # vCPUs, or GPUs where ``gpus``
    limit_key: str
    gpus: bool
    disk_size_gb: int


@dataclass(frozen=True)
class Tier:
    """A workload (named by its config key) and the pool its pods run in."""

    key: str
    workload: Workload
    pool: Pool


def cpu_vcpus_needed(
    tiers: list[Tier], cpu_types: tuple[InstanceType, ...], monitoring: bool
) -> tuple[int, list[str]]:
    """The vCPUs the CPU pool needs for every workload without a GPU at its maximum plus
    its surge pods, and for the monitoring pods, each on the pool's worst instance type
    for it; and what needs them, for messages. Pods that fit no type count nothing here
    (``check`` refuses them)."""
    vcpus, needs = 0, []
    for tier in tiers:
        if tier.pool.gpus:
            continue
        work = tier.workload
        pods = work.maximum + work.surge
        vcpus += max(
            nodes_needed(instance, work.requests, work.gpus, pods, monitoring) * instance.vcpus
            for instance in tier.pool.types
        )
        needs.append(f"{tier.key}.maxReplicas ({work.maximum}) + {work.surge} surge pod")
    if monitoring:
        vcpus += max(monitoring_nodes(instance) * instance.vcpus for instance in cpu_types)
        needs.append("the monitoring pods (monitoring.enabled)")
    return vcpus, needs


def check(tiers: list[Tier], cpu_pool: Pool, system: InstanceType, monitoring: bool) -> None:
    """Each pod fits on each instance type its pool may launch; each autoscaler's maximum
    plus its surge pods fits within its pool's limit, the monitoring pods counted on the
    CPU pool; the system pods fit on a system node (ValueError naming the keys)."""
    for tier in tiers:
        key, work, pool = tier.key, tier.workload, tier.pool
        pods = work.maximum + work.surge
        for instance in pool.types:
            if not nodes_needed(instance, work.requests, work.gpus, pods, monitoring):
                free = instance.allocatable(daemonsets_on(instance, monitoring))
                raise ValueError(
                    f"a {key} pod ({work.size}) does not fit on {instance.name} "
                    f"({free.cpu_m}m, {free.memory_mib}Mi left after the node's reservations "
                    f"and DaemonSets): change {key}.cpu/memory or {pool.key}.instanceTypes"
                )
        if pool.gpus and pods * work.gpus > pool.limit:
            raise ValueError(
                f"{key}.maxReplicas ({work.maximum}) + {work.surge} surge pod need "
                f"{pods * work.gpus} GPUs but {pool.key}.{pool.limit_key} is {pool.limit}"
            )
    if monitoring:
        for instance in cpu_pool.types:
            if not monitoring_nodes(instance):
                raise ValueError(
                    f"the monitoring pods (the largest: Prometheus) do not fit on "
                    f"{instance.name}: change {cpu_pool.key}.instanceTypes or set "
                    "monitoring.enabled to false"
                )
    needed = sum((pod.requests for pod in SYSTEM_PODS), NOTHING)
    free = system.allocatable(daemonsets_on(system, monitoring))
    if needed.cpu_m > free.cpu_m or needed.memory_mib > free.memory_mib:
        raise ValueError(
            f"systemNodes.instanceType {system.name} leaves {free.cpu_m}m / {free.memory_mib}Mi "
            f"for pods, but the system pods (Karpenter, CoreDNS, metrics-server) request "
            f"{needed.cpu_m}m / {needed.memory_mib}Mi"
        )
    vcpus, needs = cpu_vcpus_needed(tiers, cpu_pool.types, monitoring)
    if vcpus > cpu_pool.limit:
        raise ValueError(
            f"{' and '.join(needs)} may need {vcpus} vCPUs of {cpu_pool.key}.instanceTypes, "
            f"but {cpu_pool.key}.{cpu_pool.limit_key} is {cpu_pool.limit}"
        )
