"""Kubernetes objects and events as the API returns them while Karpenter places (or fails
to place) a rollout's pods: the shapes ``infra.placement_watch`` reads, copied from their
sources. Names, times, ids and the long requirement lists are ours; every field, reason
and message format is the source's.

Karpenter 1.14.1 (github.com/kubernetes-sigs/karpenter, tag v1.14.1):

- NodeClaim status: ``pkg/apis/v1/nodeclaim_status.go`` (``Launched``, ``Registered``,
  ``Initialized``; ``nodeName``, ``providerID``, ``imageID``, ``capacity``,
  ``allocatable``, ``conditions``); its conditions are operatorpkg's
  (github.com/awslabs/operatorpkg ``status/condition_set.go``: ``SetTrue`` makes the
  reason the type and the message empty, a new condition is ``Unknown`` /
  ``AwaitingReconciliation`` / "object is awaiting reconciliation", the root ``Ready``
  is ``ReconcilingDependents`` with "Type=Status, ..." while any is not True).
- A NodeClaim's labels: its NodePool's template labels plus ``karpenter.sh/nodepool``
  and the node class label (``pkg/controllers/provisioning/scheduling/
  nodeclaimtemplate.go``).
- Why a condition is not True: ``pkg/controllers/nodeclaim/lifecycle/launch.go`` (a
  CreateError's reason and message on ``Launched``), ``registration.go`` (``NodeNotFound``
  / "Node not registered with cluster"), ``initialization.go`` (``NodeNotReady``,
  ``ResourceNotRegistered`` / 'Resource "..." was requested but not registered').
- Events: ``pkg/controllers/nodeclaim/lifecycle/events.go`` (``InsufficientCapacityError``
  on the NodeClaim, "NodeClaim <name> event: <error, cut at 300 characters>"; Karpenter
  then deletes the claim, launch.go), ``pkg/controllers/provisioning/scheduling/
  events.go`` (``Nominated`` "Pod should schedule on: nodeclaim/<name>[, node/<name>]",
  ``FailedScheduling`` "Failed to schedule pod, <error>"), ``pkg/events/reason.go``,
  the recorder named ``karpenter`` (``pkg/operator/operator.go``); scheduling errors:
  ``pkg/controllers/provisioning/scheduling/scheduler.go`` ("all available instance types
  exceed limits for nodepool", wrapped by operatorpkg ``serrors`` as "... (NodePool=gpu)"),
  ``nodeclaim.go`` ("incompatible requirements, ...", "no instance type has the required
  offering, requirements=..., resources=..."), errors of several NodePools joined by "; "
  (multierr).
- The error behind a vCPU quota: aws/karpenter-provider-aws v1.14.1
  ``pkg/providers/instance/instance.go`` (``combineFleetErrors``: fleet errors that are all
  unfulfillable capacity, ``VcpuLimitExceeded`` among them per ``pkg/errors/errors.go``,
  become an insufficient capacity error "with fleet error(s), <code>: <message>"),
  ``pkg/cloudprovider/cloudprovider.go`` ("creating instance, %w"), and
  kubernetes-sigs/karpenter ``pkg/cloudprovider/types.go`` ("insufficient capacity, %s");
  EC2's own message as quoted in aws/karpenter-provider-aws#3372.

Kubernetes: Pod, ReplicaSet, Deployment and Event fields from k8s.io/api (core/v1,
apps/v1). Events from client-go's recorder (``tools/record/event.go``: Karpenter's and the
kubelet's) carry ``source.component``, ``reportingComponent``, ``firstTimestamp``,
``lastTimestamp`` and ``count``, and those on cluster-scoped objects (NodeClaims) are
recorded in namespace ``default``; the scheduler's come through events.k8s.io/v1 and read
back as core/v1 with ``eventTime``, ``reportingComponent: default-scheduler`` and no
``lastTimestamp``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

Obj = dict[str, Any]

T0 = datetime(2026, 11, 30, 9, 0, 0, tzinfo=UTC)  # when the rollout's pod was created
NAMESPACE = "clothing"
GPU_POOL_LABELS = {"clothing.example/workload": "gpu"}
TF_LABELS = {
    "app.kubernetes.io/name": "tf-serving",
    "app.kubernetes.io/part-of": "clothing-serving",
}

# EC2's CreateFleet error for an account whose G and VT vCPU quota is 0.
VCPU_LIMIT_EXCEEDED = (
    "VcpuLimitExceeded: You have requested more vCPU capacity than your current vCPU limit "
    "of 0 allows for the instance bucket that the specified instance type belongs to. "
    "Please visit http://aws.amazon.com/contact-us/ec2-request to request an adjustment "
    "to this limit."
)
GPU_REQUIREMENTS = (
    "clothing.example/workload In [gpu], karpenter.k8s.aws/ec2nodeclass In [gpu], "
    "karpenter.sh/capacity-type In [on-demand], karpenter.sh/nodepool In [gpu], "
    "kubernetes.io/arch In [amd64], kubernetes.io/os In [linux], "
    "node.kubernetes.io/instance-type In [g4dn.xlarge], "
    'resources={"cpu":"3150m","memory":"13606Mi","nvidia.com/gpu":"1","pods":"7"}'
)
CPU_POOL_REFUSES = (
    "incompatible requirements, key clothing.example/workload, "
    "clothing.example/workload In [gpu] not in clothing.example/workload In [cpu]"
)
# What Karpenter says of the pod once every offering failed for lack of capacity (it marks
# them unavailable for 3 minutes), or once the pool's limit is reached.
NO_OFFERING = (
    f"Failed to schedule pod, {CPU_POOL_REFUSES}; no instance type has the required "
    f"offering, requirements={GPU_REQUIREMENTS}"
)
POOL_LIMIT = (
    f"Failed to schedule pod, {CPU_POOL_REFUSES}; all available instance types exceed "
    "limits for nodepool (NodePool=gpu)"
)
SCHEDULER_NO_NODE = (
    "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. "
    "preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
)


def at(minutes: float) -> str:
    """A timestamp ``minutes`` after T0, as the API writes it."""
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def truncated(message: str) -> str:
    """Karpenter's truncateMessage (pkg/controllers/nodeclaim/lifecycle/launch.go)."""
    return message if len(message) < 300 else message[:300] + "..."


