"""Node autoscaling with Karpenter: nodes appear when pods are Pending and go when idle.

Why Karpenter (docs/architecture.md has the longer answer): it launches the instance type
a Pending pod needs, within a NodePool's limits, instead of growing fixed node groups; it
consolidates idle GPU nodes away; it replaces drifted nodes (a new AMI, a changed NodePool)
while honouring PodDisruptionBudgets; and it is what awslabs/ai-on-eks runs GPU
inference on. What it needs, all declared here:

- a node role (EC2) with an EKS access entry of type EC2_LINUX, so its nodes can join;
- the controller's IAM role, given to its service account with EKS Pod Identity, and a
  policy scoped to this cluster's tags (``infra.karpenter_policy``);
- an SQS queue fed by EventBridge with spot interruptions, rebalance recommendations,
  instance state changes and AWS Health events, so nodes are drained before they vanish;
- the ``karpenter-crd`` and ``karpenter`` Helm charts (CRDs upgraded with the chart), the
  controller on the system node group;
- an EC2NodeClass and a NodePool per ``NodePoolArgs``: ``cpu`` for the gateway, ``gpu``
  (tainted ``nvidia.com/gpu``) for TF Serving, each with its instance types, capacity
  types and limit. Capacity planning (``infra.capacity``) reads the same Args.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.capacity import INSTANCE_TYPES, KARPENTER, Pool
from infra.cluster import SYSTEM_NODES, node_role
from infra.karpenter_policy import controller_policy
from infra.kube import GPU_RESOURCE, Nodes
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


@dataclass(frozen=True)
class NodePoolArgs:
    """A Karpenter NodePool and its EC2NodeClass: what it may launch, where its pods land
    (``nodes``: the labels its nodes carry, the taint they have), and how much of it at
    most: ``limit`` vCPUs, or GPUs for a GPU pool."""

    name: str
    instance_types: list[str]
    capacity_types: list[str]
    disk_size_gb: int
    nodes: Nodes
    limit: int
    disruption: dict[str, Any]
    ami_family: str = "al2023"

    @property
    def gpus(self) -> bool:
        """A pool of GPU instance types (the config keeps GPU and CPU types apart)."""
        return any(INSTANCE_TYPES[name].gpus for name in self.instance_types)

    @property
    def limits(self) -> dict[str, str]:
        return {GPU_RESOURCE if self.gpus else "cpu": str(self.limit)}

    def capacity(self, key: str) -> Pool:
        """This pool for capacity planning, ``key`` its name in the stack config."""
        return Pool(
            key=key,
            types=tuple(INSTANCE_TYPES[name] for name in self.instance_types),
            limit=self.limit,
            limit_key="maxGpus" if self.gpus else "maxVcpus",
            gpus=self.gpus,
            disk_size_gb=self.disk_size_gb,
        )


def _requirements(pool: NodePoolArgs) -> list[dict[str, Any]]:
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
        pools: Sequence[NodePoolArgs],
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
                "nodeSelector": SYSTEM_NODES.labels,
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
            pool.name: self._node_class(pool, cluster_name, security_group_id, pool_opts)
            for pool in pools
        }
        self.node_pools = {pool.name: self._node_pool(pool, pool_opts) for pool in pools}
        self.register_outputs({"queue": self.queue.name})

    def _node_class(
        self,
        pool: NodePoolArgs,
        cluster_name: str,
        security_group_id: pulumi.Input[str],
        opts: pulumi.ResourceOptions,
    ) -> k8s.apiextensions.CustomResource:
        # Bottlerocket keeps images on its second volume; AL2023 on the root volume.
        device = "/dev/xvdb" if pool.ami_family == "bottlerocket" else "/dev/xvda"
        return k8s.apiextensions.CustomResource(
            f"karpenter-{pool.name}-nodeclass",
            api_version="karpenter.k8s.aws/v1",
            kind="EC2NodeClass",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=pool.name),
            spec={
                # The newest EKS-optimised AMI for the cluster's Kubernetes version; the
                # NVIDIA variant on GPU instance types. A new AMI is drift: Karpenter
                # replaces the nodes through the PDBs.
                "amiSelectorTerms": [{"alias": f"{pool.ami_family}@latest"}],
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
        self, pool: NodePoolArgs, opts: pulumi.ResourceOptions
    ) -> k8s.apiextensions.CustomResource:
        taint = pool.nodes.taint
        return k8s.apiextensions.CustomResource(
            f"karpenter-{pool.name}-nodepool",
            api_version="karpenter.sh/v1",
            kind="NodePool",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=pool.name),
            spec={
                "template": {
                    "metadata": {"labels": pool.nodes.labels},
                    "spec": {
                        "nodeClassRef": {
                            "group": "karpenter.k8s.aws",
                            "kind": "EC2NodeClass",
                            "name": pool.name,
                        },
                        "requirements": _requirements(pool),
                        "taints": [taint.spec()] if taint else [],
                        "expireAfter": EXPIRE_AFTER,
                    },
                },
                "limits": pool.limits,
                "disruption": pool.disruption,
            },
            opts=pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(depends_on=[self.node_classes[pool.name]])
            ),
        )
