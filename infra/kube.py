"""Kubernetes building blocks every workload shares, on any cluster: labels, where pods may
run (node selectors, taints and the tolerations they need), hardened pod and container
security contexts, and the objects around a Deployment (the wait for its rollout, its
autoscaler, its disruption budget, a NetworkPolicy that lets traffic in).

Nothing here knows AWS: the serving components (``infra.serving``, ``infra.gateway``,
``infra.tf_serving``) are built from these and a Kubernetes provider, whatever the cluster.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s
from pulumi_command import local

from infra.capacity import Resources, parse_cpu, parse_memory
from infra.project import PROJECT, REPO_ROOT

meta = k8s.meta.v1
core = k8s.core.v1
hpa = k8s.autoscaling.v2
net = k8s.networking.v1

APP_LABEL = "app.kubernetes.io/name"
APP_UID = 10001
TMP = "/tmp"  # noqa: S108  (an emptyDir per pod: the root filesystem is read-only)
ZONE = "topology.kubernetes.io/zone"
# The extended resource NVIDIA's device plugin advertises: one per GPU.
GPU_RESOURCE = "nvidia.com/gpu"
# Server-side apply refuses to set a field another manager owns. The autoscaler owns
# `spec.replicas` once it has scaled, so parking (`replicas: 0`) must take it over; no other
# field of these Deployments has another owner.
FORCE_ANNOTATION = "pulumi.com/patchForce"
# pulumi-kubernetes' own wait for a rollout ends only when it succeeds or times out, and the
# engine waits for it even after another step failed: the Deployments skip it, and
# ``rollout`` waits instead, failing within minutes when a pod cannot get a node
# (infra/rollout_wait.py says why).
SKIP_AWAIT_ANNOTATION = "pulumi.com/skipAwait"


@dataclass(frozen=True)
class App:
    name: str

    @property
    def labels(self) -> dict[str, str]:
        return {APP_LABEL: self.name, "app.kubernetes.io/part-of": PROJECT}

    @property
    def selector(self) -> meta.LabelSelectorArgs:
        return meta.LabelSelectorArgs(match_labels=self.labels)


TF_SERVING = App("tf-serving")
GATEWAY = App("gateway")


@dataclass(frozen=True)
class Taint:
    """A node taint, and the toleration a pod needs to run there despite it."""

    key: str
    value: str
    effect: str = "NoSchedule"

    def spec(self) -> dict[str, str]:
        """As a Node (or a Karpenter NodePool's template) carries it."""
        return {"key": self.key, "value": self.value, "effect": self.effect}

    def toleration(self) -> dict[str, str]:
        """The toleration of this taint, whatever its value (Helm values take this form)."""
        return {"key": self.key, "operator": "Exists", "effect": self.effect}


# GPU nodes are tainted with the GPU's resource name, the convention of EKS's GPU AMIs and of
# NVIDIA's charts: only pods that tolerate it (those that use a GPU) land there.
GPU_TAINT = Taint(GPU_RESOURCE, "true")


@dataclass(frozen=True)
class Nodes:
    """Which nodes a pod may run on: the labels it selects (none: any node), the taint the
    stack gives those nodes (None: none), and the tolerations of a cluster's own taints
    (``Toleration`` fields as Kubernetes writes them)."""

    labels: dict[str, str]
    taint: Taint | None = None
    tolerate: tuple[dict[str, str], ...] = ()

    @property
    def selector(self) -> dict[str, str] | None:
        return self.labels or None

    def tolerations(self) -> list[core.TolerationArgs] | None:
        found = ([self.taint.toleration()] if self.taint else []) + list(self.tolerate)
        return [
            core.TolerationArgs(
                key=t["key"],
                operator=t.get("operator"),
                value=t.get("value"),
                effect=t.get("effect"),
            )
            for t in found
        ] or None


@dataclass(frozen=True)
class Placement:
    """Where a workload's pods run and how they spread."""

    nodes: Nodes
    high_availability: bool = False  # never two pods in a zone while another has none
    parked: bool = False  # no pods at all


@dataclass(frozen=True)
class PodSize:
    """A container's CPU and memory, as Kubernetes quantities; requests equal limits."""

    cpu: str
    memory: str

    @property
    def requests(self) -> Resources:
        return Resources(parse_cpu(self.cpu), parse_memory(self.memory))

    def __str__(self) -> str:
        return f"{self.cpu} CPU, {self.memory}"

    def resources(self, gpus: int = 0) -> core.ResourceRequirementsArgs:
        requests = {"cpu": self.cpu, "memory": self.memory}
        limits = dict(requests)
        if gpus:
            limits[GPU_RESOURCE] = str(gpus)
        return core.ResourceRequirementsArgs(requests=requests, limits=limits)


@dataclass(frozen=True)
class Replicas:
    """How many pods, between what the autoscaler may choose, and how rollouts add them."""

    minimum: int
    maximum: int
    # what the CPU autoscaler holds the pods' CPU at, as a share of their request
    target_cpu_percent: int = 70
    # a rolling update starts this many new pods before it removes an old one (and never
    # takes one away first): capacity planning keeps room for them
    surge: int = 1


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
    """Highly available: never two pods in one zone while another has none (the cluster's
    autoscaler then adds nodes in the other zones); otherwise a preference."""
    return [
        core.TopologySpreadConstraintArgs(
            max_skew=1,
            topology_key=ZONE,
            when_unsatisfiable="DoNotSchedule" if placement.high_availability else "ScheduleAnyway",
            label_selector=app.selector,
        )
    ]


def tmp_volume() -> tuple[core.VolumeArgs, core.VolumeMountArgs]:
    return (
        core.VolumeArgs(name="tmp", empty_dir=core.EmptyDirVolumeSourceArgs(size_limit="256Mi")),
        core.VolumeMountArgs(name="tmp", mount_path=TMP),
    )


@dataclass(frozen=True)
class Component:
    """What every object of a workload is created with: its namespace and resource
    options (parent, provider, dependencies)."""

    namespace: pulumi.Input[str]
    opts: pulumi.ResourceOptions
    # a workload's objects once lived directly under the Serving component: the aliases
    # that keep their URNs, so a refactor replaces nothing live
    aliases: Sequence[pulumi.Alias] = field(default_factory=list)

    def options(self, *depends_on: pulumi.Resource) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions.merge(
            self.opts,
            pulumi.ResourceOptions(depends_on=list(depends_on), aliases=list(self.aliases)),
        )

    def metadata(
        self, name: str, app: App | None = None, annotations: dict[str, str] | None = None
    ) -> meta.ObjectMetaArgs:
        return meta.ObjectMetaArgs(
            name=name,
            namespace=self.namespace,
            labels=app.labels if app else None,
            annotations=annotations,
        )


def service_account(app: App, at: Component) -> core.ServiceAccount:
    """The workload's own identity, with no API token: neither workload talks to the
    Kubernetes API."""
    return core.ServiceAccount(
        f"{app.name}-sa",
        metadata=at.metadata(app.name, app),
        automount_service_account_token=False,
        opts=at.options(),
    )


def deployment(
    app: App,
    pod: core.PodSpecArgs,
    placement: Placement,
    replicas: Replicas,
    at: Component,
    *depends_on: pulumi.Resource,
) -> k8s.apps.v1.Deployment:
    """Replicas belong to the autoscaler, so the Deployment never declares them (with
    server-side apply, a declared count would be re-applied over the autoscaler's on every
    ``pulumi up``); only a parked stack declares zero, taking the field over from the
    autoscaler that owned it. Rolling updates start new pods first (``replicas.surge``) and
    never take one away before its replacement is ready. ``pulumi up`` does not wait for the
    rollout here: ``rollout`` does."""
    return k8s.apps.v1.Deployment(
        f"{app.name}-deployment",
        metadata=at.metadata(
            app.name, app, {SKIP_AWAIT_ANNOTATION: "true", FORCE_ANNOTATION: "true"}
        ),
        spec=k8s.apps.v1.DeploymentSpecArgs(
            replicas=0 if placement.parked else None,
            selector=app.selector,
            strategy=k8s.apps.v1.DeploymentStrategyArgs(
                type="RollingUpdate",
                rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(
                    max_surge=replicas.surge, max_unavailable=0
                ),
            ),
            template=core.PodTemplateSpecArgs(
                metadata=meta.ObjectMetaArgs(labels=app.labels), spec=pod
            ),
        ),
        opts=at.options(*depends_on),
    )


def cluster_command(
    name: str,
    module: str,
    arguments: pulumi.Input[Sequence[str]],
    kubeconfig: pulumi.Input[str],
    at: Component,
    triggers: Sequence[pulumi.Input[str]] | None = None,
) -> local.Command:
    """``python -m <module> <arguments>`` run by ``pulumi up`` from the repository root, the
    cluster's kubeconfig on its standard input; once, and again when ``triggers`` change."""
    command = pulumi.Output.from_input(arguments).apply(
        lambda args: shlex.join(["uv", "run", "--no-sync", "python", "-m", module, *args])
    )
    return local.Command(
        name,
        create=command,
        stdin=pulumi.Output.secret(kubeconfig),
        # the repository root, relative to where Pulumi runs the program and its providers
        # (infra/, as images.py's build contexts): the same in every checkout
        dir=os.path.relpath(REPO_ROOT),
        triggers=list(triggers) if triggers is not None else None,
        # a command, not a Kubernetes object: the workload's parent, not its provider
        opts=pulumi.ResourceOptions(parent=at.opts.parent),
    )


def rollout(
    app: App,
    deployment: k8s.apps.v1.Deployment,
    timeout_s: int,
    kubeconfig: pulumi.Input[str],
    at: Component,
) -> local.Command:
    """Wait for the Deployment's rollout (``python -m infra.rollout_wait``): ``pulumi up``
    fails within minutes, with Karpenter's reason, when a pod cannot get a node, and waits up
    to ``timeout_s`` for pods that have one. It runs when the Deployment changes (a new
    generation, or a new Deployment: its uid), not on an ``up`` that leaves it as it was."""
    arguments = deployment.metadata.apply(
        lambda meta: [
            f"{meta.namespace}/{meta.name}",
            *("--generation", str(meta.generation), "--timeout", str(timeout_s)),
        ]
    )
    return cluster_command(
        f"{app.name}-rollout",
        "infra.rollout_wait",
        arguments,
        kubeconfig,
        at,
        triggers=[deployment.metadata.uid],
    )


def autoscaler(
    app: App, replicas: Replicas, at: Component, *depends_on: pulumi.Resource
) -> hpa.HorizontalPodAutoscaler:
    """Scale between the minimum and maximum on the pods' CPU; scale down slowly."""
    return hpa.HorizontalPodAutoscaler(
        f"{app.name}-hpa",
        metadata=at.metadata(app.name, app),
        spec=hpa.HorizontalPodAutoscalerSpecArgs(
            scale_target_ref=hpa.CrossVersionObjectReferenceArgs(
                api_version="apps/v1", kind="Deployment", name=app.name
            ),
            min_replicas=replicas.minimum,
            max_replicas=replicas.maximum,
            metrics=[
                hpa.MetricSpecArgs(
                    type="Resource",
                    resource=hpa.ResourceMetricSourceArgs(
                        name="cpu",
                        target=hpa.MetricTargetArgs(
                            type="Utilization",
                            average_utilization=replicas.target_cpu_percent,
                        ),
                    ),
                )
            ],
            behavior=hpa.HorizontalPodAutoscalerBehaviorArgs(
                scale_down=hpa.HPAScalingRulesArgs(stabilization_window_seconds=300)
            ),
        ),
        opts=at.options(*depends_on),
    )


def disruption_budget(app: App, at: Component) -> k8s.policy.v1.PodDisruptionBudget:
    """One pod at a time may be evicted (node drains, consolidation): with two or more
    replicas the last ready one is never evicted, since an eviction is refused while
    another pod is already unavailable."""
    return k8s.policy.v1.PodDisruptionBudget(
        f"{app.name}-pdb",
        metadata=at.metadata(app.name, app),
        spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(max_unavailable=1, selector=app.selector),
        opts=at.options(),
    )


def allow_ingress(
    name: str,
    pods: meta.LabelSelectorArgs,
    ports: Sequence[int],
    peers: list[net.NetworkPolicyPeerArgs] | None,
    at: Component,
    app: App | None = None,
) -> net.NetworkPolicy:
    """Let traffic reach ``pods`` on ``ports``: from ``peers``, or from anywhere."""
    return net.NetworkPolicy(
        name,
        metadata=at.metadata(name, app),
        spec=net.NetworkPolicySpecArgs(
            pod_selector=pods,
            policy_types=["Ingress"],
            ingress=[
                net.NetworkPolicyIngressRuleArgs(
                    from_=peers,
                    ports=[net.NetworkPolicyPortArgs(port=p, protocol="TCP") for p in ports],
                )
            ],
        ),
        opts=at.options(),
    )


def from_namespace(namespace: str) -> net.NetworkPolicyPeerArgs:
    return net.NetworkPolicyPeerArgs(
        namespace_selector=meta.LabelSelectorArgs(
            match_labels={"kubernetes.io/metadata.name": namespace}
        )
    )
