"""EKS: the control plane (its log group owned by the stack), who may administer it, a
small managed node group for system pods, and the add-ons the rest builds on.

Workload nodes (the gateway's CPU nodes, TF Serving's GPU nodes) come from Karpenter
(``infra.karpenter``), not from node groups here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks
import pulumi_kubernetes as k8s

from infra.capacity import DEVICE_PLUGIN
from infra.kube import GPU_TAINT, Nodes

# The cluster's three kinds of node, by the label each carries: the managed node group's
# system nodes, and Karpenter's CPU and (tainted) GPU nodes.
NODE_ROLE_LABEL = "clothing.example/workload"
SYSTEM_NODES = Nodes({NODE_ROLE_LABEL: "system"})
CPU_NODES = Nodes({NODE_ROLE_LABEL: "cpu"})
GPU_NODES = Nodes({NODE_ROLE_LABEL: "gpu"}, GPU_TAINT)
DEVICE_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.17.1"
DEVICE_PLUGIN_DAEMONSET = ("kube-system", "nvidia-device-plugin")  # namespace, name
# Why the device plugin cannot meet these checkov policies (annotations on the DaemonSet).
DEVICE_PLUGIN_CHECKOV_SKIPS = {
    "CKV_K8S_22": "NVIDIA's published securityContext has a writable root filesystem",
    "CKV_K8S_29": "NVIDIA's published pod sets no pod-level security context",
    "CKV_K8S_31": "NVIDIA's published pod names no seccomp profile (its runtime's applies)",
    "CKV_K8S_43": "NVIDIA publishes this image by version tag; v0.17.1 is pinned",
    "CKV_K8S_23": "writes its socket into the root-owned kubelet device-plugins directory",
    "CKV_K8S_40": "runs as root for the same reason, so no high UID",
    "CKV_K8S_8": "the plugin serves no health endpoint; the kubelet re-registers it",
    "CKV_K8S_9": "the plugin has no readiness endpoint; the kubelet tracks its registration",
}
CONTROL_PLANE_LOGS = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
NODE_POLICIES = {
    "worker": "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "cni": "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "ecr": "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly",
    "ssm": "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
}
EC2_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


@dataclass(frozen=True)
class SystemNodesArgs:
    """The managed node group for what must not run on nodes Karpenter manages: Karpenter
    itself, CoreDNS, metrics-server."""

    instance_type: str
    size: int
    disk_size_gb: int


def node_role(name: str, parent: pulumi.Resource) -> tuple[aws.iam.Role, list[pulumi.Resource]]:
    """An EC2 role with what every EKS node needs, and its policy attachments."""
    child = pulumi.ResourceOptions(parent=parent)
    role = aws.iam.Role(name, assume_role_policy=json.dumps(EC2_TRUST), opts=child)
    attachments: list[pulumi.Resource] = [
        aws.iam.RolePolicyAttachment(f"{name}-{key}", role=role.name, policy_arn=arn, opts=child)
        for key, arn in NODE_POLICIES.items()
    ]
    return role, attachments


class Cluster(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        cluster_name: str,
        version: str,
        vpc_id: pulumi.Input[str],
        public_subnet_ids: pulumi.Input[Sequence[str]],
        private_subnet_ids: pulumi.Input[Sequence[str]],
        public_access_cidrs: list[str],
        admin_principal_arns: list[str],
        log_retention_days: int,
        system_nodes: SystemNodesArgs,
        addon_versions: dict[str, str],
        tags: dict[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clothing:infra:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.cluster_name = cluster_name
        self.version = version

        secrets_key = aws.kms.Key(
            f"{name}-secrets",
            description=f"Envelope encryption of Kubernetes secrets in {cluster_name}",
            enable_key_rotation=True,
            deletion_window_in_days=7,
            opts=child,
        )
        # EKS writes control-plane logs here; left to EKS, the group outlives the stack.
        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/aws/eks/{cluster_name}/cluster",
            retention_in_days=log_retention_days,
            tags=tags,
            opts=child,
        )
        self.eks = eks.Cluster(
            f"{name}-eks",
            name=cluster_name,
            version=version,
            vpc_id=vpc_id,
            public_subnet_ids=public_subnet_ids,
            private_subnet_ids=private_subnet_ids,
            node_associate_public_ip_address=False,
            skip_default_node_group=True,
            # Nodes (managed and Karpenter's) share the security group EKS creates.
            skip_default_security_groups=True,
            authentication_mode=eks.AuthenticationMode.API,
            access_entries={
                f"admin-{i}": eks.AccessEntryArgs(
                    principal_arn=arn,
                    access_policies={
                        "cluster-admin": eks.AccessPolicyAssociationArgs(
                            policy_arn=ADMIN_POLICY,
                            access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(
                                type="cluster"
                            ),
                        )
                    },
                )
                for i, arn in enumerate(admin_principal_arns)
            },
            encryption_config_key_arn=secrets_key.arn,
            enabled_cluster_log_types=CONTROL_PLANE_LOGS,
            # Nodes always reach the API privately; from the internet, only the listed
            # networks do, and nobody when the list is empty.
            endpoint_private_access=True,
            endpoint_public_access=bool(public_access_cidrs),
            public_access_cidrs=public_access_cidrs or None,
            # NetworkPolicy objects are only enforced when the VPC CNI is told to.
            vpc_cni_options=eks.VpcCniOptionsArgs(enable_network_policy=True),
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.log_group]),
        )
        self.kubeconfig_json = self.eks.kubeconfig_json
        self.security_group_id = self.eks.cluster_security_group_id
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.eks.kubeconfig_json,
            enable_server_side_apply=True,
            # A changed Secret (the API keys) is updated in place: replacing it would delete
            # it first, and a gateway pod starting meanwhile could not mount it.
            enable_secret_mutable=True,
            opts=child,
        )

        role, attachments = node_role(f"{name}-system-node-role", self)
        self.system_group = self._system_node_group(
            f"{name}-system", system_nodes, role, private_subnet_ids, attachments
        )
        after_system = pulumi.ResourceOptions(parent=self, depends_on=[self.system_group])
        # metrics-server (for the HPAs) and the pod identity agent (Karpenter's AWS
        # credentials) as EKS add-ons: AWS keeps them patched.
        self.addons = [
            aws.eks.Addon(
                f"{name}-{addon}",
                cluster_name=cluster_name,
                addon_name=addon,
                addon_version=version,
                resolve_conflicts_on_create="OVERWRITE",
                resolve_conflicts_on_update="OVERWRITE",
                opts=after_system,
            )
            for addon, version in addon_versions.items()
        ]
        self.register_outputs({"cluster_name": cluster_name})

    def _system_node_group(
        self,
        name: str,
        cfg: SystemNodesArgs,
        role: aws.iam.Role,
        subnet_ids: pulumi.Input[Sequence[str]],
        attachments: list[pulumi.Resource],
    ) -> aws.eks.NodeGroup:
        # IMDSv2 only, one hop (pods cannot reach the node's credentials), encrypted gp3 root.
        template = aws.ec2.LaunchTemplate(
            f"{name}-lt",
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=1,
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name="/dev/xvda",
                    ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                        volume_size=cfg.disk_size_gb,
                        volume_type="gp3",
                        encrypted="true",
                        delete_on_termination="true",
                    ),
                )
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        # A name prefix, not a name: instance type, AMI type, subnets and the launch
        # template are replace-only, and Pulumi creates the replacement before deleting
        # the old group, which a fixed name makes impossible (ResourceInUseException).
        return aws.eks.NodeGroup(
            name,
            cluster_name=self.cluster_name,
            node_group_name_prefix=f"{self.cluster_name}-system-",
            version=self.version,  # nodes follow the control plane's upgrades
            node_role_arn=role.arn,
            subnet_ids=subnet_ids,
            instance_types=[cfg.instance_type],
            capacity_type="ON_DEMAND",
            ami_type="AL2023_x86_64_STANDARD",
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=cfg.size, desired_size=cfg.size, max_size=cfg.size + 1
            ),
            labels=SYSTEM_NODES.labels,
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.eks, *attachments]),
        )


def nvidia_device_plugin(
    name: str, nodes: Nodes, opts: pulumi.ResourceOptions
) -> k8s.apps.v1.DaemonSet:
    """The NVIDIA device plugin, on GPU nodes only: advertises ``nvidia.com/gpu`` to the
    kubelet (the AL2023 NVIDIA AMI has the driver but not the plugin).

    Its security context is NVIDIA's own (k8s-device-plugin v0.17.1,
    deployments/static/nvidia-device-plugin.yml: no privilege escalation, every capability
    dropped), not a stricter one NVIDIA does not test. Unlike that manifest, which runs on
    every node and so must not fail where there is no GPU, this one runs on GPU nodes only:
    a plugin that cannot initialise there exits (``FAIL_ON_INIT_ERROR``, its default) and
    crash-loops, which the ``GPUDevicePluginDown`` alert reports, instead of idling while
    TF Serving waits for a GPU that never appears."""
    namespace, name_in_cluster = DEVICE_PLUGIN_DAEMONSET
    labels = {"app.kubernetes.io/name": name_in_cluster}
    skips = {
        f"checkov.io/skip{i}": f"{check}={reason}"
        for i, (check, reason) in enumerate(DEVICE_PLUGIN_CHECKOV_SKIPS.items(), start=1)
    }
    requests = DEVICE_PLUGIN.requests
    return k8s.apps.v1.DaemonSet(
        name,
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=name_in_cluster, namespace=namespace, labels=labels, annotations=skips
        ),
        spec=k8s.apps.v1.DaemonSetSpecArgs(
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
            update_strategy=k8s.apps.v1.DaemonSetUpdateStrategyArgs(type="RollingUpdate"),
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels, annotations=skips),
                spec=k8s.core.v1.PodSpecArgs(
                    priority_class_name="system-node-critical",
                    automount_service_account_token=False,
                    node_selector=nodes.selector,
                    tolerations=nodes.tolerations(),
                    containers=[
                        k8s.core.v1.ContainerArgs(
                            name="nvidia-device-plugin",
                            image=DEVICE_PLUGIN_IMAGE,
                            image_pull_policy="Always",
                            env=[k8s.core.v1.EnvVarArgs(name="FAIL_ON_INIT_ERROR", value="true")],
                            resources=k8s.core.v1.ResourceRequirementsArgs(
                                requests={
                                    "cpu": f"{requests.cpu_m}m",
                                    "memory": f"{requests.memory_mib}Mi",
                                },
                                limits={"cpu": "100m", "memory": "128Mi"},
                            ),
                            security_context=k8s.core.v1.SecurityContextArgs(
                                allow_privilege_escalation=False,
                                capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
                            ),
                            volume_mounts=[
                                k8s.core.v1.VolumeMountArgs(
                                    name="device-plugin",
                                    mount_path="/var/lib/kubelet/device-plugins",
                                )
                            ],
                        )
                    ],
                    volumes=[
                        k8s.core.v1.VolumeArgs(
                            name="device-plugin",
                            host_path=k8s.core.v1.HostPathVolumeSourceArgs(
                                path="/var/lib/kubelet/device-plugins", type="Directory"
                            ),
                        )
                    ],
                ),
            ),
        ),
        opts=opts,
    )
