"""The two Deployments: TF Serving (on GPU nodes) and the gateway (on CPU nodes).

Replicas belong to the HorizontalPodAutoscalers, so the Deployments never declare them
(with server-side apply, a declared count would be re-applied over the autoscaler's on
every ``pulumi up``); only a parked stack declares zero, taking the field over from the
autoscaler that owned it. Rolling updates always start the
new pod first (max surge 1, max unavailable 0): the config check guarantees every
autoscaler's maximum plus that surge pod fits within the Karpenter pools' limits.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.capacity import PROXY_SIDECAR
from infra.cluster import CPU_LABELS, GPU_LABELS, GPU_TAINT_KEY
from infra.config import ScalingConfig

GRPC_PORT = 8500
REST_PORT = 8501
GATEWAY_PORT = 9696  # the pod's port: the proxy (services/gateway/proxy/nginx.conf)
GUNICORN_PORT = 8000  # gunicorn, on the pod's loopback, behind the proxy
REDIRECT_PORT = 9697  # the proxy's answer to plain HTTP when TLS ends at the load balancer
METRICS_PORT = 9090  # the proxy's /metrics for Prometheus, inside the cluster only
APP_UID = 10001
TMP = "/tmp"  # noqa: S108  (an emptyDir per pod: the root filesystem is read-only)
ZONE = "topology.kubernetes.io/zone"
# How long `pulumi up` waits for a rollout (pulumi-kubernetes reads this annotation). A cold
# GPU node (~3-5 min), a multi-GB image pull (~5-10 min) and loading plus warming the model
# (minutes) all come before TF Serving is ready: the default 10 minutes is too short.
TIMEOUT_ANNOTATION = "pulumi.com/timeoutSeconds"
# Server-side apply refuses to set a field another manager owns. The autoscaler owns
# `spec.replicas` once it has scaled, so parking (`replicas: 0`) must take it over; no other
# field of these Deployments has another owner.
FORCE_ANNOTATION = "pulumi.com/patchForce"
# The gateway's API key digests (gateway.api_keys), from a Secret the kubelet keeps current.
API_KEYS_DIR = "/etc/gateway/api-keys"
API_KEYS_FILE = "keys"
HSTS_MAX_AGE_S = 365 * 24 * 3600
TF_SERVING_TIMEOUT_S = 45 * 60
GATEWAY_TIMEOUT_S = 20 * 60
meta = k8s.meta.v1
core = k8s.core.v1


APP_LABEL = "app.kubernetes.io/name"


@dataclass(frozen=True)
class App:
    name: str

    @property
    def labels(self) -> dict[str, str]:
        return {APP_LABEL: self.name, "app.kubernetes.io/part-of": "clothing-serving"}


TF_SERVING = App("tf-serving")
GATEWAY = App("gateway")


@dataclass(frozen=True)
class Placement:
    """Where a tier's pods may run and how they spread."""

    high_availability: bool
    parked: bool


def restricted_container_context() -> core.SecurityContextArgs:
    return core.SecurityContextArgs(
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        run_as_non_root=True,
        run_as_user=APP_UID,
        run_as_group=APP_UID,
        capabilities=core.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=core.SeccompProfileArgs(type="RuntimeDefault"),
    )


def pod_context() -> core.PodSecurityContextArgs:
    return core.PodSecurityContextArgs(
        run_as_non_root=True,
        run_as_user=APP_UID,
        run_as_group=APP_UID,
        fs_group=APP_UID,
        seccomp_profile=core.SeccompProfileArgs(type="RuntimeDefault"),
    )


def zone_spread(app: App, placement: Placement) -> list[core.TopologySpreadConstraintArgs]:
    """Highly available: never two pods in one zone while another has none (Karpenter then
    launches nodes in the other zones); otherwise a preference."""
    return [
        core.TopologySpreadConstraintArgs(
            max_skew=1,
            topology_key=ZONE,
            when_unsatisfiable="DoNotSchedule" if placement.high_availability else "ScheduleAnyway",
            label_selector=meta.LabelSelectorArgs(match_labels=app.labels),
        )
    ]


def tmp_volume() -> tuple[core.VolumeArgs, core.VolumeMountArgs]:
    return (
        core.VolumeArgs(name="tmp", empty_dir=core.EmptyDirVolumeSourceArgs(size_limit="256Mi")),
        core.VolumeMountArgs(name="tmp", mount_path=TMP),
    )


def resources(scaling: ScalingConfig, gpus: int = 0) -> core.ResourceRequirementsArgs:
    requests = {"cpu": scaling.cpu, "memory": scaling.memory}
    limits = dict(requests)
    if gpus:
        limits[GPU_TAINT_KEY] = str(gpus)
    return core.ResourceRequirementsArgs(requests=requests, limits=limits)


