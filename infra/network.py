"""VPC: public subnets for the load balancer, private subnets for the nodes (tagged so
Karpenter finds them)."""

from __future__ import annotations

from typing import Literal

import pulumi
import pulumi_awsx as awsx

# Karpenter's EC2NodeClass selects the subnets (and so the zones) it launches nodes into
# by this tag.
DISCOVERY_TAG = "karpenter.sh/discovery"


class Network(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        cluster_name: str,
        cidr: str,
        availability_zones: int,
        nat_gateways: Literal["single", "onePerAz"],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clothing:infra:Network", name, None, opts)
        shared = {f"kubernetes.io/cluster/{cluster_name}": "shared"}
        strategy = (
            awsx.ec2.NatGatewayStrategy.SINGLE
            if nat_gateways == "single"
            else awsx.ec2.NatGatewayStrategy.ONE_PER_AZ
        )
        self.vpc = awsx.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=cidr,
            number_of_availability_zones=availability_zones,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            nat_gateways=awsx.ec2.NatGatewayConfigurationArgs(strategy=strategy),
            subnet_strategy=awsx.ec2.SubnetAllocationStrategy.AUTO,
            subnet_specs=[
                awsx.ec2.SubnetSpecArgs(
                    type=awsx.ec2.SubnetType.PUBLIC,
                    cidr_mask=22,
                    tags={**shared, "kubernetes.io/role/elb": "1"},
                ),
                awsx.ec2.SubnetSpecArgs(
                    type=awsx.ec2.SubnetType.PRIVATE,
                    cidr_mask=19,
                    tags={
                        **shared,
                        "kubernetes.io/role/internal-elb": "1",
                        DISCOVERY_TAG: cluster_name,
                    },
                ),
            ],
            tags={"Name": f"{cluster_name}-vpc"},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.vpc_id = self.vpc.vpc_id
        self.public_subnet_ids = self.vpc.public_subnet_ids
        self.private_subnet_ids = self.vpc.private_subnet_ids
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "public_subnet_ids": self.public_subnet_ids,
                "private_subnet_ids": self.private_subnet_ids,
            }
        )
