"""Node autoscaling with Karpenter: nodes appear when pods are Pending and go when idle.

Why Karpenter (docs/architecture.md has the longer answer): it launches the instance type
a Pending pod needs, within a NodePool's limits, instead of growing fixed node groups; it
consolidates idle GPU nodes away; it replaces drifted nodes (a new AMI, a changed NodePool)
while honouring PodDisruptionBudgets; and it is what awslabs/ai-on-eks runs GPU
inference on. What it needs, all declared here:

- a node role (EC2) with an EKS access entry of type EC2_LINUX, so its nodes can join;
- the controller's IAM role, given to its service account with EKS Pod Identity, and a
  policy scoped to this cluster's tags (after Karpenter's own CloudFormation reference,
  v1.14);
- an SQS queue fed by EventBridge with spot interruptions, rebalance recommendations,
  instance state changes and AWS Health events, so nodes are drained before they vanish;
- the ``karpenter-crd`` and ``karpenter`` Helm charts (CRDs upgraded with the chart), the
  controller on the system node group;
- an EC2NodeClass and a NodePool per tier: ``cpu`` for the gateway, ``gpu`` (tainted
  ``nvidia.com/gpu``) for TF Serving, each with its instance types, capacity types and
  limit from the stack config.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.capacity import KARPENTER
from infra.cluster import CPU_LABELS, GPU_LABELS, GPU_TAINT_KEY, SYSTEM_LABELS, node_role
from infra.config import CpuPoolConfig, GpuPoolConfig, PoolConfig
from infra.network import DISCOVERY_TAG

CHART = "oci://public.ecr.aws/karpenter/karpenter"
CRD_CHART = "oci://public.ecr.aws/karpenter/karpenter-crd"
VERSION = "1.14.1"  # supports Kubernetes 1.29-1.36
NAMESPACE = "karpenter"
SERVICE_ACCOUNT = "karpenter"
INTERRUPTION_EVENTS = {
    "health": ("aws.health", "AWS Health Event"),
    "spot": ("aws.ec2", "EC2 Spot Instance Interruption Warning"),
    "rebalance": ("aws.ec2", "EC2 Instance Rebalance Recommendation"),
    "state": ("aws.ec2", "EC2 Instance State-change Notification"),
    "reservation": ("aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning"),
}
GPU_TAINT = {"key": GPU_TAINT_KEY, "value": "true", "effect": "NoSchedule"}
# GPU nodes start slowly and pull multi-GB images: keep an empty one a while before
# removing it, and replace at most one at a time.
GPU_DISRUPTION = {
    "consolidationPolicy": "WhenEmpty",
    "consolidateAfter": "10m",
    "budgets": [{"nodes": "1"}],
}
CPU_DISRUPTION = {
    "consolidationPolicy": "WhenEmptyOrUnderutilized",
    "consolidateAfter": "2m",
    "budgets": [{"nodes": "20%"}],
}
EXPIRE_AFTER = "720h"  # replace nodes monthly: fresh AMIs, drained through the PDBs


def controller_policy(
    cluster_name: str, region: str, account: str, node_role_arn: str, queue_arn: str
) -> dict[str, Any]:
    """Karpenter's controller permissions, each scoped to this cluster where AWS allows."""
    ec2 = f"arn:aws:ec2:{region}"
    owned = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}": "owned"}
    request_owned = {
        f"aws:RequestTag/kubernetes.io/cluster/{cluster_name}": "owned",
        "aws:RequestTag/eks:eks-cluster-name": cluster_name,
    }
    launched = [
        f"{ec2}:*:{kind}/*"
        for kind in (
            "fleet", "instance", "volume", "network-interface", "launch-template",
            "spot-instances-request",
        )
    ]  # fmt: skip
    profile = f"arn:aws:iam::{account}:instance-profile/*"
    profile_tags = {
        **request_owned,
        "aws:RequestTag/topology.kubernetes.io/region": region,
    }
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "LaunchFromSharedResources",
                "Effect": "Allow",
                "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
                "Resource": [
                    f"{ec2}::image/*",
                    f"{ec2}::snapshot/*",
                    f"{ec2}:*:security-group/*",
                    f"{ec2}:*:subnet/*",
                    f"{ec2}:*:capacity-reservation/*",
                    f"{ec2}:*:placement-group/*",
                ],
            },
            {
                "Sid": "LaunchFromOwnLaunchTemplates",
                "Effect": "Allow",
                "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
                "Resource": f"{ec2}:*:launch-template/*",
                "Condition": {
                    "StringEquals": owned,
                    "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                },
            },
            {
                "Sid": "CreateTaggedResources",
                "Effect": "Allow",
                "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
                "Resource": launched,
                "Condition": {
                    "StringEquals": request_owned,
                    "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
                },
            },
            {
                "Sid": "TagOnCreate",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": launched,
                "Condition": {
                    "StringEquals": {
                        **request_owned,
                        "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"],
                    },
                    "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
                },
            },
            {
                "Sid": "TagOwnInstances",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": f"{ec2}:*:instance/*",
                "Condition": {
                    "StringEquals": owned,
                    "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                    "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster_name},
                    "ForAllValues:StringEquals": {
                        "aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]
                    },
                },
            },
            {
                "Sid": "DeleteOwnResources",
                "Effect": "Allow",
                "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
                "Resource": [f"{ec2}:*:instance/*", f"{ec2}:*:launch-template/*"],
                "Condition": {
                    "StringEquals": owned,
                    "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                },
            },
            {
                "Sid": "PassNodeRole",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": node_role_arn,
                "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            },
            {
                "Sid": "CreateInstanceProfiles",
                "Effect": "Allow",
                "Action": "iam:CreateInstanceProfile",
                "Resource": profile,
                "Condition": {
                    "StringEquals": profile_tags,
                    "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                },
            },
            {
                "Sid": "TagInstanceProfiles",
                "Effect": "Allow",
                "Action": "iam:TagInstanceProfile",
                "Resource": profile,
                "Condition": {
                    "StringEquals": {
                        **owned,
                        "aws:ResourceTag/topology.kubernetes.io/region": region,
                        **profile_tags,
                    },
                    "StringLike": {
                        "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                        "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*",
                    },
                },
            },
            {
                "Sid": "ManageOwnInstanceProfiles",
                "Effect": "Allow",
                "Action": [
                    "iam:AddRoleToInstanceProfile",
                    "iam:RemoveRoleFromInstanceProfile",
                    "iam:DeleteInstanceProfile",
                ],
                "Resource": profile,
                "Condition": {
                    "StringEquals": {
                        **owned,
                        "aws:ResourceTag/topology.kubernetes.io/region": region,
                    },
                    "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                },
            },
            {
                "Sid": "DiscoverTheCluster",
                "Effect": "Allow",
                "Action": "eks:DescribeCluster",
                "Resource": f"arn:aws:eks:{region}:{account}:cluster/{cluster_name}",
            },
            {
                "Sid": "ReadInterruptions",
                "Effect": "Allow",
                "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
                "Resource": queue_arn,
            },
            {
                "Sid": "ReadZonalShifts",
                "Effect": "Allow",
                "Action": "arc-zonal-shift:GetManagedResource",
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        "arc-zonal-shift:ResourceIdentifier": (
                            f"arn:aws:eks:{region}:{account}:cluster/{cluster_name}"
                        )
                    }
                },
            },
            {
                "Sid": "DiscoverRegionalResources",
                "Effect": "Allow",
                "Action": [
                    "ec2:DescribeCapacityReservations",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstances",
                    "ec2:DescribeInstanceStatus",
                    "ec2:DescribeInstanceTypeOfferings",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplates",
                    "ec2:DescribePlacementGroups",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeSpotPriceHistory",
                    "ec2:DescribeSubnets",
                ],
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:RequestedRegion": region}},
            },
            {
                "Sid": "ReadAmiParameters",
                "Effect": "Allow",
                "Action": "ssm:GetParameter",
                "Resource": f"arn:aws:ssm:{region}::parameter/aws/service/*",
            },
            {
                "Sid": "ReadPricesAndProfiles",
                "Effect": "Allow",
                "Action": ["pricing:GetProducts", "iam:ListInstanceProfiles"],
                "Resource": "*",
            },
            {
                "Sid": "ReadInstanceProfiles",
                "Effect": "Allow",
                "Action": "iam:GetInstanceProfile",
                "Resource": profile,
            },
        ],
    }


def _requirements(pool: PoolConfig) -> list[dict[str, Any]]:
    return [
        {
            "key": "node.kubernetes.io/instance-type",
            "operator": "In",
            "values": pool.instance_types,
        },
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": pool.capacity_types},
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
    ]


class NodeAutoscaler(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        cluster_name: str,
        region: str,
        security_group_id: pulumi.Input[str],
        cpu_pool: CpuPoolConfig,
        gpu_pool: GpuPoolConfig,
        controller_replicas: int,
        provider: k8s.Provider,
        depends_on: Sequence[pulumi.Resource],
        tags: dict[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clothing:infra:NodeAutoscaler", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        account = aws.get_caller_identity_output().account_id

        self.node_role, attachments = node_role(f"{name}-node-role", self)
        self.node_access = aws.eks.AccessEntry(
            f"{name}-node-access",
            cluster_name=cluster_name,
            principal_arn=self.node_role.arn,
            type="EC2_LINUX",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*depends_on, *attachments]),
        )

        self.queue = aws.sqs.Queue(
            f"{name}-interruptions",
            name=f"{cluster_name}-karpenter",
            message_retention_seconds=300,
            sqs_managed_sse_enabled=True,
            tags=tags,
            opts=child,
        )
        aws.sqs.QueuePolicy(
            f"{name}-interruptions-policy",
            queue_url=self.queue.url,
            policy=self.queue.arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {
                                    "Service": ["events.amazonaws.com", "sqs.amazonaws.com"]
                                },
                                "Action": "sqs:SendMessage",
                                "Resource": arn,
                            },
                            {
                                "Sid": "DenyHTTP",
                                "Effect": "Deny",
                                "Principal": "*",
                                "Action": "sqs:*",
                                "Resource": arn,
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            },
                        ],
                    }
                )
            ),
            opts=child,
        )
        self.rules = []
        for key, (source, detail_type) in INTERRUPTION_EVENTS.items():
            rule = aws.cloudwatch.EventRule(
                f"{name}-{key}",
                event_pattern=json.dumps({"source": [source], "detail-type": [detail_type]}),
                tags=tags,
                opts=child,
            )
            aws.cloudwatch.EventTarget(
                f"{name}-{key}-target", rule=rule.name, arn=self.queue.arn, opts=child
            )
            self.rules.append(rule)

        self.controller_role = aws.iam.Role(
            f"{name}-controller-role",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "pods.eks.amazonaws.com"},
                            "Action": ["sts:AssumeRole", "sts:TagSession"],
                        }
                    ],
                }
            ),
            opts=child,
        )
        self.controller_policy = aws.iam.RolePolicy(
            f"{name}-controller-policy",
            role=self.controller_role.id,
            policy=pulumi.Output.all(account, self.node_role.arn, self.queue.arn).apply(
                lambda args: json.dumps(controller_policy(cluster_name, region, *args))
            ),
            opts=child,
        )
        self.pod_identity = aws.eks.PodIdentityAssociation(
            f"{name}-pod-identity",
            cluster_name=cluster_name,
            namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            role_arn=self.controller_role.arn,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(depends_on)),
        )

        k8s_opts = pulumi.ResourceOptions(parent=self, provider=provider)
        self.crds = k8s.helm.v3.Release(
            f"{name}-crds",
            name="karpenter-crd",
            chart=CRD_CHART,
            version=VERSION,
            namespace=NAMESPACE,
            create_namespace=True,
            opts=pulumi.ResourceOptions.merge(
                k8s_opts, pulumi.ResourceOptions(depends_on=list(depends_on))
            ),
        )
        requests = KARPENTER.requests
        self.controller = k8s.helm.v3.Release(
            f"{name}-controller",
            name="karpenter",
            chart=CHART,
            version=VERSION,
            namespace=NAMESPACE,
            skip_crds=True,  # the karpenter-crd release owns (and upgrades) them
            timeout=600,
            values={
                "settings": {"clusterName": cluster_name, "interruptionQueue": self.queue.name},
                "serviceAccount": {"name": SERVICE_ACCOUNT},
                "replicas": controller_replicas,
                "nodeSelector": SYSTEM_LABELS,
                # CoreDNS may run on nodes Karpenter manages; resolve via the node.
                "dnsPolicy": "Default",
                "controller": {
                    # Karpenter reads its region from instance metadata unless told, and the
                    # nodes keep pods away from metadata (hop limit 1): without this it
                    # panics at start (aws/karpenter-provider-aws#8219). Pod Identity
                    # injects credentials, not the region.
                    "env": [{"name": "AWS_REGION", "value": region}],
                    "resources": {
                        "requests": {
                            "cpu": f"{requests.cpu_m}m",
                            "memory": f"{requests.memory_mib}Mi",
                        },
                        "limits": {"memory": f"{requests.memory_mib}Mi"},
                    },
                },
            },
            opts=pulumi.ResourceOptions.merge(
                k8s_opts,
                pulumi.ResourceOptions(
                    depends_on=[self.crds, self.pod_identity, self.controller_policy, *depends_on]
                ),
            ),
        )

        # Deleting a NodePool makes Karpenter drain and terminate its nodes, so the pools
        # must go while the controller still runs: they depend on it, and Pulumi deletes
        # dependents first.
        pool_opts = pulumi.ResourceOptions.merge(
            k8s_opts, pulumi.ResourceOptions(depends_on=[self.controller, self.node_access])
        )
        self.node_classes = {
            "cpu": self._node_class(
                "cpu", cluster_name, security_group_id, cpu_pool, "al2023", pool_opts
            ),
            "gpu": self._node_class(
                "gpu", cluster_name, security_group_id, gpu_pool, gpu_pool.ami_family, pool_opts
            ),
        }
        self.node_pools = {
            "cpu": self._node_pool(
                "cpu", cpu_pool, CPU_LABELS, [], {"cpu": str(cpu_pool.max_vcpus)},
                CPU_DISRUPTION, pool_opts,
            ),
            "gpu": self._node_pool(
                "gpu", gpu_pool, GPU_LABELS, [GPU_TAINT], {GPU_TAINT_KEY: str(gpu_pool.max_gpus)},
                GPU_DISRUPTION, pool_opts,
            ),
        }  # fmt: skip
        self.register_outputs({"queue": self.queue.name})

    def _node_class(
        self,
        tier: str,
        cluster_name: str,
        security_group_id: pulumi.Input[str],
        pool: PoolConfig,
        ami_family: str,
        opts: pulumi.ResourceOptions,
    ) -> k8s.apiextensions.CustomResource:
        # Bottlerocket keeps images on its second volume; AL2023 on the root volume.
        device = "/dev/xvdb" if ami_family == "bottlerocket" else "/dev/xvda"
        return k8s.apiextensions.CustomResource(
            f"karpenter-{tier}-nodeclass",
            api_version="karpenter.k8s.aws/v1",
            kind="EC2NodeClass",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=tier),
            spec={
                # The newest EKS-optimised AMI for the cluster's Kubernetes version; the
                # NVIDIA variant on GPU instance types. A new AMI is drift: Karpenter
                # replaces the nodes through the PDBs.
                "amiSelectorTerms": [{"alias": f"{ami_family}@latest"}],
                "role": self.node_role.name,
                "subnetSelectorTerms": [{"tags": {DISCOVERY_TAG: cluster_name}}],
                "securityGroupSelectorTerms": [{"id": security_group_id}],
                "metadataOptions": {
                    "httpEndpoint": "enabled",
                    "httpTokens": "required",
                    "httpPutResponseHopLimit": 1,  # pods cannot reach the node's credentials
                },
                "blockDeviceMappings": [
                    {
                        "deviceName": device,
                        "ebs": {
                            "volumeSize": f"{pool.disk_size_gb}Gi",
                            "volumeType": "gp3",
                            "encrypted": True,
                            "deleteOnTermination": True,
                        },
                    }
                ],
                "tags": {DISCOVERY_TAG: cluster_name},
            },
            opts=opts,
        )

    def _node_pool(
        self,
        tier: str,
        pool: PoolConfig,
        labels: dict[str, str],
        taints: list[dict[str, str]],
        limits: dict[str, str],
        disruption: dict[str, Any],
        opts: pulumi.ResourceOptions,
    ) -> k8s.apiextensions.CustomResource:
        return k8s.apiextensions.CustomResource(
            f"karpenter-{tier}-nodepool",
            api_version="karpenter.sh/v1",
            kind="NodePool",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=tier),
            spec={
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeClassRef": {
                            "group": "karpenter.k8s.aws",
                            "kind": "EC2NodeClass",
                            "name": tier,
                        },
                        "requirements": _requirements(pool),
                        "taints": taints,
                        "expireAfter": EXPIRE_AFTER,
                    },
                },
                "limits": limits,
                "disruption": disruption,
            },
            opts=pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(depends_on=[self.node_classes[tier]])
            ),
        )
