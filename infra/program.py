"""The whole stack, wired from its components. ``main()`` is what ``pulumi up`` runs.

This is the one module that reads the stack config: ``plan`` turns it into the small typed
Args each component owns (and checks that the pods those Args describe fit the node pools
they run in), and ``main`` hands each component only the values it needs, so what depends
on what is visible here. ``make cost`` prices the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from infra import capacity
from infra.api_keys import key_ids, load_key_file
from infra.aws import AwsArgs, AwsPlatform
from infra.cluster import CPU_NODES, GPU_NODES, SystemNodesArgs
from infra.config import PoolConfig, StackConfig, config_error, load_config
from infra.eks_versions import support_warning
from infra.gateway import GatewayArgs
from infra.karpenter import CPU_DISRUPTION, GPU_DISRUPTION, NodePoolArgs
from infra.kube import Nodes, Placement, PodSize, Replicas
from infra.load_balancer import PublicEndpoint
from infra.model_export import find_export
from infra.monitoring import GPU_UTILISATION_METRIC, Monitoring, MonitoringArgs
from infra.monitoring import NAMESPACE as MONITORING_NAMESPACE
from infra.project import PROJECT
from infra.serving import NAMESPACE as SERVING_NAMESPACE
from infra.serving import Serving
from infra.tf_serving import TfServingArgs


@dataclass(frozen=True)
class Plan:
    """Every component's Args for one stack."""

    aws: AwsArgs
    gateway: GatewayArgs
    tf_serving: TfServingArgs
    monitoring: MonitoringArgs | None  # None: no monitoring (off, or the stack is parked)

    @property
    def tiers(self) -> list[capacity.Tier]:
        """The workloads and the pools they run in, named by their config keys."""
        tf_pool = self.aws.gpu_pool if self.tf_serving.gpus else self.aws.cpu_pool
        return [
            capacity.Tier("gateway", self.gateway.workload, self.aws.cpu_pool.capacity("cpuNodes")),
            capacity.Tier(
                "tfServing",
                self.tf_serving.workload,
                tf_pool.capacity("gpuNodes" if self.tf_serving.gpus else "cpuNodes"),
            ),
        ]


def _pool(
    name: str,
    cfg: PoolConfig,
    nodes: Nodes,
    limit: int,
    disruption: dict[str, Any],
    ami_family: str = "al2023",
) -> NodePoolArgs:
    return NodePoolArgs(
        name=name,
        instance_types=cfg.instance_types,
        capacity_types=list(cfg.capacity_types),
        disk_size_gb=cfg.disk_size_gb,
        nodes=nodes,
        limit=limit,
        disruption=disruption,
        ami_family=ami_family,
    )


