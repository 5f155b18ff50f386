"""infra.placement_watch on the shapes Karpenter 1.14 and Kubernetes write
(tests/infra/karpenter_shapes.py): a pod that cannot get a node fails the rollout within
minutes with Karpenter's reason; a pod that has one keeps the rollout waiting, whatever
its image pull and model load take, up to the rollout's own limit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from infra.placement_watch import (
    NO_EVIDENCE,
    Limits,
    Outcome,
    Snapshot,
    Verdict,
    assess,
    rollout_pending,
)
from tests.infra import karpenter_shapes as k

LIMITS = Limits(rollout_s=45 * 60)
DEPLOYMENT = k.deployment()
OLD_RS = k.replica_set(DEPLOYMENT, "1", "5c7b9d6f4")
NEW_RS = k.replica_set(DEPLOYMENT, "2", "6d9f7c8b5")
SERVING = k.pod("tf-serving-5c7b9d6f4-m2v7s", OLD_RS, created=-40, node="ip-10-0-2-41", ready=True)
NEW = "tf-serving-6d9f7c8b5-x2k4q"
UNPLACED = k.pod(NEW, NEW_RS)
# The rollout's wait starts a few seconds after the Deployment is applied.
STARTED = 0.1


def judge(
    minute: float,
    pods: Sequence[dict[str, Any]] = (UNPLACED,),
    events: Sequence[dict[str, Any]] = (),
    claims: Sequence[dict[str, Any]] = (),
    deployment: dict[str, Any] = DEPLOYMENT,
) -> Verdict:
    snapshot = Snapshot(
        deployment=deployment,
        replica_sets=[OLD_RS, NEW_RS],
        pods=[SERVING, *pods],
        events=list(events),
        node_claims=list(claims),
    )
    now = k.T0 + timedelta(minutes=minute)
    return assess(snapshot, 2, now, (minute - STARTED) * 60, LIMITS)


def vcpu_quota_history(minute: float) -> list[dict[str, Any]]:
    """What a vCPU quota of 0 leaves by ``minute``: Karpenter names a NodeClaim for the pod,
    its launch fails for lack of capacity and the claim is deleted, Karpenter then finds
    no offering for the pod until the failed ones are tried again 3 minutes later."""
    history = [
        (0.1, k.scheduler_failed(UNPLACED, 0.1)),
        (0.2, k.nominated(UNPLACED, "gpu-7xk2p", 0.2)),
        (0.5, k.insufficient_capacity(k.node_claim("gpu-7xk2p", created=0.2), k.VCPU_LIMIT_EXCEEDED, 0.5)),
        (0.7, k.karpenter_failed_scheduling(UNPLACED, k.NO_OFFERING, 0.7)),
        (3.7, k.nominated(UNPLACED, "gpu-q8w3n", 3.7)),
        (4.0, k.insufficient_capacity(k.node_claim("gpu-q8w3n", created=3.7), k.VCPU_LIMIT_EXCEEDED, 4.0)),
    ]  # fmt: skip
    return [event for when, event in history if when <= minute]


def test_a_vcpu_quota_fails_the_rollout_within_ten_minutes_with_karpenters_reason() -> None:
    minutes = [m / 4 for m in range(4 * 10 + 1)]  # every 15 s, the poll interval
    verdicts = {m: judge(m, events=vcpu_quota_history(m)) for m in minutes}
    failed_at = min(m for m, v in verdicts.items() if v.outcome is Outcome.FAILED)
    # Not before two rounds of Karpenter's retries, and well within 10 minutes.
    assert 6 <= failed_at <= 7
    assert all(verdicts[m].outcome is Outcome.WAITING for m in minutes if m < failed_at)
    message = verdicts[failed_at].message
    assert message.startswith(f"tf-serving: pod {NEW} has had no node for 6m00s")
    # The most specific reason first: the failed launch, with EC2's words.
    first = message.split(": ", 2)[2]
    assert first.startswith(
        "NodeClaim gpu-q8w3n event: creating instance, insufficient capacity, with fleet "
        "error(s), VcpuLimitExceeded: You have requested more vCPU capacity than your current "
        "vCPU limit of 0 allows"
    )
    assert "NodeClaim gpu-7xk2p event:" in message
    assert "Karpenter: Failed to schedule pod, incompatible requirements" in message
    assert "no instance type has the required offering" in message
    assert "scheduler: 0/2 nodes are available" in message
    # While it waits, the first reason is already shown.
    assert "VcpuLimitExceeded" in verdicts[5].message


def test_a_full_pool_fails_with_the_limit_karpenter_names() -> None:
    events = [
        k.scheduler_failed(UNPLACED, 0.1),
        k.karpenter_failed_scheduling(UNPLACED, k.POOL_LIMIT, 0.2),
    ]
    verdict = judge(6.5, events=events)
    assert verdict.outcome is Outcome.FAILED
    assert (
        "all available instance types exceed limits for nodepool (NodePool=gpu)" in verdict.message
    )


def test_a_pod_nothing_reports_on_fails_saying_so() -> None:
    verdict = judge(7)
    assert verdict.outcome is Outcome.FAILED
    assert NO_EVIDENCE in verdict.message


def test_a_slow_image_pull_is_not_a_failure() -> None:
    """The pod has its node: 30 minutes into pulling a multi-GB image, the rollout waits."""
    claim = k.node_claim(
        "gpu-7xk2p",
        created=0.2,
        launched=k.TRUE,
        registered=k.TRUE,
        initialized=k.TRUE,
        node="ip-10-0-3-17",
    )
    on_node = k.pod(NEW, NEW_RS, node="ip-10-0-3-17", containers=k.pulling())
    events = [
        k.scheduler_failed(UNPLACED, 0.1),
        k.nominated(UNPLACED, "gpu-7xk2p", 0.2),
        k.kubelet(on_node, "Pulling", 'Pulling image "123456789012.dkr.ecr.us-east-1.amazonaws.com/clothing-dev-model@sha256:9f"', 4.5),
    ]  # fmt: skip
    verdict = judge(30, pods=[on_node], events=events, claims=[claim])
    assert verdict.outcome is Outcome.WAITING
    assert f"pod {NEW} is on node ip-10-0-3-17: tf-serving: ContainerCreating" in verdict.message
    assert "last event Pulling: Pulling image" in verdict.message


def test_a_pod_loading_its_model_waits_up_to_the_rollout_timeout() -> None:
    loading = k.pod(NEW, NEW_RS, node="ip-10-0-3-17", containers=k.loading_the_model(started=12))
    waiting = judge(STARTED + 44.9, pods=[loading])
    assert waiting.outcome is Outcome.WAITING
    assert "tf-serving: running, starting" in waiting.message
    timed_out = judge(STARTED + 45, pods=[loading])
    assert timed_out.outcome is Outcome.FAILED
    assert timed_out.message.startswith(
        "tf-serving: not rolled out after 45m00s: 1 old pods still to be replaced"
    )
    assert "running, starting" in timed_out.message


def test_a_launched_node_that_registers_is_waited_for_and_the_rollout_completes() -> None:
    events = [k.scheduler_failed(UNPLACED, 0.1), k.nominated(UNPLACED, "gpu-7xk2p", 0.2)]
    not_registered = ("Unknown", "NodeNotFound", "Node not registered with cluster")
    booting = k.node_claim("gpu-7xk2p", created=0.2, launched=k.TRUE, registered=not_registered)
    # Past the pod's 6 minutes without a node: its node is still on its way.
    joining = judge(7, events=events, claims=[booting])
    assert joining.outcome is Outcome.WAITING
    assert "waits for the node of NodeClaim gpu-7xk2p, launched 6m48s ago" in joining.message
    assert "Registered=Unknown NodeNotFound" in joining.message
    not_ready = ("Unknown", "NodeNotReady", "Node status is NotReady")
    registered = k.node_claim(
        "gpu-7xk2p",
        created=0.2,
        launched=k.TRUE,
        registered=k.TRUE,
        initialized=not_ready,
        node="ip-10-0-3-17",
    )
    assert judge(8, events=events, claims=[registered]).outcome is Outcome.WAITING
    ready_node = k.node_claim(
        "gpu-7xk2p",
        created=0.2,
        launched=k.TRUE,
        registered=k.TRUE,
        initialized=k.TRUE,
        node="ip-10-0-3-17",
    )
    on_node = k.pod(NEW, NEW_RS, node="ip-10-0-3-17", containers=k.pulling())
    assert judge(9, pods=[on_node], events=events, claims=[ready_node]).outcome is Outcome.WAITING
    done = k.deployment(total=1, ready=1, available=1)
    ready = k.pod(NEW, NEW_RS, node="ip-10-0-3-17", ready=True)
    verdict = judge(21, pods=[ready], events=events, claims=[ready_node], deployment=done)
    assert verdict == Verdict(Outcome.READY, "tf-serving: rolled out, 1 pods ready")


@pytest.mark.parametrize(
    ("registered", "initialized", "reason"),
    [
        (
            ("Unknown", "NodeNotFound", "Node not registered with cluster"),
            k.AWAITING,
            "NodeClaim gpu-7xk2p Registered=Unknown NodeNotFound: Node not registered with cluster",
        ),
        (
            k.TRUE,
            ("Unknown", "ResourceNotRegistered", 'Resource "nvidia.com/gpu" was requested but not registered'),
            'NodeClaim gpu-7xk2p Initialized=Unknown ResourceNotRegistered: Resource "nvidia.com/gpu" was requested but not registered',
        ),
    ],
    ids=["never-joins", "no-gpu-advertised"],
)  # fmt: skip
def test_a_node_that_never_becomes_usable_fails_after_karpenters_registration_timeout(
    registered: tuple[str, str, str], initialized: tuple[str, str, str], reason: str
) -> None:
    events = [k.nominated(UNPLACED, "gpu-7xk2p", 0.2)]
    claim = k.node_claim(
        "gpu-7xk2p", created=0.2, launched=k.TRUE, registered=registered, initialized=initialized
    )
    assert judge(15, events=events, claims=[claim]).outcome is Outcome.WAITING
    verdict = judge(15.25, events=events, claims=[claim])
    assert verdict.outcome is Outcome.FAILED
    assert reason in verdict.message


def test_a_launch_error_on_the_claim_is_the_reason() -> None:
    """A launch that fails for another reason than capacity stays on the claim's Launched
    condition (Karpenter retries it, then deletes the claim after 5 minutes)."""
    refused = (
        "Unknown",
        "Unauthorized",
        "User is not authorized to perform this operation because no identity-based policy allows it",
    )
    claim = k.node_claim("gpu-7xk2p", created=0.2, launched=refused)
    verdict = judge(6, events=[k.nominated(UNPLACED, "gpu-7xk2p", 0.2)], claims=[claim])
    assert verdict.outcome is Outcome.FAILED
    assert (
        "NodeClaim gpu-7xk2p Launched=Unknown Unauthorized: User is not authorized"
        in verdict.message
    )


def test_only_the_new_pods_and_their_own_events_count() -> None:
    """An old pod left Pending, and another pod's events, say nothing of this rollout."""
    stuck_old = k.pod("tf-serving-5c7b9d6f4-zz9q2", OLD_RS, created=-50)
    other = k.pod("tf-serving-6d9f7c8b5-other", OLD_RS, created=-50)
    events = [
        k.karpenter_failed_scheduling(other, k.POOL_LIMIT, 1),
        k.insufficient_capacity(k.node_claim("gpu-other", created=1), k.VCPU_LIMIT_EXCEEDED, 1),
    ]
    verdict = judge(3, pods=[UNPLACED, stuck_old], events=events)
    assert verdict.outcome is Outcome.WAITING
    assert (
        verdict.message
        == f"tf-serving: 1 old pods still to be replaced; pod {NEW} has waited 3m00s for a node"
    )


