"""The gateway workload: its pods (gunicorn behind the nginx proxy), its Service, its
autoscaler, disruption budget and NetworkPolicy, and its API keys.

Everything about the gateway on Kubernetes is here, built from ``GatewayArgs`` (what the
stack config says about it), a Kubernetes provider and image references; how its Service
is exposed (a cloud load balancer, TLS) comes in as an ``Exposure`` from the target.
Capacity planning and ``make cost`` read the same ``GatewayArgs`` (``pods``), so the
check and the pods cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from infra.capacity import Workload
from infra.kube import (
    GATEWAY,
    TMP,
    Component,
    Placement,
    PodSize,
    Replicas,
    allow_ingress,
    autoscaler,
    deployment,
    disruption_budget,
    pod_context,
    restricted_container_context,
    rollout,
    service_account,
    tmp_volume,
    zone_spread,
)
from serving_contract import gateway_env as env
from serving_contract.gateway_env import MIB, DecodeSizing
from serving_contract.ports import GATEWAY_PORT, GUNICORN_PORT, METRICS_PORT, REDIRECT_PORT

core = k8s.core.v1

# A gateway container's size unless the stack says (gateway.cpu, gateway.memory): half a
# core (the autoscaler adds pods past targetCpuPercent of it), and a memory the gateway
# starts in (it sizes its decoding budget from its limit).
POD = PodSize("500m", "1Gi")
# The nginx sidecar in front of every gateway pod: requests (nginx idles at a few MiB)
# and limits.
PROXY = PodSize("50m", "64Mi")
PROXY_LIMITS = {"cpu": "500m", "memory": "256Mi"}
# The gateway's API key digests (gateway.api_keys), from a Secret the kubelet keeps current.
API_KEYS_DIR = "/etc/gateway/api-keys"
API_KEYS_FILE = "keys"
HSTS_MAX_AGE_S = 365 * 24 * 3600
# How long `pulumi up` waits for the gateway's rollout in all (it starts once TF Serving's
# is done; a pod that gets no node fails it far sooner).
TIMEOUT_S = 20 * 60


@dataclass(frozen=True)
class Exposure:
    """How the gateway's Service meets its clients, as the target provides it: the
    Service's type, annotations and ports (name -> (port, the pod's port name)), who may
    connect, and whether TLS ends in front of it (then plain HTTP reaches the proxy's
    redirect port)."""

    service_type: str = "ClusterIP"
    annotations: dict[str, str] = field(default_factory=dict)
    ports: dict[str, tuple[int, str]] = field(default_factory=lambda: {"http": (80, "http")})
    source_ranges: list[str] | None = None
    tls: bool = False

    @property
    def plain_http_port(self) -> int:
        """The pod port that plain HTTP reaches."""
        return REDIRECT_PORT if self.tls else GATEWAY_PORT


@dataclass(frozen=True)
class GatewayArgs:
    pods: PodSize
    replicas: Replicas
    placement: Placement
    model_name: str
    api_key_file: str | None = None  # the key file's text (digests only), None: no keys
    # TF Serving sleeps at zero replicas when idle: how long a wake takes, until the
    # gateway has measured one (None: it never sleeps)
    wake_estimate_s: int | None = None

    @property
    def workload(self) -> Workload:
        """What capacity planning needs to know of the pods: their requests, proxy
        included."""
        return Workload(
            requests=self.pods.requests + PROXY.requests,
            gpus=0,
            minimum=self.replicas.minimum,
            maximum=self.replicas.maximum,
            surge=self.replicas.surge,
            size=str(self.pods),
        )

    def environment(
        self, model_target: pulumi.Input[str], tls: bool
    ) -> dict[str, pulumi.Input[str]]:
        """The gateway container's environment (names and meanings: serving_contract)."""
        values: dict[str, pulumi.Input[str]] = {
            env.TF_SERVING_HOST.name: model_target,
            env.GRPC_LB_POLICY.name: "round_robin",
            # Which model to call; what it takes and returns comes from its signature.
            env.MODEL_NAME.name: self.model_name,
            env.HOST.name: "127.0.0.1",
            env.PORT.name: str(GUNICORN_PORT),
            env.PROMETHEUS_MULTIPROC_DIR.name: f"{TMP}/gateway-metrics",
        }
        if tls:
            values[env.HSTS_MAX_AGE_S.name] = str(HSTS_MAX_AGE_S)
        if self.api_key_file is not None:
            values[env.API_KEYS_FILE.name] = f"{API_KEYS_DIR}/{API_KEYS_FILE}"
        if self.wake_estimate_s is not None:
            values[env.MODEL_WAKE_ESTIMATE_S.name] = str(self.wake_estimate_s)
        return values

    def memory_shortfall(self) -> str | None:
        """Why the gateway would refuse to start in these pods (None: it starts): the
        gateway sizes its decoding budget from its memory limit."""
        sizing = DecodeSizing.from_env(
            {k: v for k, v in self.environment("", tls=False).items() if isinstance(v, str)}
        )
        return sizing.shortfall(self.pods.requests.memory_mib * MIB)


