"""The stack config's sections: each group of keys as a typed model that checks its own
values (``infra.config.StackConfig`` holds them and the rules between them)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from infra.capacity import INSTANCE_TYPES, InstanceType, parse_cpu, parse_memory
from infra.project import REPO_ROOT


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


PositiveInt = Annotated[int, Field(ge=1)]
CapacityType = Literal["on-demand", "spot"]


def _known_type(name: str) -> InstanceType:
    if name not in INSTANCE_TYPES:
        raise ValueError(
            f"{name!r} is not an instance type this project has figures for; add it to "
            f"infra/capacity.py INSTANCE_TYPES (known: {', '.join(INSTANCE_TYPES)})"
        )
    return INSTANCE_TYPES[name]


class SystemNodesConfig(_Strict):
    """An EKS managed node group, fixed size, for what must not run on nodes Karpenter
    manages: Karpenter itself, CoreDNS, metrics-server."""

    instance_type: str = Field(alias="instanceType", default="t3.medium")
    size: PositiveInt = 1
    disk_size_gb: Annotated[int, Field(ge=20, le=1000)] = Field(alias="diskSizeGb", default=30)

    @field_validator("instance_type")
    @classmethod
    def _type(cls, value: str) -> str:
        _known_type(value)
        return value


class PoolConfig(_Strict):
    """A Karpenter NodePool: what it may launch and how much of it at most."""

    instance_types: list[str] = Field(alias="instanceTypes", min_length=1)
    capacity_types: list[CapacityType] = Field(alias="capacityTypes", min_length=1)
    disk_size_gb: Annotated[int, Field(ge=20, le=1000)] = Field(alias="diskSizeGb", default=50)

    @field_validator("instance_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        for name in value:
            _known_type(name)
        return value


class CpuPoolConfig(PoolConfig):
    # None: what the workloads need at their maximum plus a surge pod (infra.program)
    max_vcpus: PositiveInt | None = Field(alias="maxVcpus", default=None)

    @field_validator("instance_types")
    @classmethod
    def _no_gpu(cls, value: list[str]) -> list[str]:
        for name in value:
            if INSTANCE_TYPES[name].gpus:
                raise ValueError(f"{name!r} is a GPU instance type; list it in gpuNodes")
        return value


class GpuPoolConfig(PoolConfig):
    max_gpus: Annotated[int, Field(ge=1)] = Field(alias="maxGpus")
    ami_family: Literal["al2023", "bottlerocket"] = Field(alias="amiFamily", default="al2023")
    disk_size_gb: Annotated[int, Field(ge=50, le=1000)] = Field(alias="diskSizeGb", default=100)

    @field_validator("instance_types")
    @classmethod
    def _gpus(cls, value: list[str]) -> list[str]:
        for name in value:
            if not INSTANCE_TYPES[name].gpus:
                gpu_types = ", ".join(t for t, i in INSTANCE_TYPES.items() if i.gpus)
                raise ValueError(f"{name!r} is not a GPU instance type; use one of {gpu_types}")
        return value


class MonitoringConfig(_Strict):
    """On AWS, kube-prometheus-stack in the cluster (infra.monitoring): Prometheus, Grafana
    with the project's dashboard, the alert rules and NVIDIA's DCGM exporter on GPU nodes;
    with TF Serving on GPUs, KEDA scales it on the gateway's image rate that Prometheus
    holds (infra.demand). On a cluster of your own, the project's PodMonitors, alert rules
    and dashboard for the Prometheus operator already running in ``prometheusNamespace``
    (nothing installed)."""

    enabled: bool | None = None  # None: on AWS, off elsewhere
    prometheus_namespace: str | None = Field(alias="prometheusNamespace", default=None)
    retention_days: Annotated[int, Field(ge=1, le=30)] = Field(alias="retentionDays", default=7)

    @model_validator(mode="before")
    @classmethod
    def _gone(cls, values: Any) -> Any:
        if isinstance(values, dict) and "targetGpuPercent" in values:
            raise ValueError(
                "targetGpuPercent: no longer used: GPU utilisation does not track TF "
                "Serving's load, which now scales on its image rate (tfServing.imagesPerSecond,"
                " docs/operations.md 'Scaling by load'); remove the key"
            )
        return values


class ScalingConfig(_Strict):
    min_replicas: PositiveInt = Field(alias="minReplicas")
    max_replicas: PositiveInt = Field(alias="maxReplicas")
    target_cpu_percent: Annotated[int, Field(ge=10, le=95)] = Field(
        alias="targetCpuPercent", default=70
    )
    # None: the workload's own size (infra.gateway.POD; TF Serving's follows model.onGpu,
    # infra.tf_serving.GPU_POD and CPU_POD)
    cpu: str | None = None
    memory: str | None = None

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: str | None) -> str | None:
        if value is not None:
            parse_cpu(value)
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None:
            parse_memory(value)
        return value

    @model_validator(mode="after")
    def _bounds(self) -> ScalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"need minReplicas <= maxReplicas, got {self.min_replicas} > {self.max_replicas}"
            )
        return self


class TfServingScalingConfig(ScalingConfig):
    """TF Serving's pods. On GPUs with monitoring on AWS they scale on the images per
    second the gateway asks for (infra.demand): ``imagesPerSecond`` is what one replica
    serves at its ceiling (None: infra.demand's estimate; ``bench.scaling_calibration``
    measures it), and with ``sleepAfterMinutes`` they go to zero replicas after that long
    without a /predict, until the next one wakes them."""

    images_per_second: Annotated[float, Field(gt=0)] | None = Field(
        alias="imagesPerSecond", default=None
    )
    sleep_after_minutes: Annotated[int, Field(ge=5, le=24 * 60)] | None = Field(
        alias="sleepAfterMinutes", default=None
    )


class ModelConfig(_Strict):
    """Which exported model to serve (by default the only one under ``exportDir``). Its
    labels, input size and preprocessing travel in its serving signature."""

    name: str | None = Field(default=None, pattern=r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")
    export_dir: str = Field(alias="exportDir", default="services/tf-serving/models")
    on_gpu: bool | None = Field(alias="onGpu", default=None)  # None: on AWS only

    @property
    def export_path(self) -> Path:
        path = Path(self.export_dir)
        return path if path.is_absolute() else REPO_ROOT / path


_CERTIFICATE_ARN = re.compile(
    r"^arn:aws[a-z-]*:acm:([a-z0-9-]+):\d{12}:certificate/[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$"
)
_HOSTNAME = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_HOSTED_ZONE = re.compile(r"^Z[A-Z0-9]{1,31}$")


class TlsConfig(_Strict):
    """HTTPS at the load balancer, for a DNS name: an ACM certificate of that name, in the
    stack's region. Optionally the Route 53 hosted zone where the stack keeps the name
    pointed at the load balancer."""

    certificate_arn: str = Field(alias="certificateArn")
    dns_name: str = Field(alias="dnsName")
    hosted_zone_id: str | None = Field(alias="hostedZoneId", default=None)

    @field_validator("certificate_arn")
    @classmethod
    def _arn(cls, value: str) -> str:
        if not _CERTIFICATE_ARN.match(value):
            raise ValueError(
                f"{value!r} is not an ACM certificate ARN "
                "(arn:aws:acm:<region>:<account>:certificate/<id>)"
            )
        return value

    @field_validator("dns_name")
    @classmethod
    def _dns_name(cls, value: str) -> str:
        if not _HOSTNAME.match(value):
            raise ValueError(
                f"{value!r} is not a fully qualified DNS name (lowercase, no dot at the end)"
            )
        return value

    @field_validator("hosted_zone_id")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None and not _HOSTED_ZONE.match(value):
            raise ValueError(f"{value!r} is not a Route 53 hosted zone id (Z...)")
        return value

    @property
    def certificate_region(self) -> str:
        match = _CERTIFICATE_ARN.match(self.certificate_arn)
        assert match is not None  # validated above
        return match.group(1)


class KubernetesConfig(_Strict):
    """Which cluster a ``local`` or ``cluster`` stack deploys to: a kubeconfig file (None:
    ``KUBECONFIG`` or ``~/.kube/config``) and a context in it (None: its current one)."""

    kubeconfig: str | None = None
    context: str | None = None


class Toleration(_Strict):
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class GpuPlacementConfig(_Strict):
    """Where TF Serving's GPU pods may run in a cluster of your own: the labels of its GPU
    nodes, and the taints of theirs to tolerate."""

    node_selector: dict[str, str] = Field(alias="nodeSelector", default_factory=dict)
    tolerations: list[Toleration] = Field(
        default_factory=lambda: [Toleration(key="nvidia.com/gpu", effect="NoSchedule")]
    )
