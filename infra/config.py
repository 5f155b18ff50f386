"""The stack's configuration: its schema and how it is loaded, validated before any
resource is declared.

Values live under the project namespace in ``Pulumi.<stack>.yaml`` (``clothing-serving:*``)
plus ``aws:region``. A bad value stops ``pulumi up``/``preview`` with a message that names
the key and says what is allowed. This module checks each value's form and the rules
between keys; what the values mean for the resources (pods, pools, what fits where) is
``infra.program``'s, which turns this object into each component's Args and checks those.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from infra.capacity import INSTANCE_TYPES, InstanceType, parse_cpu, parse_memory
from infra.eks_versions import support_problem
from infra.project import PROJECT, REPO_ROOT

LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731)


class ConfigError(ValueError):
    """Stack configuration that cannot be deployed; the message names the key."""


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
    """kube-prometheus-stack in the cluster (infra.monitoring): Prometheus, Grafana with the
    project's dashboard, the alert rules, NVIDIA's DCGM exporter on GPU nodes, and
    prometheus-adapter, through which TF Serving scales on its GPUs' utilisation."""

    enabled: bool = True
    retention_days: Annotated[int, Field(ge=1, le=30)] = Field(alias="retentionDays", default=7)
    # TF Serving's autoscaling target: the average GPU utilisation of its pods (%)
    target_gpu_percent: Annotated[int, Field(ge=20, le=95)] = Field(
        alias="targetGpuPercent", default=60
    )


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


class ModelConfig(_Strict):
    """Which exported model to serve (by default the only one under ``exportDir``). Its
    labels, input size and preprocessing travel in its serving signature."""

    name: str | None = Field(default=None, pattern=r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")
    export_dir: str = Field(alias="exportDir", default="services/tf-serving/models")
    on_gpu: bool = Field(alias="onGpu", default=True)

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


_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]+$")
# What `aws sts get-caller-identity` prints for a role's session: EKS access entries refuse it.
_SESSION_ARN = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([\w+=,.@-]+)/[^/]+$")


