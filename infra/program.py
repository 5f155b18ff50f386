"""The whole stack, wired from its components. ``main()`` is what ``pulumi up`` runs.

Each component gets only the values it needs, so what depends on what is visible here.
"""

from __future__ import annotations

from typing import Any

import pulumi

from infra.api_keys import key_ids, load_key_file
from infra.autoscaling import NodeAutoscaler
from infra.cluster import Cluster, nvidia_device_plugin
from infra.config import load_config
from infra.eks_versions import support_warning
from infra.exposure import PublicEndpoint, gateway_url
from infra.images import ImageRegistry
from infra.model_export import find_export
from infra.monitoring import GPU_UTILISATION_METRIC, Monitoring, MonitoringSpec
from infra.monitoring import NAMESPACE as MONITORING_NAMESPACE
from infra.network import Network
from infra.serving import NAMESPACE as SERVING_NAMESPACE
from infra.serving import Scraping, Serving
from infra.workloads import Placement


def main() -> dict[str, pulumi.Output[Any]]:
    """Declare every resource and return the stack outputs."""
    cfg = load_config()  # raises ConfigError before anything is declared
    api_key_file = load_key_file(cfg.require_api_keys)  # digests; ConfigError likewise
    if warning := support_warning(cfg.cluster_version, cfg.today):
        pulumi.log.warn(f"clothing-serving:clusterVersion: {warning}")
    export = find_export(cfg.model)
    cluster_name = f"clothing-{cfg.stack}"
    tags = {"stack": cfg.stack, "project": "clothing-serving"}

    network = Network(
        "network",
        cluster_name=cluster_name,
        cidr=cfg.vpc_cidr,
        availability_zones=cfg.availability_zones,
        nat_gateways=cfg.nat_gateways,
    )
    cluster = Cluster(
        "cluster",
        cluster_name=cluster_name,
        version=cfg.cluster_version,
        vpc_id=network.vpc_id,
        public_subnet_ids=network.public_subnet_ids,
        private_subnet_ids=network.private_subnet_ids,
        public_access_cidrs=cfg.api_cidrs,
        admin_principal_arns=cfg.admin_principal_arns,
        log_retention_days=cfg.log_retention_days,
        system_nodes=cfg.system_nodes,
        tags=tags,
    )
    nodes = NodeAutoscaler(
        "nodes",
        cluster_name=cluster_name,
        region=cfg.region,
        security_group_id=cluster.security_group_id,
        cpu_pool=cfg.cpu_nodes,
        gpu_pool=cfg.gpu_nodes,
        controller_replicas=2 if cfg.high_availability else 1,
        provider=cluster.provider,
        depends_on=[cluster.system_group, *cluster.addons],
        tags=tags,
    )
    serving_needs: list[pulumi.Resource] = [*nodes.node_pools.values()]
    if not cfg.gpu_nodes.has_device_plugin:
        serving_needs.append(
            nvidia_device_plugin(
                "nvidia-device-plugin",
                pulumi.ResourceOptions(
                    provider=cluster.provider, depends_on=[nodes.node_pools["gpu"]]
                ),
            )
        )
    images = ImageRegistry(
        "images", cluster_name=cluster_name, export=export, model_on_gpu=cfg.model.on_gpu
    )
    endpoint = PublicEndpoint(
        allowed_client_cidrs=cfg.allowed_client_cidrs,
        certificate_arn=cfg.tls.certificate_arn if cfg.tls else None,
        dns_name=cfg.tls.dns_name if cfg.tls else None,
        hosted_zone_id=cfg.tls.hosted_zone_id if cfg.tls else None,
    )
    # A parked stack runs no workload nodes, so no monitoring either (its history is lost).
    monitored = cfg.monitoring.enabled and not cfg.parked
    gpu_metric = (GPU_UTILISATION_METRIC, cfg.monitoring.target_gpu_percent)
    serving = Serving(
        "serving",
        model_name=export.name,
        model_image=images.model_ref,
        gateway_image=images.gateway_ref,
        proxy_image=images.proxy_ref,
        model_on_gpu=cfg.model.on_gpu,
        gateway=cfg.gateway,
        tf_serving=cfg.tf_serving,
        placement=Placement(high_availability=cfg.high_availability, parked=cfg.parked),
        endpoint=endpoint,
        api_key_file=api_key_file,
        monitoring=Scraping(MONITORING_NAMESPACE, gpu_metric if cfg.model.on_gpu else None)
        if monitored
        else None,
        provider=cluster.provider,
        depends_on=serving_needs,
    )

    monitoring = (
        Monitoring(
            "monitoring",
            spec=MonitoringSpec(
                retention_days=cfg.monitoring.retention_days, gpus=cfg.model.on_gpu
            ),
            serving_namespace=SERVING_NAMESPACE,
            provider=cluster.provider,
            depends_on=[*nodes.node_pools.values()],
        )
        if monitored
        else None
    )

    return {
        "grafana_admin_password": pulumi.Output.secret(
            monitoring.grafana_password.result if monitoring else ""
        ),
        "gateway_url": gateway_url(endpoint, serving.gateway_hostname),
        "load_balancer_hostname": serving.gateway_hostname,
        # the ids of the keys /predict accepts ([]: it is open), never the keys
        "api_key_ids": pulumi.Output.from_input(key_ids(api_key_file)),
        "kubeconfig": pulumi.Output.secret(cluster.kubeconfig_json),
        "cluster_name": pulumi.Output.from_input(cluster_name),
        "gateway_repository_url": images.gateway_repo.repository_url,
        "model_repository_url": images.model_repo.repository_url,
        "gateway_image": images.gateway_ref,
        "model_image": images.model_ref,
        "proxy_image": images.proxy_ref,
        "model_version": pulumi.Output.from_input(export.version),
        "parked": pulumi.Output.from_input(cfg.parked),
    }