def deployment(
    *,
    generation: int = 2,
    observed: int = 2,
    replicas: int = 1,
    updated: int = 1,
    total: int = 2,
    ready: int = 1,
    available: int = 1,
    revision: str = "2",
    conditions: list[Obj] | None = None,
) -> Obj:
    """TF Serving's Deployment during a rolling update (surge 1): an old pod serves, a new
    one is on its way."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "tf-serving",
            "namespace": NAMESPACE,
            "uid": "5f0c1c6e-deploy",
            "generation": generation,
            "labels": TF_LABELS,
            "annotations": {"deployment.kubernetes.io/revision": revision},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": TF_LABELS},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "progressDeadlineSeconds": 600,
        },
        "status": {
            "observedGeneration": observed,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": max(total - available, 0),
            "conditions": conditions
            if conditions is not None
            else [
                {
                    "type": "Available",
                    "status": "True",
                    "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                    "lastUpdateTime": at(-30),
                    "lastTransitionTime": at(-30),
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "ReplicaSetUpdated",
                    "message": 'ReplicaSet "tf-serving-6d9f7c8b5" is progressing.',
                    "lastUpdateTime": at(0),
                    "lastTransitionTime": at(-30),
                },
            ],
        },
    }


def replica_set(owner: Obj, revision: str, template_hash: str) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"tf-serving-{template_hash}",
            "namespace": NAMESPACE,
            "uid": f"rs-{template_hash}",
            "labels": {**TF_LABELS, "pod-template-hash": template_hash},
            "annotations": {
                "deployment.kubernetes.io/desired-replicas": "1",
                "deployment.kubernetes.io/max-replicas": "2",
                "deployment.kubernetes.io/revision": revision,
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"replicas": 1},
        "status": {"replicas": 1, "observedGeneration": 1},
    }


def pod(
    name: str,
    owner: Obj,
    *,
    created: float = 0,
    node: str | None = None,
    ready: bool = False,
    containers: list[Obj] | None = None,
) -> Obj:
    """A TF Serving pod: Pending without a node (PodScheduled False, as the scheduler
    leaves it), or on a node with its containers' states."""
    scheduled: Obj = (
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": at(created)}
        if node
        else {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": SCHEDULER_NO_NODE,
            "lastProbeTime": None,
            "lastTransitionTime": at(created),
        }
    )
    conditions = [scheduled]
    if node:
        flag = "True" if ready else "False"
        conditions += [
            {"type": "Initialized", "status": "True", "lastTransitionTime": at(created)},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": at(created)},
            {"type": "Ready", "status": flag, "lastTransitionTime": at(created)},
        ]
    spec: Obj = {
        "nodeSelector": GPU_POOL_LABELS,
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "containers": [
            {
                "name": "tf-serving",
                "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/clothing-dev-model@sha256:9f",
            }
        ],
        "schedulerName": "default-scheduler",
    }
    if node:
        spec["nodeName"] = node
    status: Obj = {
        "phase": "Running" if ready else "Pending",
        "conditions": conditions,
        "qosClass": "Guaranteed",
    }
    if containers is not None:
        status["containerStatuses"] = containers
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"uid-{name}",
            "creationTimestamp": at(created),
            "labels": {
                **TF_LABELS,
                "pod-template-hash": owner["metadata"]["labels"]["pod-template-hash"],
            },
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
        "status": status,
    }


