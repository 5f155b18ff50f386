"""The AWS target: everything the stack runs on in an AWS account, as one component.

A VPC (``infra.network``), an EKS cluster with its system node group and add-ons
(``infra.cluster``), Karpenter and its CPU and GPU node pools (``infra.karpenter``), the
NVIDIA device plugin where the GPU nodes' AMI lacks it, ECR repositories with the images
built from this checkout (``infra.images``), and the NLB in front of the gateway with its
TLS and DNS name (``infra.load_balancer``). What it hands the serving components is all
they take from it: a Kubernetes provider, image references, the gateway Service's
``Exposure``, and the resources serving must wait for.

Its parts were the stack's own children before this component existed: each is aliased
to its old place, so no live resource is replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_aws as aws

from infra.account import SPOT_SERVICE, Account
from infra.cluster import GPU_NODES, Cluster, SystemNodesArgs, nvidia_device_plugin
from infra.images import ImageRegistry
from infra.karpenter import NodeAutoscaler, NodePoolArgs
from infra.load_balancer import PublicEndpoint, dns_record, gateway_url, nlb_exposure
from infra.model_export import ModelExport
from infra.network import Network
from infra.serving import Images


@dataclass(frozen=True)
class AwsArgs:
    cluster_name: str
    region: str
    cluster_version: str
    vpc_cidr: str
    availability_zones: int
    nat_gateways: Literal["single", "onePerAz"]
    # who may reach the Kubernetes API from the internet ([]: nobody, a private endpoint)
    public_access_cidrs: list[str]
    admin_principal_arns: list[str]
    log_retention_days: int
    system_nodes: SystemNodesArgs
    cpu_pool: NodePoolArgs
    gpu_pool: NodePoolArgs
    controller_replicas: int
    # the GPU nodes' AMI has no NVIDIA device plugin (AL2023's; Bottlerocket's has one)
    device_plugin: bool
    endpoint: PublicEndpoint
    model_on_gpu: bool  # which TF Serving image to build
    tags: dict[str, str]

    @property
    def spot(self) -> bool:
        """Whether either node pool may launch spot instances."""
        return any("spot" in p.capacity_types for p in (self.cpu_pool, self.gpu_pool))

    @property
    def nat_gateway_count(self) -> int:
        return 1 if self.nat_gateways == "single" else self.availability_zones


class AwsPlatform(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        args: AwsArgs,
        export: ModelExport,
        account: Account,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clothing:infra:AwsPlatform", name, None, opts)
        self.args = args
        moved = pulumi.ResourceOptions(
            parent=self, aliases=[pulumi.Alias(parent=pulumi.ROOT_STACK_RESOURCE)]
        )
        network = Network(
            "network",
            cluster_name=args.cluster_name,
            cidr=args.vpc_cidr,
            availability_zones=args.availability_zones,
            nat_gateways=args.nat_gateways,
            opts=moved,
        )
        self.cluster = Cluster(
            "cluster",
            cluster_name=args.cluster_name,
            version=args.cluster_version,
            vpc_id=network.vpc_id,
            public_subnet_ids=network.public_subnet_ids,
            private_subnet_ids=network.private_subnet_ids,
            public_access_cidrs=args.public_access_cidrs,
            admin_principal_arns=args.admin_principal_arns,
            log_retention_days=args.log_retention_days,
            system_nodes=args.system_nodes,
            addon_versions=account.addon_versions,
            tags=args.tags,
            opts=moved,
        )
        self.provider = self.cluster.provider
        karpenter_needs: list[pulumi.Resource] = [self.cluster.system_group, *self.cluster.addons]
        if account.create_spot_role:
            # Account-wide, and perhaps relied on elsewhere by the time the stack goes:
            # `pulumi destroy` leaves it (a later `pulumi up` finds it and declares none).
            karpenter_needs.append(
                aws.iam.ServiceLinkedRole(
                    "spot-service-role",
                    aws_service_name=SPOT_SERVICE,
                    description="EC2 Spot, for Karpenter's spot nodes",
                    opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True),
                )
            )
        self.nodes = NodeAutoscaler(
            "nodes",
            cluster_name=args.cluster_name,
            region=args.region,
            security_group_id=self.cluster.security_group_id,
            pools=[args.cpu_pool, args.gpu_pool],
            controller_replicas=args.controller_replicas,
            provider=self.provider,
            depends_on=karpenter_needs,
            tags=args.tags,
            opts=moved,
        )
        # What the workloads need before their pods can be placed.
        self.ready: list[pulumi.Resource] = [*self.nodes.node_pools.values()]
        if args.device_plugin:
            self.ready.append(
                nvidia_device_plugin(
                    "nvidia-device-plugin",
                    GPU_NODES,
                    pulumi.ResourceOptions.merge(
                        moved,
                        pulumi.ResourceOptions(
                            provider=self.provider,
                            depends_on=[self.nodes.node_pools[args.gpu_pool.name]],
                        ),
                    ),
                )
            )
        self.registry = ImageRegistry(
            "images",
            cluster_name=args.cluster_name,
            export=export,
            model_on_gpu=args.model_on_gpu,
            opts=moved,
        )
        self.images = Images(
            model=self.registry.model_ref,
            gateway=self.registry.gateway_ref,
            proxy=self.registry.proxy_ref,
        )
        self.exposure = nlb_exposure(args.endpoint)
        self.register_outputs({"cluster_name": args.cluster_name})

    def publish(
        self, name: str, lb_hostname: pulumi.Output[str], was_under: pulumi.Resource
    ) -> pulumi.Output[str]:
        """Point the stack's DNS name at the gateway's load balancer (when it owns the
        zone); the gateway's URL. The record was ``was_under``'s (the Serving component's)
        before this component existed."""
        endpoint = self.args.endpoint
        dns_record(
            name,
            endpoint,
            lb_hostname,
            # an AWS resource: the default provider
            pulumi.ResourceOptions(parent=self, aliases=[pulumi.Alias(parent=was_under)]),
        )
        return gateway_url(endpoint, lb_hostname)
