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
from dataclasses import dataclass
from datetime import date
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from infra.config_sections import (
    CpuPoolConfig,
    GpuPlacementConfig,
    GpuPoolConfig,
    KubernetesConfig,
    ModelConfig,
    MonitoringConfig,
    ScalingConfig,
    SystemNodesConfig,
    TfServingScalingConfig,
    TlsConfig,
    _Strict,
)
from infra.eks_versions import support_problem
from infra.project import PROJECT, REPO_ROOT

LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731)
_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]+$")
# What `aws sts get-caller-identity` prints for a role's session: EKS access entries refuse it.
_SESSION_ARN = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([\w+=,.@-]+)/[^/]+$")


Target = Literal["aws", "local", "cluster"]


class ConfigError(ValueError):
    """Stack configuration that cannot be deployed; the message names the key."""


@dataclass(frozen=True)
class AwsKeys:
    """The keys an ``aws`` stack must set, for the AWS target (``StackConfig.on_aws``)."""

    region: str
    cluster_version: str
    nat_gateways: Literal["single", "onePerAz"]
    cpu_nodes: CpuPoolConfig
    gpu_nodes: GpuPoolConfig


# The keys that only some targets use (by field name): any other target refuses them.
_AWS = frozenset({"aws"})
_OWN_CLUSTER = frozenset({"local", "cluster"})
TARGET_KEYS = {
    "cluster_version": _AWS, "availability_zones": _AWS, "nat_gateways": _AWS,
    "vpc_cidr": _AWS, "public_access_cidrs": _AWS, "tls": _AWS, "admin_principal_arns": _AWS,
    "log_retention_days": _AWS, "system_nodes": _AWS, "cpu_nodes": _AWS, "gpu_nodes": _AWS,
    "kubernetes": _OWN_CLUSTER, "registry": _OWN_CLUSTER, "gateway_service": _OWN_CLUSTER,
    "gpu_placement": frozenset({"cluster"}),
}  # fmt: skip
REQUIRED_ON_AWS = ("cluster_version", "nat_gateways", "cpu_nodes", "gpu_nodes")
# kind's local registry, as its guide sets it up (docs/local.md)
LOCAL_REGISTRY = "localhost:5001"