def plan(cfg: StackConfig, model_name: str, api_key_file: str | None = None) -> Plan:
    """The Args of every component, checked: every pod fits its pool and the gateway's
    memory holds what it needs (ConfigError naming the keys otherwise)."""
    placement = {"high_availability": cfg.high_availability, "parked": cfg.parked}
    on_gpu = cfg.model.on_gpu
    # A parked stack runs no workload nodes, so no monitoring either (its history is lost).
    monitored = cfg.monitoring.enabled and not cfg.parked
    gpu_metric = (GPU_UTILISATION_METRIC, cfg.monitoring.target_gpu_percent)
    tls = cfg.tls
    result = Plan(
        aws=AwsArgs(
            cluster_name=f"clothing-{cfg.stack}",
            region=cfg.region,
            cluster_version=cfg.cluster_version,
            vpc_cidr=cfg.vpc_cidr,
            availability_zones=cfg.availability_zones,
            nat_gateways=cfg.nat_gateways,
            public_access_cidrs=cfg.public_access_cidrs or [],
            admin_principal_arns=cfg.admin_principal_arns,
            log_retention_days=cfg.log_retention_days,
            system_nodes=SystemNodesArgs(
                cfg.system_nodes.instance_type, cfg.system_nodes.size, cfg.system_nodes.disk_size_gb
            ),
            cpu_pool=_pool(
                "cpu", cfg.cpu_nodes, CPU_NODES, cfg.cpu_nodes.max_vcpus, CPU_DISRUPTION
            ),
            gpu_pool=_pool(
                "gpu",
                cfg.gpu_nodes,
                GPU_NODES,
                cfg.gpu_nodes.max_gpus,
                GPU_DISRUPTION,
                cfg.gpu_nodes.ami_family,
            ),
            controller_replicas=2 if cfg.high_availability else 1,
            # Bottlerocket's NVIDIA variant ships the device plugin; AL2023's does not.
            device_plugin=cfg.gpu_nodes.ami_family != "bottlerocket",
            endpoint=PublicEndpoint(
                allowed_client_cidrs=cfg.allowed_client_cidrs,
                certificate_arn=tls.certificate_arn if tls else None,
                dns_name=tls.dns_name if tls else None,
                hosted_zone_id=tls.hosted_zone_id if tls else None,
            ),
            model_on_gpu=on_gpu,
            tags={"stack": cfg.stack, "project": PROJECT},
        ),
        gateway=GatewayArgs(
            pods=PodSize(cfg.gateway.cpu, cfg.gateway.memory),
            replicas=Replicas(
                cfg.gateway.min_replicas,
                cfg.gateway.max_replicas,
                target_cpu_percent=cfg.gateway.target_cpu_percent,
            ),
            placement=Placement(CPU_NODES, **placement),
            model_name=model_name,
            api_key_file=api_key_file,
        ),
        tf_serving=TfServingArgs(
            pods=PodSize(cfg.tf_serving.cpu, cfg.tf_serving.memory),
            replicas=Replicas(
                cfg.tf_serving.min_replicas,
                cfg.tf_serving.max_replicas,
                metric=gpu_metric if monitored and on_gpu else None,
                target_cpu_percent=cfg.tf_serving.target_cpu_percent,
            ),
            placement=Placement(GPU_NODES if on_gpu else CPU_NODES, **placement),
            model_name=model_name,
            gpus=1 if on_gpu else 0,
        ),
        monitoring=MonitoringArgs(
            retention_days=cfg.monitoring.retention_days,
            gpus=on_gpu,
            cpu_nodes=CPU_NODES,
            gpu_nodes=GPU_NODES,
        )
        if monitored
        else None,
    )
    if shortfall := result.gateway.memory_shortfall():
        raise config_error(
            f"gateway: memory {cfg.gateway.memory} is too little for the gateway: {shortfall}"
        )
    system = capacity.INSTANCE_TYPES[cfg.system_nodes.instance_type]
    try:
        capacity.check(
            result.tiers,
            result.aws.cpu_pool.capacity("cpuNodes"),
            system,
            monitoring=cfg.monitoring.enabled,
        )
    except ValueError as exc:
        raise config_error(str(exc)) from None
    return result


def main() -> dict[str, pulumi.Output[Any]]:
    """Declare every resource and return the stack outputs."""
    cfg = load_config()  # raises ConfigError before anything is declared
    api_key_file = load_key_file(cfg.require_api_keys)  # digests; ConfigError likewise
    if warning := support_warning(cfg.cluster_version, cfg.today):
        pulumi.log.warn(f"{PROJECT}:clusterVersion: {warning}")
    export = find_export(cfg.model)
    stack = plan(cfg, export.name, api_key_file)

    aws = AwsPlatform("aws", stack.aws, export)
    serving = Serving(
        "serving",
        gateway=stack.gateway,
        tf_serving=stack.tf_serving,
        images=aws.images,
        exposure=aws.exposure,
        scraped_from=MONITORING_NAMESPACE if stack.monitoring else None,
        provider=aws.provider,
        kubeconfig=aws.cluster.kubeconfig_json,
        depends_on=aws.ready,
    )
    monitoring = (
        Monitoring(
            "monitoring",
            spec=stack.monitoring,
            serving_namespace=SERVING_NAMESPACE,
            provider=aws.provider,
            depends_on=[*aws.nodes.node_pools.values()],
        )
        if stack.monitoring
        else None
    )
    url = aws.publish("serving-dns", serving.gateway_hostname, was_under=serving)

    return {
        "grafana_admin_password": pulumi.Output.secret(
            monitoring.grafana_password.result if monitoring else ""
        ),
        "gateway_url": url,
        "load_balancer_hostname": serving.gateway_hostname,
        # the ids of the keys /predict accepts ([]: it is open), never the keys
        "api_key_ids": pulumi.Output.from_input(key_ids(api_key_file)),
        "kubeconfig": pulumi.Output.secret(aws.cluster.kubeconfig_json),
        "cluster_name": pulumi.Output.from_input(stack.aws.cluster_name),
        "gateway_repository_url": aws.registry.gateway_repo.repository_url,
        "model_repository_url": aws.registry.model_repo.repository_url,
        "gateway_image": aws.registry.gateway_ref,
        "model_image": aws.registry.model_ref,
        "proxy_image": aws.registry.proxy_ref,
        "model_version": pulumi.Output.from_input(export.version),
        "parked": pulumi.Output.from_input(cfg.parked),
    }
