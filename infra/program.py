"""The whole stack, wired from its components. ``main()`` is what ``pulumi up`` runs.

This is the one module that reads the stack config: ``plan`` turns it into the small typed
Args each component owns (and checks that the pods those Args describe fit where they run),
and ``main`` hands each component only the values it needs, so what depends on what is
visible here. One program, three targets (``target``): AWS, where the stack makes the
cluster (``infra.aws``); a local cluster, or one you already run (``infra.own_cluster``).
The serving components are the same on all three. ``make cost`` prices the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra import capacity
from infra.account import look_up
from infra.api_keys import key_ids, load_key_file
from infra.aws import AwsArgs, AwsPlatform
from infra.cluster import CPU_NODES, DEVICE_PLUGIN_DAEMONSET, GPU_NODES, SystemNodesArgs
from infra.config import LOCAL_REGISTRY, StackConfig, config_error, load_config
from infra.config_sections import PoolConfig, ScalingConfig
from infra.demand import DEFAULT_GPU_CEILING, WAKE_ESTIMATE_S, Demand
from infra.eks_versions import support_warning
from infra.gateway import POD as GATEWAY_POD
from infra.gateway import Exposure, GatewayArgs
from infra.karpenter import CPU_DISRUPTION, GPU_DISRUPTION, NodePoolArgs
from infra.keda import Keda
from infra.kube import Nodes, Placement, PodSize, Replicas
from infra.load_balancer import PublicEndpoint
from infra.model_export import ModelExport, find_export
from infra.monitoring import NAMESPACE as MONITORING_NAMESPACE
from infra.monitoring import PROMETHEUS_PORT, PROMETHEUS_URL, Monitoring, MonitoringArgs
from infra.own_cluster import OwnCluster, OwnClusterArgs, kubeconfig_json
from infra.project import PROJECT
from infra.quotas import check_quotas
from infra.serving import NAMESPACE as SERVING_NAMESPACE
from infra.serving import Images, Serving
from infra.tf_serving import CPU_POD, GPU_POD, LAPTOP_POD, TfServingArgs


@dataclass(frozen=True)
class Plan:
    """Every component's Args for one stack: the workloads', and one target's."""

    gateway: GatewayArgs
    tf_serving: TfServingArgs
    monitoring: MonitoringArgs | None  # None: no monitoring (off, or the stack is parked)
    aws: AwsArgs | None = None
    own_cluster: OwnClusterArgs | None = None

    @property
    def on_aws(self) -> AwsArgs:
        """The AWS target's Args (an aws stack's plan has them)."""
        assert self.aws is not None, "not an aws stack"
        return self.aws

    @property
    def tiers(self) -> list[capacity.Tier]:
        """The workloads and the pools they run in, named by their config keys."""
        return _tiers(self.gateway, self.tf_serving, self.on_aws.cpu_pool, self.on_aws.gpu_pool)


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
    """The Args of every component, checked: every pod fits where it runs and the
    gateway's memory holds what it needs (ConfigError naming the keys otherwise).
    ``model.onGpu`` alone moves TF Serving between GPU and CPU nodes: its size, (on AWS)
    the CPU pool's limit unless ``cpuNodes.maxVcpus`` is set, and what it scales on
    follow."""
    on_gpu = cfg.on_gpu
    # A parked stack runs no workload pods, so no monitoring either (its history is lost).
    monitored = cfg.monitored and not cfg.parked
    if cfg.target == "aws":
        gateway_nodes, tf_nodes = CPU_NODES, GPU_NODES if on_gpu else CPU_NODES
        tf_size = GPU_POD if on_gpu else CPU_POD
    else:
        placement = cfg.gpu_placement
        tolerate = tuple(t.model_dump(exclude_none=True) for t in placement.tolerations)
        gateway_nodes = Nodes({})
        tf_nodes = Nodes(placement.node_selector, tolerate=tolerate) if on_gpu else Nodes({})
        tf_size = GPU_POD if on_gpu else CPU_POD if cfg.target == "cluster" else LAPTOP_POD
    spread = {"high_availability": cfg.high_availability, "parked": cfg.parked}
    tf = cfg.tf_serving
    # On GPUs, where the stack runs its own Prometheus, TF Serving scales on the images
    # asked for (KEDA), and may sleep; elsewhere on CPU (an HPA).
    demand = (
        Demand(
            ceiling=tf.images_per_second or DEFAULT_GPU_CEILING,
            sleep_after_s=tf.sleep_after_minutes * 60 if tf.sleep_after_minutes else None,
            prometheus_url=f"{PROMETHEUS_URL}:{PROMETHEUS_PORT}",
            namespace=SERVING_NAMESPACE,
        )
        if cfg.scales_on_demand and monitored
        else None
    )
    gateway = GatewayArgs(
        pods=_size(cfg.gateway, GATEWAY_POD),
        replicas=Replicas(
            cfg.gateway.min_replicas,
            cfg.gateway.max_replicas,
            target_cpu_percent=cfg.gateway.target_cpu_percent,
        ),
        placement=Placement(gateway_nodes, **spread),
        model_name=model_name,
        api_key_file=api_key_file,
        wake_estimate_s=WAKE_ESTIMATE_S if demand and demand.sleep_after_s else None,
    )
    tf_serving = TfServingArgs(
        pods=_size(cfg.tf_serving, tf_size),
        replicas=Replicas(
            tf.min_replicas, tf.max_replicas, target_cpu_percent=tf.target_cpu_percent
        ),
        placement=Placement(tf_nodes, **spread),
        model_name=model_name,
        gpus=1 if on_gpu else 0,
        demand=demand,
    )
    if shortfall := gateway.memory_shortfall():
        raise config_error(
            f"gateway: memory {gateway.pods.memory} is too little for the gateway: {shortfall}"
        )
    if cfg.target != "aws":
        return Plan(
            gateway,
            tf_serving,
            MonitoringArgs(
                retention_days=cfg.monitoring.retention_days,
                gpus=on_gpu,
                cpu_nodes=gateway_nodes,
                gpu_nodes=tf_nodes,
                install=False,
                namespace=cfg.monitoring.prometheus_namespace or MONITORING_NAMESPACE,
            )
            if monitored
            else None,
            own_cluster=OwnClusterArgs(
                local=cfg.target == "local",
                name=f"clothing-{cfg.stack}",
                kubeconfig=cfg.kubernetes.kubeconfig,
                context=cfg.kubernetes.context,
                registry=cfg.registry or LOCAL_REGISTRY,
                gateway_service=cfg.gateway_service,
                allowed_client_cidrs=cfg.allowed_client_cidrs,
                model_on_gpu=on_gpu,
            ),
        )
    return _aws_plan(cfg, gateway, tf_serving, monitored)


