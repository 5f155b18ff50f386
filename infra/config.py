"""The stack's configuration: one typed object, validated before any resource is declared.

Values live under the project namespace in ``Pulumi.<stack>.yaml`` (``clothing-serving:*``)
plus ``aws:region``. A bad value stops ``pulumi up``/``preview`` with a message that names
the key and says what is allowed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PROJECT = "clothing-serving"
REPO_ROOT = Path(__file__).resolve().parents[1]
SUPPORTED_K8S_VERSIONS = ("1.31", "1.32", "1.33", "1.34", "1.35")
GPU_FAMILIES = ("g4dn", "g5", "g6")
GPU_AMI_TYPES = ("AL2023_x86_64_NVIDIA", "BOTTLEROCKET_x86_64_NVIDIA")
CPU_AMI_TYPES = ("AL2023_x86_64_STANDARD", "BOTTLEROCKET_x86_64")


class ConfigError(ValueError):
    """Stack configuration that cannot be deployed; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


PositiveInt = Annotated[int, Field(ge=1)]


class NodeGroupConfig(_Strict):
    instance_types: list[str] = Field(alias="instanceTypes", min_length=1)
    min_size: Annotated[int, Field(ge=0)] = Field(alias="minSize")
    desired_size: Annotated[int, Field(ge=0)] = Field(alias="desiredSize")
    max_size: PositiveInt = Field(alias="maxSize")
    capacity_type: Literal["ON_DEMAND", "SPOT"] = Field(alias="capacityType", default="ON_DEMAND")
    disk_size_gb: Annotated[int, Field(ge=20, le=1000)] = Field(alias="diskSizeGb", default=50)
    ami_type: str = Field(alias="amiType")

    @model_validator(mode="after")
    def _sizes(self) -> NodeGroupConfig:
        if not self.min_size <= self.desired_size <= self.max_size:
            raise ValueError(
                f"need minSize <= desiredSize <= maxSize, got "
                f"{self.min_size} <= {self.desired_size} <= {self.max_size}"
            )
        return self


class CpuNodeGroupConfig(NodeGroupConfig):
    ami_type: Literal["AL2023_x86_64_STANDARD", "BOTTLEROCKET_x86_64"] = Field(
        alias="amiType", default="AL2023_x86_64_STANDARD"
    )


class GpuNodeGroupConfig(NodeGroupConfig):
    ami_type: Literal["AL2023_x86_64_NVIDIA", "BOTTLEROCKET_x86_64_NVIDIA"] = Field(
        alias="amiType", default="AL2023_x86_64_NVIDIA"
    )

    @field_validator("instance_types")
    @classmethod
    def _gpu_family(cls, value: list[str]) -> list[str]:
        for instance_type in value:
            if instance_type.split(".")[0] not in GPU_FAMILIES:
                raise ValueError(
                    f"{instance_type!r} is not a GPU instance type; use one of the "
                    f"{', '.join(GPU_FAMILIES)} families (e.g. g4dn.xlarge)"
                )
        return value

    @property
    def has_device_plugin(self) -> bool:
        """Bottlerocket's NVIDIA variant ships the device plugin; AL2023's does not."""
        return self.ami_type.startswith("BOTTLEROCKET")


