"""The TF Serving workload: its pods (on GPU nodes, or CPU nodes for a CPU-only stack),
the Services the gateway reaches it through, its autoscaler, disruption budget and
NetworkPolicy.

Built from ``TfServingArgs``, a Kubernetes provider and the model image's reference.
The gateway reaches it through a headless Service (one gRPC sub-channel per pod,
``round_robin`` per request); a ClusterIP Service exists for everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.capacity import Workload
from infra.demand import Demand, handover, scaled_object
from infra.kube import (
    GATEWAY,
    TF_SERVING,
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
from serving_contract.ports import GRPC_PORT, REST_PORT

core = k8s.core.v1

# How long `pulumi up` waits for TF Serving's rollout in all. A cold GPU node (~3-5 min), a
# multi-GB image pull (~5-10 min) and loading plus warming the model (minutes) all come
# before it is ready. A pod that gets no node fails the rollout far sooner
# (infra.placement_watch).
TIMEOUT_S = 45 * 60
# How long the model may take to load and warm up before liveness checks start:
# STARTUP_CHECKS x STARTUP_PERIOD_S (15 minutes).
STARTUP_PERIOD_S, STARTUP_CHECKS = 10, 90
METRICS_PATH = "/monitoring/prometheus/metrics"  # on the REST port (config/monitoring.config)
# A TF Serving container's size unless the stack says (tfServing.cpu, tfServing.memory). On
# a GPU node the GPU does the work, and two cores feed it (decoding requests, batching); on
# CPU nodes one core, so a pod fits the smallest CPU types the stacks use (t3.large,
# m6i.large: under 1.8 cores left for pods), and the autoscaler adds pods instead.
GPU_POD = PodSize("2", "6Gi")
CPU_POD = PodSize("1", "6Gi")
# On a laptop's cluster (kind and the like): one core, and the memory one model needs.
LAPTOP_POD = PodSize("1", "2Gi")


@dataclass(frozen=True)
class TfServingArgs:
    pods: PodSize
    replicas: Replicas
    placement: Placement
    model_name: str
    gpus: int  # per pod: 1 on GPU nodes, 0 on CPU nodes
    # scaled by KEDA on the images asked for (and maybe to zero); None: on CPU (an HPA)
    demand: Demand | None = None

    @property
    def sleeps(self) -> bool:
        """Goes to zero replicas when nobody asks for a while."""
        return self.demand is not None and self.demand.sleep_after_s is not None

    @property
    def workload(self) -> Workload:
        """What capacity planning needs to know of the pods."""
        return Workload(
            requests=self.pods.requests,
            gpus=self.gpus,
            minimum=self.replicas.minimum,
            maximum=self.replicas.maximum,
            surge=self.replicas.surge,
            size=str(self.pods),
        )


def model_available_probe(model_name: str) -> core.ExecActionArgs:
    """Ready only when TF Serving reports the model AVAILABLE on its REST port (after
    warmup). The image has bash but no curl."""
    request = f"GET /v1/models/{model_name} HTTP/1.0\\r\\n\\r\\n"
    script = (
        f"exec 3<>/dev/tcp/127.0.0.1/{REST_PORT} && printf '{request}' >&3 && grep -q AVAILABLE <&3"
    )
    return core.ExecActionArgs(command=["bash", "-c", script])


def _pod(args: TfServingArgs, image: pulumi.Input[str]) -> core.PodSpecArgs:
    tmp_vol, tmp_mount = tmp_volume()
    probe = model_available_probe(args.model_name)
    # TensorFlow takes nearly all of a GPU's memory up front unless told to grow as needed:
    # then the memory used is what the model and its batches use, which the GPU memory
    # alert watches (infra/alerts.py).
    env = [core.EnvVarArgs(name="TF_FORCE_GPU_ALLOW_GROWTH", value="true")] if args.gpus else None
    container = core.ContainerArgs(
        name=TF_SERVING.name,
        image=image,
        image_pull_policy="Always",
        env=env,
        ports=[
            core.ContainerPortArgs(name="grpc", container_port=GRPC_PORT),
            core.ContainerPortArgs(name="http", container_port=REST_PORT),
        ],
        resources=args.pods.resources(gpus=args.gpus),
        # Loading + warmup can take minutes: the startup probe allows them before liveness
        # takes over.
        startup_probe=core.ProbeArgs(
            exec_=probe, period_seconds=STARTUP_PERIOD_S, failure_threshold=STARTUP_CHECKS
        ),
        readiness_probe=core.ProbeArgs(exec_=probe, period_seconds=5, failure_threshold=2),
        liveness_probe=core.ProbeArgs(
            http_get=core.HTTPGetActionArgs(path=f"/v1/models/{args.model_name}", port="http"),
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
        node_selector=args.placement.nodes.selector,
        tolerations=args.placement.nodes.tolerations(),
        topology_spread_constraints=zone_spread(TF_SERVING, args.placement),
        termination_grace_period_seconds=30,
        containers=[container],
        volumes=[tmp_vol],
    )


class TfServing(pulumi.ComponentResource):
    """``prefix``: the names its resources had before this component existed (the Serving
    component's), kept so that no live resource is replaced."""

    def __init__(
        self,
        name: str,
        args: TfServingArgs,
        *,
        prefix: str,
        image: pulumi.Input[str],
        kubeconfig: pulumi.Input[str],
        within: Component,
        scaler_after: Sequence[pulumi.Resource] = (),
    ) -> None:
        """``scaler_after``: what KEDA's ScaledObject needs first (KEDA's chart, its CRDs
        and webhook), when ``args.demand`` asks for one."""
        super().__init__("clothing:infra:TfServing", name, None, within.opts)
        at = Component(
            within.namespace,
            pulumi.ResourceOptions.merge(within.opts, pulumi.ResourceOptions(parent=self)),
            within.aliases,
        )
        service_account(TF_SERVING, at)
        self.deployment = deployment(
            TF_SERVING, _pod(args, image), args.placement, args.replicas, at
        )
        # Done when TF Serving serves: what the gateway waits for.
        self.rollout = rollout(TF_SERVING, self.deployment, TIMEOUT_S, kubeconfig, at)
        ports = [
            core.ServicePortArgs(
                name="grpc", port=GRPC_PORT, target_port="grpc", app_protocol="grpc"
            ),
            core.ServicePortArgs(name="http", port=REST_PORT, target_port="http"),
        ]
        core.Service(
            f"{prefix}-tf-serving-svc",
            metadata=at.metadata(TF_SERVING.name, TF_SERVING),
            spec=core.ServiceSpecArgs(type="ClusterIP", selector=TF_SERVING.labels, ports=ports),
            opts=at.options(),
        )
        # Headless: DNS returns every ready pod, so the gateway's round_robin policy keeps a
        # connection to each and balances per request (a ClusterIP pins one connection).
        headless = core.Service(
            f"{prefix}-tf-serving-headless",
            metadata=at.metadata(f"{TF_SERVING.name}-headless", TF_SERVING),
            spec=core.ServiceSpecArgs(cluster_ip="None", selector=TF_SERVING.labels, ports=ports),
            opts=at.options(),
        )
        # The gateway's gRPC target: every pod, by DNS.
        self.target = pulumi.Output.concat(
            "dns:///",
            headless.metadata.name,
            ".",
            headless.metadata.namespace,
            f".svc.cluster.local:{GRPC_PORT}",
        )
        # A parked stack runs no pods, so nothing to autoscale (an HPA cannot go to zero).
        self.autoscaler: pulumi.CustomResource | None
        if args.placement.parked:
            self.autoscaler = None
        elif args.demand is not None:
            old_hpa_gone = handover(TF_SERVING, kubeconfig, at)
            self.autoscaler = scaled_object(
                TF_SERVING,
                args.replicas,
                args.demand,
                at,
                self.deployment,
                old_hpa_gone,
                *scaler_after,
            )
        else:
            self.autoscaler = autoscaler(TF_SERVING, args.replicas, at, self.deployment)
        disruption_budget(TF_SERVING, at)
        allow_ingress(
            "tf-serving-from-gateway",
            TF_SERVING.selector,
            [GRPC_PORT, REST_PORT],
            [k8s.networking.v1.NetworkPolicyPeerArgs(pod_selector=GATEWAY.selector)],
            at,
            TF_SERVING,
        )
        self.register_outputs({"target": self.target})
