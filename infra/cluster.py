"""EKS: the control plane, a CPU node group, a GPU node group, and what GPU pods and
autoscaling need on top (NVIDIA device plugin, metrics-server)."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks
import pulumi_kubernetes as k8s

from infra.config import NodeGroupConfig, StackConfig
from infra.network import Network

GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_TAINT_KEY, "value": "true", "effect": "NoSchedule"}
NODE_ROLE_LABEL = "clothing.example/workload"
CPU_LABELS = {NODE_ROLE_LABEL: "cpu"}
GPU_LABELS = {NODE_ROLE_LABEL: "gpu"}
DEVICE_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.17.1"
# Why the device plugin cannot meet these checkov policies (annotations on the DaemonSet).
DEVICE_PLUGIN_CHECKOV_SKIPS = {
    "CKV_K8S_43": "NVIDIA publishes this image by version tag; v0.17.1 is pinned",
    "CKV_K8S_23": "writes its socket into the root-owned kubelet device-plugins directory",
    "CKV_K8S_40": "runs as root for the same reason, so no high UID",
    "CKV_K8S_8": "the plugin serves no health endpoint; the kubelet re-registers it",
    "CKV_K8S_9": "the plugin has no readiness endpoint; the kubelet tracks its registration",
}
CONTROL_PLANE_LOGS = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
NODE_POLICIES = {
    "worker": "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "cni": "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "ecr": "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
    "ssm": "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
}


class Cluster(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        cluster_name: str,
        network: Network,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clothing:infra:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.cluster_name = cluster_name

        secrets_key = aws.kms.Key(
            f"{name}-secrets",
            description=f"Envelope encryption of Kubernetes secrets in {cluster_name}",
            enable_key_rotation=True,
            deletion_window_in_days=7,
            opts=child,
        )
        node_role = aws.iam.Role(
            f"{name}-node-role",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "ec2.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
            opts=child,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-node-{key}", role=node_role.name, policy_arn=arn, opts=child
            )
            for key, arn in NODE_POLICIES.items()
        ]

        self.eks = eks.Cluster(
            f"{name}-eks",
            name=cluster_name,
            version=cfg.cluster_version,
            vpc_id=network.vpc_id,
            public_subnet_ids=network.public_subnet_ids,
            private_subnet_ids=network.private_subnet_ids,
            node_associate_public_ip_address=False,
            skip_default_node_group=True,
            authentication_mode=eks.AuthenticationMode.API,
            create_oidc_provider=True,
            encryption_config_key_arn=secrets_key.arn,
            enabled_cluster_log_types=CONTROL_PLANE_LOGS,
            endpoint_private_access=True,
            endpoint_public_access=True,
            public_access_cidrs=cfg.public_access_cidrs,
            # NetworkPolicy objects are only enforced when the VPC CNI is told to.
            vpc_cni_options=eks.VpcCniOptionsArgs(enable_network_policy=True),
            tags={"stack": cfg.stack},
            opts=child,
        )
        self.kubeconfig_json = self.eks.kubeconfig_json
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.eks.kubeconfig_json,
            enable_server_side_apply=True,
            opts=child,
        )

        group_opts = pulumi.ResourceOptions(parent=self, depends_on=attachments)
        self.cpu_group = self._node_group(
            f"{name}-cpu", cfg.cpu_nodes, node_role, network, CPU_LABELS, [], group_opts
        )
        self.gpu_group = self._node_group(
            f"{name}-gpu",
            cfg.gpu_nodes,
            node_role,
            network,
            GPU_LABELS,
            [aws.eks.NodeGroupTaintArgs(key=GPU_TAINT_KEY, value="true", effect="NO_SCHEDULE")],
            group_opts,
        )
        self.node_groups = [self.cpu_group, self.gpu_group]

        # metrics-server (for the HPAs) as an EKS add-on: AWS keeps it patched.
        self.metrics_server = aws.eks.Addon(
            f"{name}-metrics-server",
            cluster_name=cluster_name,
            addon_name="metrics-server",
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.eks, self.cpu_group]),
        )
        self.device_plugin: k8s.apps.v1.DaemonSet | None = None
        if not cfg.gpu_nodes.has_device_plugin:
            self.device_plugin = nvidia_device_plugin(
                f"{name}-nvidia-device-plugin",
                pulumi.ResourceOptions(
                    parent=self, provider=self.provider, depends_on=[self.gpu_group]
                ),
            )
        self.register_outputs({"cluster_name": cluster_name})

    def _node_group(
        self,
        name: str,
        cfg: NodeGroupConfig,
        role: aws.iam.Role,
        network: Network,
        labels: dict[str, str],
        taints: list[aws.eks.NodeGroupTaintArgs],
        opts: pulumi.ResourceOptions,
    ) -> aws.eks.NodeGroup:
        # IMDSv2 only, one hop (pods cannot reach the node's credentials), encrypted gp3 root.
        root_device = "/dev/xvdb" if cfg.ami_type.startswith("BOTTLEROCKET") else "/dev/xvda"
        template = aws.ec2.LaunchTemplate(
            f"{name}-lt",
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=1,
            ),
            block_device_mappings=[
                aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                    device_name=root_device,
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
        # An EKS managed node group. (aws.eks.NodeGroup rather than eks.ManagedNodeGroup: it
        # needs only the cluster's name, so no resource reference crosses into the eks
        # component, and its inputs stay plain and testable.)
        return aws.eks.NodeGroup(
            name,
            cluster_name=self.cluster_name,
            node_group_name=f"{self.cluster_name}-{name.rsplit('-', 1)[-1]}",
            node_role_arn=role.arn,
            subnet_ids=network.private_subnet_ids,
            instance_types=cfg.instance_types,
            capacity_type=cfg.capacity_type,
            ami_type=cfg.ami_type,
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=cfg.min_size, desired_size=cfg.desired_size, max_size=cfg.max_size
            ),
            labels=labels,
            taints=taints,
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[self.eks])),
        )


def nvidia_device_plugin(name: str, opts: pulumi.ResourceOptions) -> k8s.apps.v1.DaemonSet:
    """The NVIDIA device plugin, on GPU nodes only: advertises ``nvidia.com/gpu`` to the
    kubelet (the AL2023 NVIDIA AMI has the driver but not the plugin)."""
    labels = {"app.kubernetes.io/name": "nvidia-device-plugin"}
    skips = {
        f"checkov.io/skip{i}": f"{check}={reason}"
        for i, (check, reason) in enumerate(DEVICE_PLUGIN_CHECKOV_SKIPS.items(), start=1)
    }
    return k8s.apps.v1.DaemonSet(
        name,
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name="nvidia-device-plugin", namespace="kube-system", labels=labels, annotations=skips
        ),
        spec=k8s.apps.v1.DaemonSetSpecArgs(
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
            update_strategy=k8s.apps.v1.DaemonSetUpdateStrategyArgs(type="RollingUpdate"),
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels, annotations=skips),
                spec=k8s.core.v1.PodSpecArgs(
                    priority_class_name="system-node-critical",
                    automount_service_account_token=False,
                    node_selector=GPU_LABELS,
                    tolerations=[
                        k8s.core.v1.TolerationArgs(
                            key=GPU_TAINT_KEY, operator="Exists", effect="NoSchedule"
                        )
                    ],
                    security_context=k8s.core.v1.PodSecurityContextArgs(
                        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault")
                    ),
                    containers=[
                        k8s.core.v1.ContainerArgs(
                            name="nvidia-device-plugin",
                            image=DEVICE_PLUGIN_IMAGE,
                            image_pull_policy="Always",
                            env=[k8s.core.v1.EnvVarArgs(name="FAIL_ON_INIT_ERROR", value="false")],
                            resources=k8s.core.v1.ResourceRequirementsArgs(
                                requests={"cpu": "10m", "memory": "32Mi"},
                                limits={"cpu": "100m", "memory": "128Mi"},
                            ),
                            security_context=k8s.core.v1.SecurityContextArgs(
                                allow_privilege_escalation=False,
                                read_only_root_filesystem=True,
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