def pulling() -> list[Obj]:
    """A container whose image is still being pulled (the kubelet reports it as
    ContainerCreating until the pull ends)."""
    return [
        {
            "name": "tf-serving",
            "state": {"waiting": {"reason": "ContainerCreating"}},
            "ready": False,
            "restartCount": 0,
            "started": False,
            "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/clothing-dev-model@sha256:9f",
            "imageID": "",
        }
    ]


def loading_the_model(started: float) -> list[Obj]:
    """A running container whose startup probe has not passed: the model loads and warms."""
    return [
        {
            "name": "tf-serving",
            "state": {"running": {"startedAt": at(started)}},
            "ready": False,
            "restartCount": 0,
            "started": False,
            "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/clothing-dev-model@sha256:9f",
            "imageID": "123456789012.dkr.ecr.us-east-1.amazonaws.com/clothing-dev-model@sha256:9f",
            "containerID": "containerd://4b1f",
        }
    ]


def _condition(kind: str, status: str, reason: str, message: str, since: float) -> Obj:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": 1,
        "lastTransitionTime": at(since),
    }


AWAITING = ("Unknown", "AwaitingReconciliation", "object is awaiting reconciliation")
TRUE = ("True", "", "")


def node_claim(
    name: str,
    *,
    created: float,
    launched: tuple[str, str, str] = AWAITING,
    registered: tuple[str, str, str] = AWAITING,
    initialized: tuple[str, str, str] = AWAITING,
    node: str | None = None,
) -> Obj:
    """A NodeClaim of the ``gpu`` NodePool. Each condition is (status, reason, message);
    a True one's reason is its type (operatorpkg's SetTrue)."""
    states = {"Launched": launched, "Registered": registered, "Initialized": initialized}
    conditions = [
        _condition(kind, status, reason or kind, message, created)
        for kind, (status, reason, message) in states.items()
    ]
    unhealthy = [f"{kind}={status}" for kind, (status, _, _) in states.items() if status != "True"]
    conditions.append(
        _condition("Ready", "True", "Ready", "", created)
        if not unhealthy
        else _condition("Ready", "Unknown", "ReconcilingDependents", ", ".join(unhealthy), created)
    )
    status: Obj = {"conditions": conditions}
    if launched[0] == "True":
        status |= {
            "providerID": "aws:///us-east-1a/i-0a1b2c3d4e5f67890",
            "imageID": "ami-0123456789abcdef0",
            "capacity": {"cpu": "4", "memory": "15155Mi", "nvidia.com/gpu": "1", "pods": "29"},
            "allocatable": {
                "cpu": "3920m",
                "memory": "14162Mi",
                "nvidia.com/gpu": "1",
                "pods": "29",
            },
        }
    if node:
        status["nodeName"] = node
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodeClaim",
        "metadata": {
            "name": name,
            "generateName": "gpu-",
            "uid": f"uid-{name}",
            "generation": 1,
            "creationTimestamp": at(created),
            "labels": {
                **GPU_POOL_LABELS,
                "karpenter.sh/nodepool": "gpu",
                "karpenter.k8s.aws/ec2nodeclass": "gpu",
                "karpenter.sh/capacity-type": "on-demand",
                "node.kubernetes.io/instance-type": "g4dn.xlarge",
            },
            "annotations": {
                "karpenter.sh/nodepool-hash": "6821555240594823858",
                "karpenter.sh/nodepool-hash-version": "v3",
            },
            "finalizers": ["karpenter.sh/termination"],
            "ownerReferences": [
                {
                    "apiVersion": "karpenter.sh/v1",
                    "kind": "NodePool",
                    "name": "gpu",
                    "uid": "uid-nodepool-gpu",
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "gpu"},
            "requirements": [
                {
                    "key": "node.kubernetes.io/instance-type",
                    "operator": "In",
                    "values": ["g4dn.xlarge"],
                },
                {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["gpu"]},
            ],
            "resources": {
                "requests": {
                    "cpu": "3150m",
                    "memory": "13606Mi",
                    "nvidia.com/gpu": "1",
                    "pods": "7",
                }
            },
            "taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}],
            "expireAfter": "720h",
        },
        "status": status,
    }


