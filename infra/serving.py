"""Kubernetes workloads: TF Serving on GPU nodes, the gateway on CPU nodes behind an NLB.

Everything lives in one namespace that enforces the ``restricted`` Pod Security Standard.
The gateway reaches TF Serving through a headless Service (one gRPC sub-channel per pod,
``round_robin`` per request); a ClusterIP Service exists for everything else. Only the
gateway may connect to TF Serving (NetworkPolicy, enforced by the VPC CNI).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.cluster import CPU_LABELS, GPU_LABELS, GPU_TAINT_KEY, Cluster
from infra.config import ScalingConfig, StackConfig
from infra.images import ImageRegistry
from infra.model_export import ModelExport

NAMESPACE = "clothing"
GRPC_PORT = 8500
REST_PORT = 8501
GATEWAY_PORT = 9696
APP_UID = 10001
LB_ANNOTATION = "service.beta.kubernetes.io/aws-load-balancer"
TMP = "/tmp"  # noqa: S108  (an emptyDir per pod: the root filesystem is read-only)
meta = k8s.meta.v1
core = k8s.core.v1


@dataclass(frozen=True)
class App:
    name: str

    @property
    def labels(self) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": self.name,
            "app.kubernetes.io/part-of": "clothing-serving",
        }


TF_SERVING = App("tf-serving")
GATEWAY = App("gateway")


def _restricted_container_context() -> core.SecurityContextArgs:
    return core.SecurityContextArgs(
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        run_as_non_root=True,
        run_as_user=APP_UID,
        run_as_group=APP_UID,
        capabilities=core.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=core.SeccompProfileArgs(type="RuntimeDefault"),
    )


def _pod_context() -> core.PodSecurityContextArgs:
    return core.PodSecurityContextArgs(
        run_as_non_root=True,
        run_as_user=APP_UID,
        run_as_group=APP_UID,
        fs_group=APP_UID,
        seccomp_profile=core.SeccompProfileArgs(type="RuntimeDefault"),
    )


def _zone_spread(app: App) -> list[core.TopologySpreadConstraintArgs]:
    return [
        core.TopologySpreadConstraintArgs(
            max_skew=1,
            topology_key="topology.kubernetes.io/zone",
            when_unsatisfiable="ScheduleAnyway",
            label_selector=meta.LabelSelectorArgs(match_labels=app.labels),
        )
    ]


def _tmp_volume() -> tuple[core.VolumeArgs, core.VolumeMountArgs]:
    return (
        core.VolumeArgs(name="tmp", empty_dir=core.EmptyDirVolumeSourceArgs(size_limit="256Mi")),
        core.VolumeMountArgs(name="tmp", mount_path=TMP),
    )


def model_available_probe(model_name: str) -> core.ExecActionArgs:
    """Ready only when TF Serving reports the model AVAILABLE on its REST port (after
    warmup). The image has bash but no curl."""
    request = f"GET /v1/models/{model_name} HTTP/1.0\\r\\n\\r\\n"
    script = (
        f"exec 3<>/dev/tcp/127.0.0.1/{REST_PORT} && printf '{request}' >&3 && grep -q AVAILABLE <&3"
    )
    return core.ExecActionArgs(command=["bash", "-c", script])


class Serving(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        export: ModelExport,
        images: ImageRegistry,
        cluster: Cluster,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clothing:infra:Serving", name, None, opts)
        self.cfg = cfg
        self.export = export
        depends: list[pulumi.Resource] = [*cluster.node_groups]
        if cluster.device_plugin is not None:
            depends.append(cluster.device_plugin)
        self._opts = pulumi.ResourceOptions(
            parent=self, provider=cluster.provider, depends_on=depends
        )

        self.namespace = core.Namespace(
            f"{name}-ns",
            metadata=meta.ObjectMetaArgs(
                name=NAMESPACE,
                labels={
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            ),
            opts=self._opts,
        )
        self.ns = self.namespace.metadata.name
        self._service_account(TF_SERVING)
        self._service_account(GATEWAY)

        self.tf_serving = self._tf_serving_deployment(images.model_ref)
        tf_ports = [
            core.ServicePortArgs(
                name="grpc", port=GRPC_PORT, target_port="grpc", app_protocol="grpc"
            ),
            core.ServicePortArgs(name="http", port=REST_PORT, target_port="http"),
        ]
        self.tf_serving_service = core.Service(
            f"{name}-tf-serving-svc",
            metadata=self._meta(TF_SERVING.name, TF_SERVING),
            spec=core.ServiceSpecArgs(type="ClusterIP", selector=TF_SERVING.labels, ports=tf_ports),
            opts=self._opts,
        )
        # Headless: DNS returns every ready pod, so the gateway's round_robin policy keeps a
        # connection to each and balances per request (a ClusterIP pins one connection).
        self.tf_serving_headless = core.Service(
            f"{name}-tf-serving-headless",
            metadata=self._meta(f"{TF_SERVING.name}-headless", TF_SERVING),
            spec=core.ServiceSpecArgs(
                cluster_ip="None", selector=TF_SERVING.labels, ports=tf_ports
            ),
            opts=self._opts,
        )
        self.model_target = pulumi.Output.concat(
            "dns:///",
            self.tf_serving_headless.metadata.name,
            ".",
            self.tf_serving_headless.metadata.namespace,
            f".svc.cluster.local:{GRPC_PORT}",
        )

        self.gateway = self._gateway_deployment(images.gateway_ref)
        self.gateway_service = core.Service(
            f"{name}-gateway-svc",
            metadata=self._meta(
                GATEWAY.name,
                GATEWAY,
                annotations={
                    f"{LB_ANNOTATION}-type": "nlb",
                    f"{LB_ANNOTATION}-cross-zone-load-balancing-enabled": "true",
                },
            ),
            spec=core.ServiceSpecArgs(
                type="LoadBalancer",
                selector=GATEWAY.labels,
                ports=[core.ServicePortArgs(name="http", port=80, target_port="http")],
            ),
            opts=self._opts,
        )

        self.autoscalers = [
            self._autoscaler(TF_SERVING, cfg.tf_serving),
            self._autoscaler(GATEWAY, cfg.gateway),
        ]
        self.disruption_budgets = [
            self._disruption_budget(TF_SERVING),
            self._disruption_budget(GATEWAY),
        ]
        self.network_policies = self._network_policies()

        self.gateway_hostname = self.gateway_service.status.apply(_ingress_hostname)
        self.register_outputs(
            {"gateway_hostname": self.gateway_hostname, "model_target": self.model_target}
        )

    # -- helpers --------------------------------------------------------------------------
    def _meta(
        self, name: str, app: App, annotations: dict[str, str] | None = None
    ) -> meta.ObjectMetaArgs:
        return meta.ObjectMetaArgs(
            name=name, namespace=self.ns, labels=app.labels, annotations=annotations
        )

    def _service_account(self, app: App) -> core.ServiceAccount:
        # Neither workload talks to the Kubernetes API.
        return core.ServiceAccount(
            f"{app.name}-sa",
            metadata=self._meta(app.name, app),
            automount_service_account_token=False,
            opts=self._opts,
        )

    def _deployment(
        self, app: App, scaling: ScalingConfig, pod: core.PodSpecArgs, *, can_surge: bool = True
    ) -> k8s.apps.v1.Deployment:
        # Surge a new pod before removing an old one when there is room for it; otherwise
        # (every GPU node taken) replace one pod at a time.
        surge, unavailable = (1, 0) if can_surge else (0, 1)
        return k8s.apps.v1.Deployment(
            f"{app.name}-deployment",
            metadata=self._meta(app.name, app),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=scaling.replicas,
                selector=meta.LabelSelectorArgs(match_labels=app.labels),
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(
                        max_surge=surge, max_unavailable=unavailable
                    ),
                ),
                template=core.PodTemplateSpecArgs(
                    metadata=meta.ObjectMetaArgs(labels=app.labels), spec=pod
                ),
            ),
            # The HPA owns the replica count once the Deployment exists.
            opts=pulumi.ResourceOptions.merge(
                self._opts, pulumi.ResourceOptions(ignore_changes=["spec.replicas"])
            ),
        )

    def _tf_serving_deployment(self, image: pulumi.Input[str]) -> k8s.apps.v1.Deployment:
        s = self.cfg.tf_serving
        on_gpu = self.cfg.model.on_gpu
        limits = {"cpu": s.cpu, "memory": s.memory}
        if on_gpu:
            limits[GPU_TAINT_KEY] = "1"
        tmp_volume, tmp_mount = _tmp_volume()
        probe = model_available_probe(self.export.name)
        container = core.ContainerArgs(
            name=TF_SERVING.name,
            image=image,
            image_pull_policy="Always",
            ports=[
                core.ContainerPortArgs(name="grpc", container_port=GRPC_PORT),
                core.ContainerPortArgs(name="http", container_port=REST_PORT),
            ],
            resources=core.ResourceRequirementsArgs(
                requests={"cpu": s.cpu, "memory": s.memory}, limits=limits
            ),
            # Loading + warmup can take minutes on a cold GPU node: the startup probe allows
            # 10 minutes before liveness takes over.
            startup_probe=core.ProbeArgs(exec_=probe, period_seconds=10, failure_threshold=60),
            readiness_probe=core.ProbeArgs(exec_=probe, period_seconds=5, failure_threshold=2),
            liveness_probe=core.ProbeArgs(
                http_get=core.HTTPGetActionArgs(path=f"/v1/models/{self.export.name}", port="http"),
                period_seconds=10,
                failure_threshold=3,
            ),
            security_context=_restricted_container_context(),
            volume_mounts=[tmp_mount],
        )
        pod = core.PodSpecArgs(
            service_account_name=TF_SERVING.name,
            automount_service_account_token=False,
            security_context=_pod_context(),
            node_selector=GPU_LABELS if on_gpu else CPU_LABELS,
            tolerations=[
                core.TolerationArgs(key=GPU_TAINT_KEY, operator="Exists", effect="NoSchedule")
            ]
            if on_gpu
            else None,
            topology_spread_constraints=_zone_spread(TF_SERVING),
            termination_grace_period_seconds=30,
            containers=[container],
            volumes=[tmp_volume],
        )
        # One GPU per pod: a surge pod needs a GPU node beyond the replicas' own.
        spare_gpu = self.cfg.gpu_nodes.max_size > s.max_replicas
        return self._deployment(TF_SERVING, s, pod, can_surge=not on_gpu or spare_gpu)

    def _gateway_deployment(self, image: pulumi.Input[str]) -> k8s.apps.v1.Deployment:
        s = self.cfg.gateway
        tmp_volume, tmp_mount = _tmp_volume()
        env: dict[str, pulumi.Input[str]] = {
            "TF_SERVING_HOST": self.model_target,
            "GRPC_LB_POLICY": "round_robin",
            # Which model to call; what it takes and returns comes from its signature.
            "MODEL_NAME": self.export.name,
            "WEB_CONCURRENCY": "2",
            "GUNICORN_THREADS": "8",
            "PROMETHEUS_MULTIPROC_DIR": f"{TMP}/gateway-metrics",
        }
        container = core.ContainerArgs(
            name=GATEWAY.name,
            image=image,
            image_pull_policy="Always",
            ports=[core.ContainerPortArgs(name="http", container_port=GATEWAY_PORT)],
            env=[core.EnvVarArgs(name=k, value=v) for k, v in env.items()],
            resources=core.ResourceRequirementsArgs(
                requests={"cpu": s.cpu, "memory": s.memory},
                limits={"cpu": s.cpu, "memory": s.memory},
            ),
            readiness_probe=core.ProbeArgs(
                http_get=core.HTTPGetActionArgs(path="/readyz", port="http"),
                period_seconds=5,
                timeout_seconds=3,
                failure_threshold=2,
            ),
            liveness_probe=core.ProbeArgs(
                http_get=core.HTTPGetActionArgs(path="/healthz", port="http"),
                period_seconds=10,
                timeout_seconds=3,
                failure_threshold=3,
            ),
            # Give the load balancer time to stop sending before gunicorn drains.
            lifecycle=core.LifecycleArgs(
                pre_stop=core.LifecycleHandlerArgs(sleep=core.SleepActionArgs(seconds=10))
            ),
            security_context=_restricted_container_context(),
            volume_mounts=[tmp_mount],
        )
        pod = core.PodSpecArgs(
            service_account_name=GATEWAY.name,
            automount_service_account_token=False,
            security_context=_pod_context(),
            node_selector=CPU_LABELS,
            topology_spread_constraints=_zone_spread(GATEWAY),
            termination_grace_period_seconds=40,
            containers=[container],
            volumes=[tmp_volume],
        )
        return self._deployment(GATEWAY, s, pod)

    def _autoscaler(
        self, app: App, scaling: ScalingConfig
    ) -> k8s.autoscaling.v2.HorizontalPodAutoscaler:
        return k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{app.name}-hpa",
            metadata=self._meta(app.name, app),
            spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
                scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                    api_version="apps/v1", kind="Deployment", name=app.name
                ),
                min_replicas=scaling.min_replicas,
                max_replicas=scaling.max_replicas,
                metrics=[
                    k8s.autoscaling.v2.MetricSpecArgs(
                        type="Resource",
                        resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                            name="cpu",
                            target=k8s.autoscaling.v2.MetricTargetArgs(
                                type="Utilization",
                                average_utilization=scaling.target_cpu_percent,
                            ),
                        ),
                    )
                ],
                behavior=k8s.autoscaling.v2.HorizontalPodAutoscalerBehaviorArgs(
                    scale_down=k8s.autoscaling.v2.HPAScalingRulesArgs(
                        stabilization_window_seconds=300
                    )
                ),
            ),
            opts=pulumi.ResourceOptions.merge(
                self._opts, pulumi.ResourceOptions(depends_on=[self.gateway, self.tf_serving])
            ),
        )

    def _disruption_budget(self, app: App) -> k8s.policy.v1.PodDisruptionBudget:
        # One pod at a time may be evicted (node drains, upgrades), never all of them.
        return k8s.policy.v1.PodDisruptionBudget(
            f"{app.name}-pdb",
            metadata=self._meta(app.name, app),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=1,
                selector=meta.LabelSelectorArgs(match_labels=app.labels),
            ),
            opts=self._opts,
        )

    def _allow_ingress(
        self, name: str, app: App, ports: list[int], source: App | None = None
    ) -> k8s.networking.v1.NetworkPolicy:
        """Let traffic reach ``app`` on ``ports``: from ``source``'s pods, or from anywhere."""
        net = k8s.networking.v1
        peers = (
            [
                net.NetworkPolicyPeerArgs(
                    pod_selector=meta.LabelSelectorArgs(match_labels=source.labels)
                )
            ]
            if source
            else None
        )
        return net.NetworkPolicy(
            name,
            metadata=self._meta(name, app),
            spec=net.NetworkPolicySpecArgs(
                pod_selector=meta.LabelSelectorArgs(match_labels=app.labels),
                policy_types=["Ingress"],
                ingress=[
                    net.NetworkPolicyIngressRuleArgs(
                        from_=peers,
                        ports=[net.NetworkPolicyPortArgs(port=p, protocol="TCP") for p in ports],
                    )
                ],
            ),
            opts=self._opts,
        )

    def _network_policies(self) -> list[k8s.networking.v1.NetworkPolicy]:
        net = k8s.networking.v1
        deny_all = net.NetworkPolicy(
            "default-deny-ingress",
            metadata=meta.ObjectMetaArgs(name="default-deny-ingress", namespace=self.ns),
            spec=net.NetworkPolicySpecArgs(
                pod_selector=meta.LabelSelectorArgs(), policy_types=["Ingress"]
            ),
            opts=self._opts,
        )
        only_gateway = self._allow_ingress(
            "tf-serving-from-gateway", TF_SERVING, [GRPC_PORT, REST_PORT], source=GATEWAY
        )
        public_gateway = self._allow_ingress("gateway-from-load-balancer", GATEWAY, [GATEWAY_PORT])
        return [deny_all, only_gateway, public_gateway]


def _ingress_hostname(status: object) -> str:
    """The load balancer's DNS name from a Service status (Pulumi waits for it)."""
    ingress = getattr(getattr(status, "load_balancer", None), "ingress", None) or []
    for item in ingress:
        name = getattr(item, "hostname", None) or getattr(item, "ip", None)
        if name:
            return str(name)
    raise ValueError("the gateway Service has no load balancer address")
