"""The whole stack, wired from its components. ``main()`` is what ``pulumi up`` runs.

This is the one module that reads the stack config: ``plan`` turns it into the small typed
Args each component owns (and checks that the pods those Args describe fit the node pools
they run in), and ``main`` hands each component only the values it needs, so what depends
on what is visible here. ``make cost`` prices the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pulumi

from infra import capacity
from infra.account import look_up
from infra.api_keys import key_ids, load_key_file
from infra.aws import AwsArgs, AwsPlatform
from infra.cluster import CPU_NODES, DEVICE_PLUGIN_DAEMONSET, GPU_NODES, SystemNodesArgs
from infra.config import PoolConfig, ScalingConfig, StackConfig, config_error, load_config
from infra.eks_versions import support_warning
from infra.gateway import POD as GATEWAY_POD
from infra.gateway import GatewayArgs
from infra.karpenter import CPU_DISRUPTION, GPU_DISRUPTION, NodePoolArgs
from infra.kube import Nodes, Placement, PodSize, Replicas
from infra.load_balancer import PublicEndpoint
from infra.model_export import find_export
from infra.monitoring import GPU_UTILISATION_METRIC, Monitoring, MonitoringArgs
from infra.monitoring import NAMESPACE as MONITORING_NAMESPACE
from infra.project import PROJECT
from infra.quotas import check_quotas
from infra.serving import NAMESPACE as SERVING_NAMESPACE
from infra.serving import Serving
from infra.tf_serving import CPU_POD, GPU_POD, TfServingArgs


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
        return _tiers(self.gateway, self.tf_serving, self.aws.cpu_pool, self.aws.gpu_pool)


CPU_POOL_KEY, GPU_POOL_KEY = "cpuNodes", "gpuNodes"


def _tiers(
    gateway: GatewayArgs,
    tf_serving: TfServingArgs,
    cpu_pool: NodePoolArgs,
    gpu_pool: NodePoolArgs,
) -> list[capacity.Tier]:
    tf_pool = (
        gpu_pool.capacity(GPU_POOL_KEY) if tf_serving.gpus else cpu_pool.capacity(CPU_POOL_KEY)
    )
    return [
        capacity.Tier("gateway", gateway.workload, cpu_pool.capacity(CPU_POOL_KEY)),
        capacity.Tier("tfServing", tf_serving.workload, tf_pool),
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


def _size(scaling: ScalingConfig, default: PodSize) -> PodSize:
    return PodSize(scaling.cpu or default.cpu, scaling.memory or default.memory)


def plan(cfg: StackConfig, model_name: str, api_key_file: str | None = None) -> Plan:
    """The Args of every component, checked: every pod fits its pool and the gateway's
    memory holds what it needs (ConfigError naming the keys otherwise). ``model.onGpu``
    alone moves TF Serving between the pools: its size, the CPU pool's limit (unless the
    stack sets ``cpuNodes.maxVcpus``) and what it scales on follow."""
    placement = {"high_availability": cfg.high_availability, "parked": cfg.parked}
    on_gpu = cfg.model.on_gpu
    # A parked stack runs no workload nodes, so no monitoring either (its history is lost).
    monitored = cfg.monitoring.enabled and not cfg.parked
    gpu_metric = (GPU_UTILISATION_METRIC, cfg.monitoring.target_gpu_percent)
    tls = cfg.tls
    # Bottlerocket's NVIDIA variant ships the device plugin; AL2023's does not.
    device_plugin = cfg.gpu_nodes.ami_family != "bottlerocket"
    gateway = GatewayArgs(
        pods=_size(cfg.gateway, GATEWAY_POD),
        replicas=Replicas(
            cfg.gateway.min_replicas,
            cfg.gateway.max_replicas,
            target_cpu_percent=cfg.gateway.target_cpu_percent,
        ),
        placement=Placement(CPU_NODES, **placement),
        model_name=model_name,
        api_key_file=api_key_file,
    )
    tf_serving = TfServingArgs(
        pods=_size(cfg.tf_serving, GPU_POD if on_gpu else CPU_POD),
        replicas=Replicas(
            cfg.tf_serving.min_replicas,
            cfg.tf_serving.max_replicas,
            metric=gpu_metric if monitored and on_gpu else None,
            target_cpu_percent=cfg.tf_serving.target_cpu_percent,
        ),
        placement=Placement(GPU_NODES if on_gpu else CPU_NODES, **placement),
        model_name=model_name,
        gpus=1 if on_gpu else 0,
    )
    gpu_pool = _pool(
        "gpu",
        cfg.gpu_nodes,
        GPU_NODES,
        cfg.gpu_nodes.max_gpus,
        GPU_DISRUPTION,
        cfg.gpu_nodes.ami_family,
    )
    cpu_pool = _pool("cpu", cfg.cpu_nodes, CPU_NODES, cfg.cpu_nodes.max_vcpus or 0, CPU_DISRUPTION)
    if cfg.cpu_nodes.max_vcpus is None:
        needed, _ = capacity.cpu_vcpus_needed(
            _tiers(gateway, tf_serving, cpu_pool, gpu_pool),
            cpu_pool.capacity(CPU_POOL_KEY).types,
            cfg.monitoring.enabled,
        )
        cpu_pool = replace(cpu_pool, limit=needed)
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
            cpu_pool=cpu_pool,
            gpu_pool=gpu_pool,
            controller_replicas=2 if cfg.high_availability else 1,
            # Bottlerocket's NVIDIA variant ships the device plugin; AL2023's does not.
            device_plugin=device_plugin,
            endpoint=PublicEndpoint(
                allowed_client_cidrs=cfg.allowed_client_cidrs,
                certificate_arn=tls.certificate_arn if tls else None,
                dns_name=tls.dns_name if tls else None,
                hosted_zone_id=tls.hosted_zone_id if tls else None,
            ),
            model_on_gpu=on_gpu,
            tags={"stack": cfg.stack, "project": PROJECT},
        ),
        gateway=gateway,
        tf_serving=tf_serving,
        monitoring=MonitoringArgs(
            retention_days=cfg.monitoring.retention_days,
            gpus=on_gpu,
            cpu_nodes=CPU_NODES,
            gpu_nodes=GPU_NODES,
            device_plugin=DEVICE_PLUGIN_DAEMONSET if device_plugin else None,
        )
        if monitored
        else None,
    )
    if shortfall := result.gateway.memory_shortfall():
        raise config_error(
            f"gateway: memory {gateway.pods.memory} is too little for the gateway: {shortfall}"
        )
    system = capacity.INSTANCE_TYPES[cfg.system_nodes.instance_type]
    try:
        capacity.check(
            result.tiers,
            result.aws.cpu_pool.capacity(CPU_POOL_KEY),
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
    for warning in check_quotas(stack):  # ConfigError if the stack cannot deploy at all
        pulumi.log.warn(f"{PROJECT}:{warning}")

    # The account's side, before anything is declared (ConfigError likewise).
    account = look_up(
        stack.aws.admin_principal_arns, stack.aws.spot, stack.aws.cluster_version, cfg.region
    )
    aws = AwsPlatform("aws", stack.aws, export, account)
    serving = Serving(
        "serving",
        gateway=stack.gateway,
        tf_serving=stack.tf_serving,
        images=aws.images,
        exposure=aws.exposure,
        scraped_from=MONITORING_NAMESPACE if stack.monitoring else None,
        provider=aws.provider,
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