class StackConfig(_Strict):
    stack: str
    region: str | None  # aws:region, for the AWS target
    today: date
    # Where the stack runs: AWS (VPC, EKS, Karpenter, ECR, all made by the stack), a local
    # cluster (kind, k3d, minikube, Docker Desktop: images through a local registry), or a
    # cluster you already run (images through a registry you name).
    target: Target = "aws"
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    registry: str | None = Field(default=None, pattern=r"^[a-z0-9.-]+(:\d+)?(/[a-z0-9._/-]+)?$")
    # How clients reach the gateway: a LoadBalancer Service (a cloud's, MetalLB,
    # cloud-provider-kind, k3d's) or, without one, a ClusterIP Service to port-forward to.
    gateway_service: Literal["LoadBalancer", "ClusterIP"] = Field(
        alias="gatewayService", default="LoadBalancer"
    )
    gpu_placement: GpuPlacementConfig = Field(
        alias="gpuPlacement", default_factory=GpuPlacementConfig
    )
    cluster_version: str | None = Field(alias="clusterVersion", default=None)
    availability_zones: Annotated[int, Field(ge=2, le=3)] = Field(
        alias="availabilityZones", default=2
    )
    nat_gateways: Literal["single", "onePerAz"] | None = Field(alias="natGateways", default=None)
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
    cpu_nodes: CpuPoolConfig | None = Field(alias="cpuNodes", default=None)
    gpu_nodes: GpuPoolConfig | None = Field(alias="gpuNodes", default=None)
    gateway: ScalingConfig
    tf_serving: TfServingScalingConfig = Field(alias="tfServing")
    model: ModelConfig = Field(default_factory=ModelConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)

    @model_validator(mode="after")
    def _target(self) -> StackConfig:
        """Each key belongs to the targets that use it: another target refuses it rather
        than ignore it; an aws stack sets what AWS needs; a cluster of your own gets its
        images from a registry."""
        alien = sorted(
            (StackConfig.model_fields[name].alias or name)
            for name in self.model_fields_set
            if self.target not in TARGET_KEYS.get(name, {self.target})
        )
        if alien:
            raise ValueError(
                f"target {self.target} does not use {', '.join(alien)}: remove "
                f"{'it' if len(alien) == 1 else 'them'} (each configures another target)"
            )
        if self.target == "aws":
            missing = [
                StackConfig.model_fields[n].alias or n
                for n in REQUIRED_ON_AWS
                if getattr(self, n) is None
            ]
            if missing:  # one line per key, as the other errors name theirs
                raise ValueError(
                    f"\n  {PROJECT}:".join(f"{key}: required (target aws)" for key in missing)
                )
        if self.target == "cluster" and self.registry is None:
            raise ValueError(
                "target cluster needs registry: where `pulumi up` pushes the images and the "
                "cluster pulls them from (e.g. ghcr.io/you, or an ECR repository's host)"
            )
        if self.target == "local" and self.model.on_gpu:
            raise ValueError("model.onGpu: a local cluster serves from CPU (false, its default)")
        monitoring = self.monitoring
        if self.target == "aws" and monitoring.prometheus_namespace is not None:
            raise ValueError(
                "monitoring.prometheusNamespace: on AWS the stack runs its own Prometheus"
            )
        if self.target != "aws" and monitoring.enabled and not monitoring.prometheus_namespace:
            raise ValueError(
                "monitoring.prometheusNamespace: required with monitoring.enabled outside AWS: "
                "the namespace of the Prometheus operator already running in the cluster"
            )
        return self

    @property
    def on_aws(self) -> AwsKeys:
        """The keys an aws stack has (the checks above make sure)."""
        assert self.target == "aws"
        assert self.region
        assert self.cluster_version
        assert self.nat_gateways
        assert self.cpu_nodes
        assert self.gpu_nodes
        return AwsKeys(
            self.region, self.cluster_version, self.nat_gateways, self.cpu_nodes, self.gpu_nodes
        )

    @property
    def on_gpu(self) -> bool:
        """TF Serving on GPUs: by default on AWS, nowhere else unless ``model.onGpu``."""
        return self.target == "aws" if self.model.on_gpu is None else self.model.on_gpu

    @property
    def monitored(self) -> bool:
        """Monitoring on: by default on AWS only."""
        enabled = self.monitoring.enabled
        return self.target == "aws" if enabled is None else enabled

    @property
    def scales_on_demand(self) -> bool:
        """TF Serving scales on the gateway's image rate (KEDA, reading the stack's own
        Prometheus): on GPUs on AWS with monitoring; elsewhere on CPU."""
        return self.target == "aws" and self.monitored and self.on_gpu

    @model_validator(mode="after")
    def _demand(self) -> StackConfig:
        if self.tf_serving.sleep_after_minutes is not None and self.high_availability:
            raise ValueError(
                "tfServing.sleepAfterMinutes: a highly available stack keeps "
                "tfServing.minReplicas serving at all times: remove it (or highAvailability)"
            )
        return self

    @property
    def warnings(self) -> list[str]:
        """Keys set that this stack does not use (each message starts with the key): TF
        Serving's demand keys where it scales on CPU, so that ``model.onGpu: false`` or
        ``monitoring.enabled: false`` alone switch a stack over."""
        tf = self.tf_serving
        if self.scales_on_demand:
            return []
        return [
            f"tfServing.{key}: ignored: only TF Serving on GPUs on AWS with monitoring on "
            "scales on the images asked for (KEDA reads them from the stack's Prometheus) "
            f"and may sleep; this stack scales it on CPU and keeps tfServing.minReplicas"
            for key, value in (
                ("imagesPerSecond", tf.images_per_second),
                ("sleepAfterMinutes", tf.sleep_after_minutes),
            )
            if value is not None
        ]

    @field_validator("cluster_version")
    @classmethod
    def _version(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
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
        if self.tls and self.region and self.tls.certificate_region != self.region:
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
        if self.target == "aws" and self.system_nodes.size < 2:
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
    if values.get("target", "aws") == "aws" and not region:
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
    if get_origin(annotation) in (Union, UnionType):  # optional: what it is when set
        [annotation] = [a for a in get_args(annotation) if a is not type(None)]
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
    if cfg.target == "aws" and cfg.public_access_cidrs is None:  # `make cost` need not say
        raise config_error(
            f"publicAccessCidrs: not set: say which networks may reach the Kubernetes API in "
            f"Pulumi.{cfg.stack}.yaml: yours (e.g. 203.0.113.7/32; `curl -s "
            "https://checkip.amazonaws.com` prints your address), your CI's, or [] for a "
            "private endpoint reached from inside the VPC (docs/production.md, 'Reaching a "
            "private Kubernetes API')"
        )
    return cfg