def _aws_plan(
    cfg: StackConfig, gateway: GatewayArgs, tf_serving: TfServingArgs, monitored: bool
) -> Plan:
    """An aws stack's plan: its node pools, checked to hold the workloads."""
    keys = cfg.on_aws
    tls = cfg.tls
    # Bottlerocket's NVIDIA variant ships the device plugin; AL2023's does not.
    device_plugin = keys.gpu_nodes.ami_family != "bottlerocket"
    monitoring_on = bool(cfg.monitored)
    gpu = keys.gpu_nodes
    gpu_pool = _pool("gpu", gpu, GPU_NODES, gpu.max_gpus, GPU_DISRUPTION, gpu.ami_family)
    cpu = keys.cpu_nodes
    cpu_pool = _pool("cpu", cpu, CPU_NODES, cpu.max_vcpus or 0, CPU_DISRUPTION)
    if cpu.max_vcpus is None:
        needed, _ = capacity.cpu_vcpus_needed(
            _tiers(gateway, tf_serving, cpu_pool, gpu_pool),
            cpu_pool.capacity(CPU_POOL_KEY).types,
            monitoring_on,
        )
        cpu_pool = replace(cpu_pool, limit=needed)
    result = Plan(
        gateway,
        tf_serving,
        MonitoringArgs(
            retention_days=cfg.monitoring.retention_days,
            gpus=bool(tf_serving.gpus),
            cpu_nodes=CPU_NODES,
            gpu_nodes=GPU_NODES,
            device_plugin=DEVICE_PLUGIN_DAEMONSET if device_plugin else None,
            on_demand=tf_serving.demand is not None,
            sleeps=tf_serving.sleeps,
        )
        if monitored
        else None,
        aws=AwsArgs(
            cluster_name=f"clothing-{cfg.stack}",
            region=keys.region,
            cluster_version=keys.cluster_version,
            vpc_cidr=cfg.vpc_cidr,
            availability_zones=cfg.availability_zones,
            nat_gateways=keys.nat_gateways,
            public_access_cidrs=cfg.public_access_cidrs or [],
            admin_principal_arns=cfg.admin_principal_arns,
            log_retention_days=cfg.log_retention_days,
            system_nodes=SystemNodesArgs(
                cfg.system_nodes.instance_type, cfg.system_nodes.size, cfg.system_nodes.disk_size_gb
            ),
            cpu_pool=cpu_pool,
            gpu_pool=gpu_pool,
            controller_replicas=2 if cfg.high_availability else 1,
            device_plugin=device_plugin,
            endpoint=PublicEndpoint(
                allowed_client_cidrs=cfg.allowed_client_cidrs,
                certificate_arn=tls.certificate_arn if tls else None,
                dns_name=tls.dns_name if tls else None,
                hosted_zone_id=tls.hosted_zone_id if tls else None,
            ),
            model_on_gpu=bool(tf_serving.gpus),
            tags={"stack": cfg.stack, "project": PROJECT},
        ),
    )
    system = capacity.INSTANCE_TYPES[cfg.system_nodes.instance_type]
    try:
        capacity.check(
            result.tiers, cpu_pool.capacity(CPU_POOL_KEY), system, monitoring=monitoring_on
        )
    except ValueError as exc:
        raise config_error(str(exc)) from None
    return result


