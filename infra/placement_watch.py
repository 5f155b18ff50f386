"""Is a Deployment's rollout done, still on its way, or stuck because a pod cannot get a
node? Judged from what the Kubernetes API returns, as plain dicts: the Deployment, its
ReplicaSets and pods, the events on them, and Karpenter's NodeClaims and their events.

Why: when Karpenter cannot launch a node (a vCPU quota of the account, no capacity for
the allowed instance types in any allowed zone, a pod no NodePool can take), the pod stays
Pending and Karpenter keeps retrying: it reports each failed launch as an event on the
NodeClaim (``InsufficientCapacityError``, which covers ``VcpuLimitExceeded``) and deletes
the claim, and reports a pod it finds no node for as ``FailedScheduling`` on the pod. A
rollout wait that only counts ready pods sits out its whole timeout (45 minutes for TF
Serving) while the cluster bills, then fails with "timed out". This module tells the two
apart, so that ``pulumi up`` fails within minutes and says Karpenter's reason
(docs/operations.md, "Deploying: how long, and when it fails"):

- A new pod that has a node (``spec.nodeName``) is progressing, whatever its image pull,
  model load and warmup take: only the rollout's own limit (``Limits.rollout_s``) ends
  that wait.
- A new pod without a node is waiting for one while a NodeClaim that could take it has
  launched an instance that is still joining (less than ``Limits.node_start_s`` old,
  Karpenter's own registration timeout), or while the pod is younger than
  ``Limits.unplaced_s``. Past that it cannot be placed: the verdict is a failure carrying
  the reasons Karpenter and the scheduler gave, most specific first (the failed launches
  of its NodeClaims, their conditions, Karpenter's scheduling event, the scheduler's).
- Pods the ReplicaSet cannot even create (``ReplicaFailure``, e.g. a Pod Security
  violation) fail the same way after ``Limits.unplaced_s``.

``unplaced_s`` is 6 minutes: two rounds of Karpenter's retries (it marks an offering that
failed for lack of capacity unavailable for 3 minutes, then tries it again), so a shortage
that clears on a retry does not fail a deploy, and the failure still comes within 10
minutes of the rollout's start. Pod and NodeClaim ages are measured from the API server's
timestamps against this machine's clock: a clock minutes off shifts those limits by as
much.

The shapes read here are Karpenter 1.14's (the NodeClaim's ``Launched``, ``Registered``
and ``Initialized`` conditions, its events, the ``Nominated`` event that names the
NodeClaim meant for a pod) and Kubernetes' own; ``tests/infra/karpenter_shapes.py`` cites
where each comes from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

Obj = Mapping[str, Any]

REVISION = "deployment.kubernetes.io/revision"
KARPENTER = "karpenter"
# Karpenter's event on a pod: "Pod should schedule on: nodeclaim/gpu-x5k2p, node/ip-..."
NOMINATED = re.compile(r"nodeclaim/([^,\s]+)")
# What a reason may take of a message (Karpenter's scheduling messages list every
# requirement of the NodePool); the cause comes first.
MESSAGE_CHARS = 500
NEVER = datetime.min.replace(tzinfo=UTC)
NO_EVIDENCE = (
    "neither Karpenter nor the scheduler reported anything for it (is Karpenter running? "
    "kubectl -n karpenter get pods)"
)


class Outcome(Enum):
    READY = "ready"
    WAITING = "waiting"
    FAILED = "failed"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    message: str


@dataclass(frozen=True)
class Limits:
    """How long a rollout may take in all, how long a pod may go without a node on its
    way, and how long a launched node may take to join and advertise its resources."""

    rollout_s: float
    unplaced_s: float = 6 * 60
    node_start_s: float = 15 * 60


@dataclass(frozen=True)
class Snapshot:
    """One reading of the cluster: the Deployment, the ReplicaSets and pods its selector
    matches, the events on pods in its namespace and on NodeClaims, and the NodeClaims."""

    deployment: Obj
    replica_sets: Sequence[Obj]
    pods: Sequence[Obj]
    events: Sequence[Obj]
    node_claims: Sequence[Obj]


def _at(obj: Obj | None, *path: str) -> Any:
    value: Any = obj
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _time(value: object) -> datetime | None:
    """An RFC 3339 timestamp as the API writes it (``Z``, fractions for MicroTime)."""
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value)


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _age(obj: Obj, now: datetime) -> float:
    created = _time(_at(obj, "metadata", "creationTimestamp"))
    return (now - created).total_seconds() if created else 0.0


def _conditions(obj: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in _at(obj, "status", "conditions") or [] if "type" in c}


def _is_true(obj: Obj, condition: str) -> bool:
    return bool(_at(_conditions(obj).get(condition), "status") == "True")


def _owned_by(obj: Obj, owner: Obj) -> bool:
    uid = _at(owner, "metadata", "uid")
    return any(ref.get("uid") == uid for ref in _at(obj, "metadata", "ownerReferences") or [])


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def _when(event: Obj) -> datetime:
    """When an event last happened: core/v1 events from client-go's recorder (Karpenter's,
    the kubelet's) carry lastTimestamp; events.k8s.io ones (the scheduler's) eventTime and
    a series."""
    for value in (
        _at(event, "series", "lastObservedTime"),
        event.get("lastTimestamp"),
        event.get("eventTime"),
        event.get("firstTimestamp"),
        _at(event, "metadata", "creationTimestamp"),
    ):
        if when := _time(value):
            return when
    return NEVER


def _latest(events: Iterable[Obj]) -> list[Obj]:
    return sorted(events, key=_when, reverse=True)


def _component(event: Obj) -> str:
    return str(event.get("reportingComponent") or _at(event, "source", "component") or "")


def _about(events: Sequence[Obj], kind: str, obj: Obj) -> list[Obj]:
    """The events on one object, newest first."""
    uid, name = _at(obj, "metadata", "uid"), _at(obj, "metadata", "name")
    return _latest(
        e
        for e in events
        if _at(e, "involvedObject", "kind") == kind
        and (_at(e, "involvedObject", "uid") or uid) == uid
        and _at(e, "involvedObject", "name") == name
    )


def rollout_pending(deployment: Obj, generation: int) -> str | None:
    """What the rollout of ``generation`` still waits for (None: it is complete), as
    ``kubectl rollout status`` judges it."""
    observed = _at(deployment, "status", "observedGeneration") or 0
    if observed < generation:
        return f"the Deployment controller has not yet acted on generation {generation}"
    desired = _at(deployment, "spec", "replicas")
    desired = 1 if desired is None else desired
    status = _at(deployment, "status") or {}
    updated = status.get("updatedReplicas") or 0
    total = status.get("replicas") or 0
    available = status.get("availableReplicas") or 0
    if updated < desired:
        return f"{updated} of {desired} pods are of the new version"
    if total > updated:
        return f"{total - updated} old pods still to be replaced"
    if available < updated:
        return f"{available} of {updated} new pods are ready"
    return None


def _new_pods(snapshot: Snapshot) -> list[Obj]:
    """The live pods of the Deployment's current ReplicaSet."""
    deployment = snapshot.deployment
    revision = _at(deployment, "metadata", "annotations", REVISION)
    current = [
        rs
        for rs in snapshot.replica_sets
        if _owned_by(rs, deployment) and _at(rs, "metadata", "annotations", REVISION) == revision
    ]
    return [
        pod
        for pod in snapshot.pods
        if any(_owned_by(pod, rs) for rs in current)
        and not _at(pod, "metadata", "deletionTimestamp")
    ]