class ScalingConfig(_Strict):
    replicas: PositiveInt
    min_replicas: PositiveInt = Field(alias="minReplicas")
    max_replicas: PositiveInt = Field(alias="maxReplicas")
    target_cpu_percent: Annotated[int, Field(ge=10, le=95)] = Field(
        alias="targetCpuPercent", default=70
    )
    cpu: str = "500m"
    memory: str = "512Mi"

    @model_validator(mode="after")
    def _bounds(self) -> ScalingConfig:
        if not self.min_replicas <= self.replicas <= self.max_replicas:
            raise ValueError(
                f"need minReplicas <= replicas <= maxReplicas, got "
                f"{self.min_replicas} <= {self.replicas} <= {self.max_replicas}"
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


class StackConfig(_Strict):
    stack: str
    region: str
    cluster_version: str = Field(alias="clusterVersion")
    availability_zones: Annotated[int, Field(ge=2, le=3)] = Field(
        alias="availabilityZones", default=2
    )
    nat_gateways: Literal["single", "onePerAz"] = Field(alias="natGateways")
    vpc_cidr: str = Field(alias="vpcCidr", default="10.0.0.0/16")
    public_access_cidrs: list[str] = Field(alias="publicAccessCidrs", min_length=1)
    cpu_nodes: CpuNodeGroupConfig = Field(alias="cpuNodes")
    gpu_nodes: GpuNodeGroupConfig = Field(alias="gpuNodes")
    gateway: ScalingConfig
    tf_serving: ScalingConfig = Field(alias="tfServing")
    model: ModelConfig = Field(default_factory=ModelConfig)

    @field_validator("cluster_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if value not in SUPPORTED_K8S_VERSIONS:
            raise ValueError(f"{value!r} is not one of {', '.join(SUPPORTED_K8S_VERSIONS)}")
        return value

    @field_validator("public_access_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not a CIDR block: {exc}") from None
        return value

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc(cls, value: str) -> str:
        network = ipaddress.ip_network(value, strict=True)
        if network.version != 4 or not network.is_private or network.prefixlen > 20:
            raise ValueError(f"{value!r} must be a private IPv4 block of /20 or larger")
        return value

    @model_validator(mode="after")
    def _gpu_capacity(self) -> StackConfig:
        if self.model.on_gpu and self.gpu_nodes.max_size < self.tf_serving.max_replicas:
            raise ValueError(
                f"tfServing.maxReplicas ({self.tf_serving.max_replicas}) needs one GPU node "
                f"each, but gpuNodes.maxSize is {self.gpu_nodes.max_size}"
            )
        return self


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        # Errors about the whole stack name their keys in the message itself.
        lines.append(f"  {PROJECT}:{key}: {message}" if key else f"  {PROJECT}:{message}")
    return "invalid stack configuration:\n" + "\n".join(lines)


def parse_config(values: Mapping[str, Any], *, stack: str, region: str | None) -> StackConfig:
    """Validate raw config values (keys without the project prefix)."""
    if not region:
        raise ConfigError("invalid stack configuration:\n  aws:region: required")
    try:
        return StackConfig.model_validate({**values, "stack": stack, "region": region})
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


# How each key is stored: plain text (a "1.34" must stay a string) or structured JSON.
TEXT_KEYS = ("clusterVersion", "natGateways", "vpcCidr")
JSON_KEYS = (
    "availabilityZones", "publicAccessCidrs", "cpuNodes", "gpuNodes",
    "gateway", "tfServing", "model",
)  # fmt: skip


def stack_file(stack: str) -> dict[str, Any]:
    """The ``config:`` map of ``Pulumi.<stack>.yaml``, keys as written (``project:key``)."""
    import yaml

    data = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())
    return dict(data.get("config") or {})


def parse_stack_file(stack: str) -> StackConfig:
    """Validate ``Pulumi.<stack>.yaml`` as ``pulumi up`` would, without Pulumi."""
    raw = stack_file(stack)
    values = {k.split(":", 1)[1]: v for k, v in raw.items() if k.startswith(f"{PROJECT}:")}
    return parse_config(values, stack=stack, region=raw.get("aws:region"))


def load_config() -> StackConfig:
    """The current stack's configuration, from Pulumi."""
    import pulumi

    config = pulumi.Config(PROJECT)
    values: dict[str, Any] = {}
    for key in TEXT_KEYS:
        if (text := config.get(key)) is not None:
            values[key] = text
    for key in JSON_KEYS:
        try:
            value = config.get_object(key)
        except pulumi.ConfigTypeError:
            raise ConfigError(
                f"invalid stack configuration:\n  {PROJECT}:{key}: not valid JSON/YAML"
            ) from None
        if value is not None:
            values[key] = value
    return parse_config(values, stack=pulumi.get_stack(), region=pulumi.Config("aws").get("region"))