def test_pods_the_replica_set_cannot_create_fail_after_the_same_wait() -> None:
    failure = {
        "type": "ReplicaFailure",
        "status": "True",
        "reason": "FailedCreate",
        "message": 'pods "tf-serving-6d9f7c8b5-x2k4q" is forbidden: violates PodSecurity "restricted:latest": runAsNonRoot != true',
        "lastUpdateTime": k.at(0),
        "lastTransitionTime": k.at(0),
    }  # fmt: skip
    stuck = k.deployment(updated=0, total=1, conditions=[failure])
    assert judge(5, pods=[], deployment=stuck).outcome is Outcome.WAITING
    verdict = judge(6, pods=[], deployment=stuck)
    assert verdict.outcome is Outcome.FAILED
    assert "pods cannot be created: FailedCreate: pods" in verdict.message
    assert "violates PodSecurity" in verdict.message


@pytest.mark.parametrize(
    ("status", "pending"),
    [
        ({"observed": 1}, "the Deployment controller has not yet acted on generation 2"),
        ({"updated": 0, "total": 1, "available": 1}, "0 of 1 pods are of the new version"),
        ({"total": 2, "available": 1}, "1 old pods still to be replaced"),
        ({"total": 1, "available": 0, "ready": 0}, "0 of 1 new pods are ready"),
        ({"total": 1}, None),
        ({"replicas": 0, "updated": 0, "total": 0, "available": 0, "ready": 0}, None),
    ],
    ids=["unobserved", "not-created", "old-terminating", "not-ready", "done", "parked"],
)  # fmt: skip
def test_rollout_progress_is_judged_as_kubectl_rollout_status_does(
    status: dict[str, Any], pending: str | None
) -> None:
    assert rollout_pending(k.deployment(**status), 2) == pending