def _pod(
    args: GatewayArgs,
    image: pulumi.Input[str],
    proxy_image: pulumi.Input[str],
    environment: dict[str, pulumi.Input[str]],
    api_keys_secret: pulumi.Input[str] | None,
) -> core.PodSpecArgs:
    """gunicorn on the pod's loopback, and nginx in front of it on the pod's port: slow or
    broken clients tie up nginx connections, never gunicorn threads."""
    tmp_vol, tmp_mount = tmp_volume()
    volumes, mounts = [tmp_vol], [tmp_mount]
    if api_keys_secret is not None:
        # A volume, not an env var: the kubelet updates it in place when the keys change,
        # and the gateway reads it again (a key rotation restarts nothing).
        volumes.append(
            core.VolumeArgs(
                name="api-keys",
                secret=core.SecretVolumeSourceArgs(
                    secret_name=api_keys_secret,
                    items=[core.KeyToPathArgs(key=API_KEYS_FILE, path=API_KEYS_FILE)],
                    default_mode=0o440,  # root-owned, group fsGroup (the app's): read only
                ),
            )
        )
        mounts.append(
            core.VolumeMountArgs(name="api-keys", mount_path=API_KEYS_DIR, read_only=True)
        )
    # Ready when nginx and gunicorn answer, whatever the model's state (a sleeping or
    # restarting TF Serving gets the gateway's 503, not connection errors): /readyz.
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
        env=[core.EnvVarArgs(name=k, value=v) for k, v in environment.items()],
        resources=args.pods.resources(),
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
            requests={"cpu": PROXY.cpu, "memory": PROXY.memory}, limits=PROXY_LIMITS
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
        node_selector=args.placement.nodes.selector,
        tolerations=args.placement.nodes.tolerations(),
        topology_spread_constraints=zone_spread(GATEWAY, args.placement),
        termination_grace_period_seconds=40,
        containers=[gateway, proxy],
        volumes=volumes,
    )


class Gateway(pulumi.ComponentResource):
    """``prefix``: the names its resources had before this component existed (the Serving
    component's), kept so that no live resource is replaced."""

    def __init__(
        self,
        name: str,
        args: GatewayArgs,
        *,
        prefix: str,
        image: pulumi.Input[str],
        proxy_image: pulumi.Input[str],
        model_target: pulumi.Input[str],
        exposure: Exposure,
        kubeconfig: pulumi.Input[str],
        within: Component,
        after: pulumi.Resource,
    ) -> None:
        super().__init__("clothing:infra:Gateway", name, None, within.opts)
        at = Component(
            within.namespace,
            pulumi.ResourceOptions.merge(within.opts, pulumi.ResourceOptions(parent=self)),
            within.aliases,
        )
        service_account(GATEWAY, at)
        # Digests only (infra.api_keys), still a secret to Pulumi: never shown in plain text.
        self.api_keys = (
            core.Secret(
                f"{prefix}-api-keys",
                metadata=at.metadata("gateway-api-keys", GATEWAY),
                type="Opaque",
                string_data={API_KEYS_FILE: pulumi.Output.secret(args.api_key_file)},
                opts=at.options(),
            )
            if args.api_key_file
            else None
        )
        pod = _pod(
            args,
            image,
            proxy_image,
            args.environment(model_target, exposure.tls),
            self.api_keys.metadata.name if self.api_keys else None,
        )
        # The gateway is ready only once TF Serving is (``after``): start it after that.
        self.deployment = deployment(GATEWAY, pod, args.placement, args.replicas, at, after)
        rollout(GATEWAY, self.deployment, TIMEOUT_S, kubeconfig, at)
        self.service = core.Service(
            f"{prefix}-gateway-svc",
            metadata=at.metadata(GATEWAY.name, GATEWAY, exposure.annotations or None),
            spec=core.ServiceSpecArgs(
                type=exposure.service_type,
                selector=GATEWAY.labels,
                ports=[
                    core.ServicePortArgs(name=port_name, port=port, target_port=target)
                    for port_name, (port, target) in exposure.ports.items()
                ],
                load_balancer_source_ranges=exposure.source_ranges,
            ),
            opts=at.options(),
        )
        # A parked stack runs no pods, so nothing to autoscale (an HPA cannot go to zero).
        self.autoscaler = (
            None
            if args.placement.parked
            else autoscaler(GATEWAY, args.replicas, at, self.deployment, after)
        )
        disruption_budget(GATEWAY, at)
        allow_ingress(
            "gateway-from-load-balancer",
            GATEWAY.selector,
            sorted({GATEWAY_PORT, exposure.plain_http_port}),
            None,
            at,
            GATEWAY,
        )
        self.register_outputs({})