def _containers(pod: Obj) -> str:
    """Where each container of a placed pod stands."""
    states = []
    for status in _at(pod, "status", "containerStatuses") or []:
        state = status.get("state") or {}
        if waiting := state.get("waiting"):
            detail = waiting.get("reason") or "waiting"
            if message := waiting.get("message"):
                detail += f" ({_clip(message)})"
        elif "running" in state:
            detail = "running, not ready" if status.get("started") else "running, starting"
        else:
            ended = state.get("terminated") or {}
            detail = f"exited: {ended.get('reason')} (code {ended.get('exitCode')})"
        if restarts := status.get("restartCount"):
            detail += f", {restarts} restarts"
        states.append(f"{status.get('name')}: {detail}")
    return "; ".join(states) or f"{_at(pod, 'status', 'phase') or 'Pending'}, no container yet"


def _claims_for(
    pod: Obj, events: Sequence[Obj], claims: Sequence[Obj]
) -> tuple[set[str], list[Obj]]:
    """The NodeClaims Karpenter named for the pod (its Nominated events), and the live
    NodeClaims that could take it: those named, and those of the NodePool its node
    selector picks (a NodeClaim carries its NodePool's template labels)."""
    named = {
        match
        for event in _about(events, "Pod", pod)
        if event.get("reason") == "Nominated"
        for match in NOMINATED.findall(str(event.get("message") or ""))
    }
    selector: Mapping[str, str] = _at(pod, "spec", "nodeSelector") or {}
    live = [
        claim
        for claim in claims
        if _at(claim, "metadata", "name") in named
        or (selector and selector.items() <= (_at(claim, "metadata", "labels") or {}).items())
    ]
    return named, live


def _joining(claim: Obj, now: datetime, limits: Limits) -> bool:
    """The NodeClaim's instance runs and its node has not yet joined and advertised its
    resources, within Karpenter's registration timeout."""
    return (
        not _at(claim, "metadata", "deletionTimestamp")
        and _is_true(claim, "Launched")
        and not _is_true(claim, "Initialized")
        and _age(claim, now) < limits.node_start_s
    )


def _claim_trouble(claim: Obj) -> str | None:
    """The first of Launched, Registered, Initialized that is not True and says why (an
    untouched claim says only "AwaitingReconciliation")."""
    for kind in ("Launched", "Registered", "Initialized"):
        condition = _conditions(claim).get(kind)
        if condition is None or condition.get("status") == "True":
            continue
        if condition.get("reason") in (None, "", "AwaitingReconciliation"):
            return None
        name = _at(claim, "metadata", "name")
        return _clip(
            f"NodeClaim {name} {kind}={condition.get('status')} {condition.get('reason')}: "
            f"{condition.get('message') or ''}"
        )
    return None