def model_available_probe(model_name: str) -> core.ExecActionArgs:
    """Ready only when TF Serving reports the model AVAILABLE on its REST port (after
    warmup). The image has bash but no curl."""
    request = f"GET /v1/models/{model_name} HTTP/1.0\\r\\n\\r\\n"
    script = (
        f"exec 3<>/dev/tcp/127.0.0.1/{REST_PORT} && printf '{request}' >&3 && grep -q AVAILABLE <&3"
    )
    return core.ExecActionArgs(command=["bash", "-c", script])


def deployment(
    app: App,
    namespace: pulumi.Input[str],
    pod: core.PodSpecArgs,
    placement: Placement,
    timeout_s: int,
    opts: pulumi.ResourceOptions,
) -> k8s.apps.v1.Deployment:
    return k8s.apps.v1.Deployment(
        f"{app.name}-deployment",
        metadata=meta.ObjectMetaArgs(
            name=app.name,
            namespace=namespace,
            labels=app.labels,
            annotations={TIMEOUT_ANNOTATION: str(timeout_s), FORCE_ANNOTATION: "true"},
        ),
        spec=k8s.apps.v1.DeploymentSpecArgs(
            replicas=0 if placement.parked else None,
            selector=meta.LabelSelectorArgs(match_labels=app.labels),
            strategy=k8s.apps.v1.DeploymentStrategyArgs(
                type="RollingUpdate",
                rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(
                    max_surge=1, max_unavailable=0
                ),
            ),
            template=core.PodTemplateSpecArgs(
                metadata=meta.ObjectMetaArgs(labels=app.labels), spec=pod
            ),
        ),
        opts=opts,
    )


def tf_serving_pod(
    image: pulumi.Input[str],
    model_name: str,
    scaling: ScalingConfig,
    on_gpu: bool,
    placement: Placement,
) -> core.PodSpecArgs:
    tmp_vol, tmp_mount = tmp_volume()
    probe = model_available_probe(model_name)
    # TensorFlow takes nearly all of a GPU's memory up front unless told to grow as needed:
    # then the memory used is what the model and its batches use, which the GPU memory
    # alert watches (infra/alerts.py).
    env = [core.EnvVarArgs(name="TF_FORCE_GPU_ALLOW_GROWTH", value="true")] if on_gpu else None
    container = core.ContainerArgs(
        name=TF_SERVING.name,
        image=image,
        image_pull_policy="Always",
        env=env,
        ports=[
            core.ContainerPortArgs(name="grpc", container_port=GRPC_PORT),
            core.ContainerPortArgs(name="http", container_port=REST_PORT),
        ],
        resources=resources(scaling, gpus=1 if on_gpu else 0),
        # Loading + warmup can take minutes: the startup probe allows 15 before liveness
        # takes over.
        startup_probe=core.ProbeArgs(exec_=probe, period_seconds=10, failure_threshold=90),
        readiness_probe=core.ProbeArgs(exec_=probe, period_seconds=5, failure_threshold=2),
        liveness_probe=core.ProbeArgs(
            http_get=core.HTTPGetActionArgs(path=f"/v1/models/{model_name}", port="http"),
            period_seconds=10,
            failure_threshold=3,
        ),
        security_context=restricted_container_context(),
        volume_mounts=[tmp_mount],
    )
    return core.PodSpecArgs(
        service_account_name=TF_SERVING.name,
        automount_service_account_token=False,
        security_context=pod_context(),
        node_selector=GPU_LABELS if on_gpu else CPU_LABELS,
        tolerations=[core.TolerationArgs(key=GPU_TAINT_KEY, operator="Exists", effect="NoSchedule")]
        if on_gpu
        else None,
        topology_spread_constraints=zone_spread(TF_SERVING, placement),
        termination_grace_period_seconds=30,
        containers=[container],
        volumes=[tmp_vol],
    )


@dataclass(frozen=True)
class GatewayAccess:
    """Who the gateway lets in, and how it is reached."""

    api_keys_secret: pulumi.Input[str] | None = None  # a Secret holding API_KEYS_FILE
    behind_tls: bool = False  # TLS ends at the load balancer: HSTS on every answer