def main() -> dict[str, pulumi.Output[Any]]:
    """Declare every resource and return the stack outputs."""
    cfg = load_config()  # raises ConfigError before anything is declared
    for warning in cfg.warnings:
        pulumi.log.warn(f"{PROJECT}:{warning}")
    api_key_file = load_key_file(cfg.require_api_keys)  # digests; ConfigError likewise
    export = find_export(cfg.model)
    stack = plan(cfg, export.name, api_key_file)
    if stack.aws is not None:
        return _on_aws(cfg, stack, stack.aws, export, api_key_file)
    assert stack.own_cluster is not None
    own = stack.own_cluster
    kubeconfig = kubeconfig_json(own.kubeconfig, own.context)  # ConfigError before anything
    cluster = OwnCluster("cluster", own, export, kubeconfig)
    serving = _serving(
        stack, cluster.images, cluster.exposure, cluster.provider, cluster.kubeconfig, []
    )
    monitoring = _monitoring(stack, cluster.provider, [])
    url = cluster.url(serving.gateway_hostname)
    return _outputs(stack, serving, monitoring, url, export, api_key_file) | {
        "gateway_image": pulumi.Output.from_input(cluster.images.gateway),
        "model_image": pulumi.Output.from_input(cluster.images.model),
        "proxy_image": pulumi.Output.from_input(cluster.images.proxy),
    }


def _serving(
    stack: Plan,
    images: Images,
    exposure: Exposure,
    provider: k8s.Provider,
    kubeconfig: pulumi.Input[str],
    ready: list[pulumi.Resource],
    scaler_after: list[pulumi.Resource] | None = None,
) -> Serving:
    return Serving(
        "serving",
        gateway=stack.gateway,
        tf_serving=stack.tf_serving,
        images=images,
        exposure=exposure,
        scraped_from=stack.monitoring.namespace if stack.monitoring else None,
        provider=provider,
        kubeconfig=kubeconfig,
        depends_on=ready,
        scaler_after=scaler_after or [],
    )


def _monitoring(
    stack: Plan, provider: k8s.Provider, ready: list[pulumi.Resource]
) -> Monitoring | None:
    if stack.monitoring is None:
        return None
    return Monitoring(
        "monitoring",
        spec=stack.monitoring,
        serving_namespace=SERVING_NAMESPACE,
        provider=provider,
        depends_on=ready,
    )


def _outputs(
    stack: Plan,
    serving: Serving,
    monitoring: Monitoring | None,
    url: pulumi.Output[str],
    export: ModelExport,
    api_key_file: str | None,
) -> dict[str, pulumi.Output[Any]]:
    """What every target exports."""
    password = monitoring.grafana_password if monitoring else None
    return {
        "grafana_admin_password": pulumi.Output.secret(password.result if password else ""),
        "gateway_url": url,
        "load_balancer_hostname": pulumi.Output.from_input(serving.gateway_hostname or ""),
        # the ids of the keys /predict accepts ([]: it is open), never the keys
        "api_key_ids": pulumi.Output.from_input(key_ids(api_key_file)),
        "model_version": pulumi.Output.from_input(export.version),
        "parked": pulumi.Output.from_input(stack.gateway.placement.parked),
    }


def _on_aws(
    cfg: StackConfig,
    stack: Plan,
    args: AwsArgs,
    export: ModelExport,
    api_key_file: str | None,
) -> dict[str, pulumi.Output[Any]]:
    if warning := support_warning(args.cluster_version, cfg.today):
        pulumi.log.warn(f"{PROJECT}:clusterVersion: {warning}")
    for warning in check_quotas(stack):  # ConfigError if the stack cannot deploy at all
        pulumi.log.warn(f"{PROJECT}:{warning}")
    # The account's side, before anything is declared (ConfigError likewise).
    account = look_up(args.admin_principal_arns, args.spot, args.cluster_version, args.region)
    aws = AwsPlatform("aws", args, export, account)
    # KEDA, where TF Serving scales on demand: its chart (CRDs, webhook) before the
    # ScaledObject
    pools: list[pulumi.Resource] = [*aws.nodes.node_pools.values()]
    keda = (
        Keda("keda", nodes=CPU_NODES, provider=aws.provider, depends_on=pools)
        if stack.tf_serving.demand
        else None
    )
    serving = _serving(
        stack,
        aws.images,
        aws.exposure,
        aws.provider,
        aws.cluster.kubeconfig_json,
        aws.ready,
        [keda.release] if keda else None,
    )
    monitoring = _monitoring(stack, aws.provider, pools)
    assert serving.gateway_hostname is not None  # the NLB's
    url = aws.publish("serving-dns", serving.gateway_hostname, was_under=serving)
    aws_outputs: dict[str, pulumi.Output[Any]] = {
        "kubeconfig": pulumi.Output.secret(aws.cluster.kubeconfig_json),
        "cluster_name": pulumi.Output.from_input(args.cluster_name),
        "gateway_repository_url": aws.registry.gateway_repo.repository_url,
        "model_repository_url": aws.registry.model_repo.repository_url,
        "gateway_image": aws.registry.gateway_ref,
        "model_image": aws.registry.model_ref,
        "proxy_image": aws.registry.proxy_ref,
    }
    return _outputs(stack, serving, monitoring, url, export, api_key_file) | aws_outputs
