"""Wait for a Deployment's rollout, and fail within minutes, with Karpenter's reason, when
a pod cannot get a node: ``python -m infra.rollout_wait <namespace>/<name> --generation N
--timeout S``, the kubeconfig (JSON) on standard input. ``pulumi up`` runs it once per
workload after applying the Deployment (``infra.kube.rollout``), and fails with what it
prints when it exits non-zero.

Why a process of its own, and not pulumi-kubernetes' await or a Python dynamic provider:

- pulumi-kubernetes' Deployment await (provider/pkg/await/deployment.go) ends on success,
  cancellation or its ``pulumi.com/timeoutSeconds``; a ``ProgressDeadlineExceeded``
  condition is only logged as a warning, and it reads no NodeClaim. So the Deployments
  skip that await (``pulumi.com/skipAwait``) and this wait replaces it: the Pulumi engine
  lets in-flight steps finish when another step fails (pkg/resource/deploy/
  step_executor.go, deployment_executor.go), so a separate watcher failing early would not
  shorten ``pulumi up`` while the Deployment's own 45-minute await still ran.
- Pulumi serializes a Python dynamic provider with dill, which pickles a class defined in
  an importable module by reference (``infra.…``), and starts the provider from the
  program's directory (``main: infra/``), where ``infra`` is not importable and where its
  launcher looks for ``infra/.venv`` under the uv toolchain (pulumi/pulumi#7061). A local
  Command (pulumi-command) runs this module from the repository root with ``uv run`` in
  the environment Pulumi synced, like any other command.

The judgement is ``infra.placement_watch``'s; this module reads the cluster every
``POLL_S`` seconds, prints what the rollout waits for when that changes (and at least
every ``REPORT_S``: all of it is in the error too), and gives up after ``API_DOWN_S`` of
failed reads.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Protocol

from infra.kube_api import UNREACHABLE, KubeApi
from infra.placement_watch import Limits, Outcome, Snapshot, Verdict, assess, duration

POLL_S = 15.0
REPORT_S = 60.0
API_DOWN_S = 120.0
DURATION = re.compile(r"\b(\d+m)?\d+s\b")
# Karpenter's API, and the namespace where events on cluster-scoped objects (its
# NodeClaims) are recorded (client-go's recorder, tools/record/event.go).
KARPENTER_API = "karpenter.sh/v1"
CLUSTER_EVENTS_NAMESPACE = "default"


class ClusterUnreachable(Exception):
    """A read of the cluster failed (network, credentials, the API server)."""


class ClusterReader(Protocol):
    def snapshot(self, namespace: str, name: str) -> Snapshot: ...


class Clock(Protocol):
    def now(self) -> datetime:
        """The wall clock, in UTC (compared with the API server's timestamps)."""
        ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class Target:
    namespace: str
    name: str
    generation: int


def wait(
    reader: ClusterReader, target: Target, limits: Limits, clock: Clock, out: IO[str]
) -> Verdict:
    """Poll until the rollout is ready or has failed; report progress on ``out``."""
    start = clock.monotonic()
    last_said, said_at = "", -REPORT_S
    down_since: float | None = None
    while True:
        elapsed = clock.monotonic() - start
        try:
            snapshot = reader.snapshot(target.namespace, target.name)
        except ClusterUnreachable as error:
            down_since = elapsed if down_since is None else down_since
            if elapsed - down_since >= API_DOWN_S:
                return Verdict(
                    Outcome.FAILED,
                    f"{target.name}: cannot read the rollout from the cluster for "
                    f"{duration(elapsed - down_since)}: {error}",
                )
            verdict = Verdict(Outcome.WAITING, f"{target.name}: cannot read the cluster: {error}")
        else:
            down_since = None
            verdict = assess(snapshot, target.generation, clock.now(), elapsed, limits)
            if verdict.outcome is not Outcome.WAITING:
                return verdict
        gist = DURATION.sub("", verdict.message)  # a pod's wait grows by itself
        if gist != last_said or elapsed - said_at >= REPORT_S:
            print(f"[{duration(elapsed)}] {verdict.message}", file=out, flush=True)
            last_said, said_at = gist, elapsed
        clock.sleep(POLL_S)


class ApiReader:
    """Reads a snapshot with plain GETs of the paths below (``infra.kube_api``), keeping
    the API's own JSON."""

    def __init__(self, kubeconfig: dict[str, Any]) -> None:
        self._api = KubeApi(kubeconfig)

    def _get(self, path: str, missing: Any = None, **query: str) -> Any:
        """The JSON at ``path``; ``missing``, if given, where the API has no such kind (404:
        Karpenter's NodeClaims on a cluster without Karpenter, as kind or one of yours)."""
        answer = self._api.call("GET", path, **query)
        if answer.status == 404 and missing is not None:
            return missing
        if not 200 <= answer.status < 300:
            raise ClusterUnreachable(f"GET {path}: {answer.status} {answer.reason}")
        return json.loads(answer.body)

    def _items(self, path: str, **query: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._get(path, **query).get("items") or []
        return items

    def snapshot(self, namespace: str, name: str) -> Snapshot:
        apps, core = f"/apis/apps/v1/namespaces/{namespace}", f"/api/v1/namespaces/{namespace}"
        try:
            deployment = self._get(f"{apps}/deployments/{name}")
            labels = deployment["spec"]["selector"].get("matchLabels") or {}
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            return Snapshot(
                deployment=deployment,
                replica_sets=self._items(f"{apps}/replicasets", labelSelector=selector),
                pods=self._items(f"{core}/pods", labelSelector=selector),
                events=self._items(f"{core}/events", fieldSelector="involvedObject.kind=Pod")
                + self._items(
                    f"/api/v1/namespaces/{CLUSTER_EVENTS_NAMESPACE}/events",
                    fieldSelector="involvedObject.kind=NodeClaim",
                ),
                node_claims=self._get(
                    f"/apis/{KARPENTER_API}/nodeclaims", missing={"items": []}
                ).get("items")
                or [],
            )
        except UNREACHABLE as error:
            raise ClusterUnreachable(str(error).strip().splitlines()[0]) from error


def parser() -> argparse.ArgumentParser:
    """The command line ``infra.kube.rollout`` writes."""
    arguments = argparse.ArgumentParser(prog="python -m infra.rollout_wait", description=__doc__)
    arguments.add_argument("deployment", help="namespace/name")
    arguments.add_argument("--generation", type=int, required=True)
    arguments.add_argument("--timeout", type=int, required=True, help="seconds for the rollout")
    return arguments


def main(argv: Sequence[str] | None = None, stdin: IO[str] = sys.stdin) -> int:
    args = parser().parse_args(argv)
    namespace, _, name = args.deployment.partition("/")
    reader = ApiReader(json.loads(stdin.read()))
    verdict = wait(
        reader,
        Target(namespace, name, args.generation),
        Limits(rollout_s=args.timeout),
        SystemClock(),
        sys.stdout,
    )
    if verdict.outcome is Outcome.READY:
        print(verdict.message, flush=True)
        return 0
    print(f"error: {verdict.message}", file=sys.stderr, flush=True)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