def gateway_pod(
    image: pulumi.Input[str],
    proxy_image: pulumi.Input[str],
    model_target: pulumi.Input[str],
    model_name: str,
    scaling: ScalingConfig,
    placement: Placement,
    access: GatewayAccess,
) -> core.PodSpecArgs:
    """gunicorn on the pod's loopback, and nginx in front of it on the pod's port: slow or
    broken clients tie up nginx connections, never gunicorn threads."""
    tmp_vol, tmp_mount = tmp_volume()
    volumes, mounts = [tmp_vol], [tmp_mount]
    env: dict[str, pulumi.Input[str]] = {
        "TF_SERVING_HOST": model_target,
        "GRPC_LB_POLICY": "round_robin",
        # Which model to call; what it takes and returns comes from its signature.
        "MODEL_NAME": model_name,
        "HOST": "127.0.0.1",
        "PORT": str(GUNICORN_PORT),
        "PROMETHEUS_MULTIPROC_DIR": f"{TMP}/gateway-metrics",
    }
    if access.behind_tls:
        env["HSTS_MAX_AGE_S"] = str(HSTS_MAX_AGE_S)
    if access.api_keys_secret is not None:
        # A volume, not an env var: the kubelet updates it in place when the keys change,
        # and the gateway reads it again (a key rotation restarts nothing).
        env["API_KEYS_FILE"] = f"{API_KEYS_DIR}/{API_KEYS_FILE}"
        volumes.append(
            core.VolumeArgs(
                name="api-keys",
                secret=core.SecretVolumeSourceArgs(
                    secret_name=access.api_keys_secret,
                    items=[core.KeyToPathArgs(key=API_KEYS_FILE, path=API_KEYS_FILE)],
                    default_mode=0o440,  # root-owned, group fsGroup (the app's): read only
                ),
            )
        )
        mounts.append(
            core.VolumeMountArgs(name="api-keys", mount_path=API_KEYS_DIR, read_only=True)
        )
    # Ready when the whole path answers: nginx, gunicorn, the model.
    ready = core.ProbeArgs(
        http_get=core.HTTPGetActionArgs(path="/readyz", port="http"),
        period_seconds=5,
        timeout_seconds=3,
        failure_threshold=2,
    )
    # gunicorn's liveness from inside the pod (it only listens on loopback).
    alive_script = (
        "import urllib.request; "
        f"urllib.request.urlopen('http://127.0.0.1:{GUNICORN_PORT}/healthz', timeout=2)"
    )
    gateway = core.ContainerArgs(
        name=GATEWAY.name,
        image=image,
        image_pull_policy="Always",
        env=[core.EnvVarArgs(name=k, value=v) for k, v in env.items()],
        resources=resources(scaling),
        readiness_probe=ready,
        liveness_probe=core.ProbeArgs(
            exec_=core.ExecActionArgs(command=["python", "-c", alive_script]),
            period_seconds=10,
            timeout_seconds=5,
            failure_threshold=3,
        ),
        # Give the load balancer time to stop sending before gunicorn drains.
        lifecycle=core.LifecycleArgs(
            pre_stop=core.LifecycleHandlerArgs(sleep=core.SleepActionArgs(seconds=10))
        ),
        security_context=restricted_container_context(),
        volume_mounts=mounts,
    )
    proxy_requests = {
        "cpu": f"{PROXY_SIDECAR.cpu_m}m",
        "memory": f"{PROXY_SIDECAR.memory_mib}Mi",
    }
    proxy = core.ContainerArgs(
        name="proxy",
        image=proxy_image,
        image_pull_policy="Always",
        ports=[
            core.ContainerPortArgs(name="http", container_port=GATEWAY_PORT),
            core.ContainerPortArgs(name="redirect", container_port=REDIRECT_PORT),
            core.ContainerPortArgs(name="metrics", container_port=METRICS_PORT),
        ],
        resources=core.ResourceRequirementsArgs(
            requests=proxy_requests, limits={"cpu": "500m", "memory": "256Mi"}
        ),
        readiness_probe=ready,
        liveness_probe=core.ProbeArgs(
            http_get=core.HTTPGetActionArgs(path="/nginx-healthz", port="http"),
            period_seconds=10,
            timeout_seconds=3,
            failure_threshold=3,
        ),
        # Keep accepting while the load balancer deregisters the pod, then drain.
        lifecycle=core.LifecycleArgs(
            pre_stop=core.LifecycleHandlerArgs(sleep=core.SleepActionArgs(seconds=15))
        ),
        security_context=restricted_container_context(),
        volume_mounts=[tmp_mount],
    )
    return core.PodSpecArgs(
        service_account_name=GATEWAY.name,
        automount_service_account_token=False,
        security_context=pod_context(),
        node_selector=CPU_LABELS,
        topology_spread_constraints=zone_spread(GATEWAY, placement),
        termination_grace_period_seconds=40,
        containers=[gateway, proxy],
        volumes=volumes,
    )