def _event(
    involved: Obj,
    reason: str,
    message: str,
    when: float,
    *,
    kind: str,
    namespace: str,
    component: str,
    type_: str = "Warning",
    count: int = 1,
) -> Obj:
    """A core/v1 Event from client-go's recorder."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{involved['metadata']['name']}.18{int(when * 60):010x}",
            "namespace": namespace,
            "creationTimestamp": at(when),
        },
        "involvedObject": {
            "kind": kind,
            "namespace": involved["metadata"].get("namespace"),
            "name": involved["metadata"]["name"],
            "uid": involved["metadata"]["uid"],
            "apiVersion": involved["apiVersion"],
        },
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "firstTimestamp": at(when),
        "lastTimestamp": at(when),
        "count": count,
        "type": type_,
        "eventTime": None,
        "reportingComponent": component,
        "reportingInstance": "",
    }


def nominated(on: Obj, claim: str, when: float, node: str | None = None) -> Obj:
    where = f"nodeclaim/{claim}" + (f", node/{node}" if node else "")
    return _event(
        on, "Nominated", f"Pod should schedule on: {where}", when,
        kind="Pod", namespace=NAMESPACE, component="karpenter", type_="Normal",
    )  # fmt: skip


def karpenter_failed_scheduling(on: Obj, message: str, when: float) -> Obj:
    return _event(
        on,
        "FailedScheduling",
        message,
        when,
        kind="Pod",
        namespace=NAMESPACE,
        component="karpenter",
    )


def insufficient_capacity(claim: Obj, fleet_error: str, when: float) -> Obj:
    """The event Karpenter leaves on a NodeClaim whose launch found no capacity, just before
    deleting it."""
    error = f"creating instance, insufficient capacity, with fleet error(s), {fleet_error}"
    message = f"NodeClaim {claim['metadata']['name']} event: {truncated(error)}"
    return _event(
        claim, "InsufficientCapacityError", message, when,
        kind="NodeClaim", namespace="default", component="karpenter",
    )  # fmt: skip


def kubelet(on: Obj, reason: str, message: str, when: float, type_: str = "Normal") -> Obj:
    return _event(
        on, reason, message, when, kind="Pod", namespace=NAMESPACE, component="kubelet", type_=type_
    )


def scheduler_failed(on: Obj, when: float) -> Obj:
    """kube-scheduler's FailedScheduling (events.k8s.io/v1, read back as core/v1)."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{on['metadata']['name']}.18{int(when * 60):010x}",
            "namespace": NAMESPACE,
            "creationTimestamp": at(when),
        },
        "involvedObject": {
            "kind": "Pod",
            "namespace": NAMESPACE,
            "name": on["metadata"]["name"],
            "uid": on["metadata"]["uid"],
            "apiVersion": "v1",
        },
        "reason": "FailedScheduling",
        "message": SCHEDULER_NO_NODE,
        "source": {},
        "firstTimestamp": None,
        "lastTimestamp": None,
        "type": "Warning",
        "eventTime": (T0 + timedelta(minutes=when)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "action": "Scheduling",
        "reportingComponent": "default-scheduler",
        "reportingInstance": "default-scheduler-ip-10-0-1-12.ec2.internal",
    }