class StackConfig(_Strict):
    stack: str
    region: str
    today: date
    cluster_version: str = Field(alias="clusterVersion")
    availability_zones: Annotated[int, Field(ge=2, le=3)] = Field(
        alias="availabilityZones", default=2
    )
    nat_gateways: Literal["single", "onePerAz"] = Field(alias="natGateways")
    vpc_cidr: str = Field(alias="vpcCidr", default="10.0.0.0/16")
    # Who may reach the Kubernetes API over the internet ([]: nobody, a private endpoint).
    # No default: a deployment must say (``api_cidrs``).
    public_access_cidrs: list[str] | None = Field(alias="publicAccessCidrs", default=None)
    # Who may reach the gateway's load balancer.
    allowed_client_cidrs: list[str] = Field(
        alias="allowedClientCidrs", default_factory=lambda: ["0.0.0.0/0"], min_length=1
    )
    # Refuse to deploy without API keys (``infra.api_keys``: they are secrets, read apart).
    require_api_keys: bool = Field(alias="requireApiKeys", default=False)
    tls: TlsConfig | None = None
    admin_principal_arns: list[str] = Field(alias="adminPrincipalArns", default_factory=list)
    log_retention_days: int = Field(alias="logRetentionDays", default=30)
    high_availability: bool = Field(alias="highAvailability", default=False)
    parked: bool = False
    system_nodes: SystemNodesConfig = Field(alias="systemNodes", default_factory=SystemNodesConfig)
    cpu_nodes: CpuPoolConfig = Field(alias="cpuNodes")
    gpu_nodes: GpuPoolConfig = Field(alias="gpuNodes")
    gateway: ScalingConfig
    tf_serving: ScalingConfig = Field(alias="tfServing")
    model: ModelConfig = Field(default_factory=ModelConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    @field_validator("cluster_version")
    @classmethod
    def _version(cls, value: str, info: ValidationInfo) -> str:
        problem = support_problem(value, info.data["today"])
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("public_access_cidrs", "allowed_client_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str] | None) -> list[str] | None:
        for cidr in value or ():
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a CIDR block: {exc}") from None
        return value

    @field_validator("admin_principal_arns")
    @classmethod
    def _arns(cls, value: list[str]) -> list[str]:
        for arn in value:
            session = _SESSION_ARN.match(arn)
            if session:
                partition, account, role = session.groups()
                raise ValueError(
                    f"{arn!r} is a role's session, which EKS access entries refuse: use the "
                    f"role, arn:{partition}:iam::{account}:role/{role} (with its path, if any)"
                )
            if not _ARN.match(arn):
                raise ValueError(f"{arn!r} is not an IAM role or user ARN")
        if len(set(value)) != len(value):
            raise ValueError("ARNs must be unique")
        return value

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(
                f"{value} is not a CloudWatch retention; use one of {LOG_RETENTION_DAYS}"
            )
        return value

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc(cls, value: str) -> str:
        network = ipaddress.ip_network(value, strict=True)
        if network.version != 4 or not network.is_private or network.prefixlen > 20:
            raise ValueError(f"{value!r} must be a private IPv4 block of /20 or larger")
        return value

    @model_validator(mode="after")
    def _certificate_region(self) -> StackConfig:
        if self.tls and self.tls.certificate_region != self.region:
            raise ValueError(
                f"tls.certificateArn: the certificate is in {self.tls.certificate_region}, but "
                f"the load balancer is in {self.region} (aws:region); a load balancer takes "
                "certificates from its own region only"
            )
        return self

    @model_validator(mode="after")
    def _high_availability(self) -> StackConfig:
        if not self.high_availability:
            return self
        for key, scaling in (("gateway", self.gateway), ("tfServing", self.tf_serving)):
            if scaling.min_replicas < 2:
                raise ValueError(
                    f"highAvailability needs {key}.minReplicas >= 2 (pods in two zones), "
                    f"got {scaling.min_replicas}"
                )
        if self.system_nodes.size < 2:
            raise ValueError(
                f"highAvailability needs systemNodes.size >= 2, got {self.system_nodes.size}"
            )
        return self


def config_error(*problems: str) -> ConfigError:
    """A ConfigError for ``problems``, each starting with the key it is about (without the
    project prefix)."""
    lines = "\n".join(f"  {PROJECT}:{problem}" for problem in problems)
    return ConfigError(f"invalid stack configuration:\n{lines}")


def _describe(error: ValidationError) -> ConfigError:
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        # Errors about the whole stack name their keys in the message itself.
        problems.append(f"{key}: {message}" if key else message)
    return config_error(*problems)


def parse_config(
    values: Mapping[str, Any], *, stack: str, region: str | None, today: date | None = None
) -> StackConfig:
    """Validate raw config values (keys without the project prefix)."""
    if not region:
        raise ConfigError("invalid stack configuration:\n  aws:region: required")
    try:
        return StackConfig.model_validate(
            {**values, "stack": stack, "region": region, "today": today or date.today()}
        )
    except ValidationError as exc:
        raise _describe(exc) from None


# What parse_config adds to the keys of the file.
_CONTEXT = ("stack", "region", "today")


def _stored_as_text(annotation: Any) -> bool:
    """Pulumi keeps a key as plain text or as structured JSON: a string or a choice of
    strings is text (a "1.34" must stay a string), anything else JSON."""
    if annotation is str:
        return True
    return get_origin(annotation) is Literal and all(
        isinstance(a, str) for a in get_args(annotation)
    )


def config_keys() -> dict[str, bool]:
    """Every key of the stack config (its name in the file), and whether it is text."""
    return {
        field.alias or name: _stored_as_text(field.annotation)
        for name, field in StackConfig.model_fields.items()
        if name not in _CONTEXT
    }


def stack_file(stack: str) -> dict[str, Any]:
    """The ``config:`` map of ``Pulumi.<stack>.yaml``, keys as written (``project:key``)."""
    import yaml

    data = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())
    return dict(data.get("config") or {})


def parse_stack_file(stack: str, today: date | None = None) -> StackConfig:
    """Validate ``Pulumi.<stack>.yaml`` as ``pulumi up`` would, without Pulumi."""
    raw = stack_file(stack)
    values = {k.split(":", 1)[1]: v for k, v in raw.items() if k.startswith(f"{PROJECT}:")}
    return parse_config(values, stack=stack, region=raw.get("aws:region"), today=today)


def load_config() -> StackConfig:
    """The current stack's configuration, from Pulumi."""
    import pulumi

    config = pulumi.Config(PROJECT)
    values: dict[str, Any] = {}
    for key, text in config_keys().items():
        try:
            value = config.get(key) if text else config.get_object(key)
        except pulumi.ConfigTypeError:
            raise config_error(f"{key}: not valid JSON/YAML") from None
        if value is not None:
            values[key] = value
    cfg = parse_config(values, stack=pulumi.get_stack(), region=pulumi.Config("aws").get("region"))
    if cfg.public_access_cidrs is None:  # a deployment must say; `make cost` need not
        raise config_error(
            f"publicAccessCidrs: not set: say which networks may reach the Kubernetes API in "
            f"Pulumi.{cfg.stack}.yaml: yours (e.g. 203.0.113.7/32; `curl -s "
            "https://checkip.amazonaws.com` prints your address), your CI's, or [] for a "
            "private endpoint reached from inside the VPC (see the README, 'Reaching a "
            "private Kubernetes API')"
        )
    return cfg