def placement_reasons(pod: Obj, events: Sequence[Obj], claims: Sequence[Obj]) -> list[str]:
    """Why the pod has no node, most specific first: Karpenter's failed launches of the
    NodeClaims meant for it (events on the claim, which Karpenter deletes after such a
    failure), those claims' conditions, Karpenter's scheduling event, the scheduler's."""
    named, live = _claims_for(pod, events, claims)
    names = named | {_at(c, "metadata", "name") for c in live}
    reasons = [
        _clip(str(e.get("message")))
        for e in _latest(events)
        if _at(e, "involvedObject", "kind") == "NodeClaim"
        and _at(e, "involvedObject", "name") in names
        and e.get("type") == "Warning"
    ]
    reasons += [trouble for claim in live if (trouble := _claim_trouble(claim))]
    on_pod = [e for e in _about(events, "Pod", pod) if e.get("reason") == "FailedScheduling"]
    karpenter = [e for e in on_pod if _component(e) == KARPENTER]
    scheduler = [e for e in on_pod if _component(e) != KARPENTER]
    reasons += [f"Karpenter: {_clip(str(e.get('message')))}" for e in karpenter[:1]]
    reasons += [f"scheduler: {_clip(str(e.get('message')))}" for e in scheduler[:1]]
    return list(dict.fromkeys(reasons))


def _pod_verdict(pod: Obj, snapshot: Snapshot, now: datetime, limits: Limits) -> Verdict:
    name = _at(pod, "metadata", "name")
    if node := _at(pod, "spec", "nodeName"):
        detail = _containers(pod)
        if latest := _about(snapshot.events, "Pod", pod):
            last = latest[0]
            detail += f"; last event {last.get('reason')}: {_clip(str(last.get('message')))}"
        return Verdict(Outcome.WAITING, f"pod {name} is on node {node}: {detail}")
    _, live = _claims_for(pod, snapshot.events, snapshot.node_claims)
    if joining := [c for c in live if _joining(c, now, limits)]:
        claim = joining[0]
        trouble = _claim_trouble(claim)
        return Verdict(
            Outcome.WAITING,
            f"pod {name} waits for the node of NodeClaim {_at(claim, 'metadata', 'name')}, "
            f"launched {duration(_age(claim, now))} ago" + (f" ({trouble})" if trouble else ""),
        )
    age = _age(pod, now)
    reasons = placement_reasons(pod, snapshot.events, snapshot.node_claims)
    if age < limits.unplaced_s:
        return Verdict(
            Outcome.WAITING,
            f"pod {name} has waited {duration(age)} for a node"
            + (f": {reasons[0]}" if reasons else ""),
        )
    return Verdict(
        Outcome.FAILED,
        f"pod {name} has had no node for {duration(age)} and none is starting: "
        + "; ".join(reasons or [NO_EVIDENCE]),
    )


def _replica_failure(deployment: Obj, now: datetime, limits: Limits) -> Verdict | None:
    """The ReplicaSet cannot create pods (quota, Pod Security, an invalid spec)."""
    condition = _conditions(deployment).get("ReplicaFailure")
    if condition is None or condition.get("status") != "True":
        return None
    since = _time(condition.get("lastTransitionTime"))
    lasted = (now - since).total_seconds() if since else 0.0
    why = f"{condition.get('reason')}: {_clip(str(condition.get('message')))}"
    text = f"pods cannot be created: {why}"
    if lasted < limits.unplaced_s:
        return Verdict(Outcome.WAITING, text)
    return Verdict(Outcome.FAILED, f"{text} (for {duration(lasted)})")


def assess(
    snapshot: Snapshot, generation: int, now: datetime, waited_s: float, limits: Limits
) -> Verdict:
    """The state of the rollout of ``generation`` of the Deployment, ``waited_s`` into
    waiting for it, at ``now`` (UTC)."""
    deployment = snapshot.deployment
    name = _at(deployment, "metadata", "name")
    pending = rollout_pending(deployment, generation)
    if pending is None:
        ready = _at(deployment, "status", "readyReplicas") or 0
        return Verdict(Outcome.READY, f"{name}: rolled out, {ready} pods ready")
    verdicts = [v for v in [_replica_failure(deployment, now, limits)] if v]
    verdicts += [
        _pod_verdict(pod, snapshot, now, limits)
        for pod in _new_pods(snapshot)
        if not _is_true(pod, "Ready")
    ]
    if failed := [v.message for v in verdicts if v.outcome is Outcome.FAILED]:
        return Verdict(Outcome.FAILED, f"{name}: " + "\n".join(failed))
    summary = "; ".join([pending, *(v.message for v in verdicts)])
    if waited_s >= limits.rollout_s:
        return Verdict(
            Outcome.FAILED, f"{name}: not rolled out after {duration(waited_s)}: {summary}"
        )
    return Verdict(Outcome.WAITING, f"{name}: {summary}")
