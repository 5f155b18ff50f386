"""infra.rollout_wait: the polling loop with a fake cluster and a fake clock, the reader
against a stand-in Kubernetes API (real HTTP, the real client), and the command
``pulumi up`` runs, as the program writes it."""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from infra.placement_watch import Limits, Outcome, Snapshot
from infra.rollout_wait import (
    API_DOWN_S,
    POLL_S,
    ApiReader,
    ClusterUnreachable,
    Target,
    wait,
)
from tests.infra import karpenter_shapes as k
from tests.infra.harness import ROOT, StackRun

TARGET = Target("clothing", "tf-serving", 2)
LIMITS = Limits(rollout_s=45 * 60)
DEPLOYMENT = k.deployment()
OLD_RS = k.replica_set(DEPLOYMENT, "1", "5c7b9d6f4")
NEW_RS = k.replica_set(DEPLOYMENT, "2", "6d9f7c8b5")
SERVING = k.pod("tf-serving-5c7b9d6f4-m2v7s", OLD_RS, created=-40, node="ip-10-0-2-41", ready=True)
UNPLACED = k.pod("tf-serving-6d9f7c8b5-x2k4q", NEW_RS)


class FakeClock:
    """Time passes only when the loop sleeps."""

    def __init__(self, start_minute: float) -> None:
        self.elapsed = 0.0
        self.start = k.T0 + timedelta(minutes=start_minute)
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed)

    def monotonic(self) -> float:
        return self.elapsed

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.elapsed += seconds


class FakeCluster:
    """Answers each read with what ``story`` says the cluster holds at that minute."""

    def __init__(self, clock: FakeClock, story: Callable[[float], Snapshot]) -> None:
        self.clock, self.story = clock, story
        self.reads: list[tuple[str, str]] = []

    def snapshot(self, namespace: str, name: str) -> Snapshot:
        self.reads.append((namespace, name))
        minute = (self.clock.now() - k.T0).total_seconds() / 60
        return self.story(minute)


def cluster(
    pods: Sequence[dict[str, Any]],
    events: Sequence[dict[str, Any]] = (),
    deployment: dict[str, Any] = DEPLOYMENT,
) -> Snapshot:
    return Snapshot(deployment, [OLD_RS, NEW_RS], [SERVING, *pods], list(events), [])


def quota_story(minute: float) -> Snapshot:
    """A vCPU quota of 0: each NodeClaim Karpenter makes for the pod fails to launch."""
    events = [k.scheduler_failed(UNPLACED, 0.1)]
    for start, claim in ((0.2, "gpu-7xk2p"), (3.7, "gpu-q8w3n")):
        if minute >= start:
            events.append(k.nominated(UNPLACED, claim, start))
        if minute >= start + 0.3:
            failed = k.node_claim(claim, created=start)
            events.append(k.insufficient_capacity(failed, k.VCPU_LIMIT_EXCEEDED, start + 0.3))
    return cluster([UNPLACED], events)


def test_a_vcpu_quota_ends_the_wait_within_ten_minutes_with_the_reason() -> None:
    clock = FakeClock(start_minute=0.1)
    out = io.StringIO()
    verdict = wait(FakeCluster(clock, quota_story), TARGET, LIMITS, clock, out)
    assert verdict.outcome is Outcome.FAILED
    pod_age = clock.elapsed + 6  # the wait started 6 s after the pod was created
    assert 6 * 60 <= pod_age <= 7 * 60
    assert "VcpuLimitExceeded: You have requested more vCPU capacity" in verdict.message
    assert set(clock.sleeps) == {POLL_S}
    lines = out.getvalue().splitlines()
    # Said when something other than the time waited changed, else once a minute: the
    # reason as soon as Karpenter gives it.
    assert lines[:3] == [
        "[0s] tf-serving: 1 old pods still to be replaced; pod tf-serving-6d9f7c8b5-x2k4q has waited 6s for a node: scheduler: "
        + k.SCHEDULER_NO_NODE,
        "[30s] tf-serving: 1 old pods still to be replaced; pod tf-serving-6d9f7c8b5-x2k4q has waited 36s for a node: NodeClaim gpu-7xk2p event: "
        + k.truncated(
            "creating instance, insufficient capacity, with fleet error(s), "
            + k.VCPU_LIMIT_EXCEEDED
        ),
        "[1m30s] tf-serving: 1 old pods still to be replaced; pod tf-serving-6d9f7c8b5-x2k4q has waited 1m36s for a node: NodeClaim gpu-7xk2p event: "
        + k.truncated(
            "creating instance, insufficient capacity, with fleet error(s), "
            + k.VCPU_LIMIT_EXCEEDED
        ),
    ]
    assert len(lines) <= 8


def test_the_wait_ends_when_the_rollout_is_done_and_reports_once_a_minute() -> None:
    on_node = k.pod(
        UNPLACED["metadata"]["name"], NEW_RS, node="ip-10-0-3-17", containers=k.loading_the_model(5)
    )
    ready = k.pod(UNPLACED["metadata"]["name"], NEW_RS, node="ip-10-0-3-17", ready=True)

    def story(minute: float) -> Snapshot:
        if minute < 20:
            return cluster([on_node])  # the same state for 20 minutes: the model loads
        return cluster([ready], deployment=k.deployment(total=1))

    clock = FakeClock(start_minute=0.1)
    out = io.StringIO()
    verdict = wait(FakeCluster(clock, story), TARGET, LIMITS, clock, out)
    assert verdict.outcome is Outcome.READY
    assert 19.9 * 60 <= clock.elapsed <= 20 * 60
    lines = out.getvalue().splitlines()
    assert len(lines) == 20  # one a minute while nothing changes
    assert all("running, starting" in line for line in lines)


def test_a_blip_in_the_api_is_ridden_out() -> None:
    clock = FakeClock(start_minute=0.1)
    done = cluster(
        [k.pod(UNPLACED["metadata"]["name"], NEW_RS, node="n", ready=True)],
        deployment=k.deployment(total=1),
    )
    answers: Iterator[Snapshot | Exception] = iter(
        [ClusterUnreachable("Unauthorized"), ClusterUnreachable("timed out"), done]
    )

    def story(minute: float) -> Snapshot:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    out = io.StringIO()
    assert wait(FakeCluster(clock, story), TARGET, LIMITS, clock, out).outcome is Outcome.READY
    assert "cannot read the cluster: Unauthorized" in out.getvalue()


def test_an_api_that_stays_unreachable_fails_the_wait() -> None:
    clock = FakeClock(start_minute=0.1)

    def story(minute: float) -> Snapshot:
        raise ClusterUnreachable(
            "HTTPSConnectionPool(host='ABC.gr7.us-east-1.eks.amazonaws.com', port=443)"
        )

    verdict = wait(FakeCluster(clock, story), TARGET, LIMITS, clock, io.StringIO())
    assert verdict.outcome is Outcome.FAILED
    assert clock.elapsed == API_DOWN_S
    assert verdict.message.startswith(
        "tf-serving: cannot read the rollout from the cluster for 2m00s"
    )


class StandInApi(BaseHTTPRequestHandler):
    """The Kubernetes API paths the reader reads, answering with ``snapshot``."""

    snapshot: Snapshot
    requests: list[tuple[str, dict[str, list[str]], str | None]]

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        type(self).requests.append((url.path, query, self.headers.get("Authorization")))
        s = type(self).snapshot
        fields = query.get("fieldSelector", [""])[0]
        listing: Any = {
            "/apis/apps/v1/namespaces/clothing/deployments/tf-serving": s.deployment,
            "/apis/apps/v1/namespaces/clothing/replicasets": {"kind": "ReplicaSetList", "items": s.replica_sets},
            "/api/v1/namespaces/clothing/pods": {"kind": "PodList", "items": s.pods},
            "/api/v1/namespaces/clothing/events": {"kind": "EventList", "items": [e for e in s.events if fields.endswith(e["involvedObject"]["kind"])]},
            "/api/v1/namespaces/default/events": {"kind": "EventList", "items": [e for e in s.events if fields.endswith(e["involvedObject"]["kind"])]},
            "/apis/karpenter.sh/v1/nodeclaims": {"kind": "NodeClaimList", "items": s.node_claims},
        }.get(url.path)  # fmt: skip
        body = json.dumps(listing or {"kind": "Status", "code": 404}).encode()
        self.send_response(200 if listing is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[tuple[str, type[StandInApi]]]:
    handler = type("Api", (StandInApi,), {"snapshot": quota_story(7), "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def kubeconfig(server: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }


def test_the_reader_reads_what_the_decision_needs_as_the_api_returns_it(
    api: tuple[str, type[StandInApi]],
) -> None:
    server, handler = api
    snapshot = ApiReader(kubeconfig(server)).snapshot("clothing", "tf-serving")
    # pods' events are read first, then the NodeClaims'
    by_name = sorted(handler.snapshot.events, key=lambda e: e["involvedObject"]["kind"] != "Pod")
    assert snapshot == Snapshot(**{**vars(handler.snapshot), "events": by_name})
    selector = "app.kubernetes.io/name=tf-serving,app.kubernetes.io/part-of=clothing-serving"
    asked = {(path, json.dumps(query, sort_keys=True)) for path, query, _ in handler.requests}
    assert asked == {
        ("/apis/apps/v1/namespaces/clothing/deployments/tf-serving", "{}"),
        ("/apis/apps/v1/namespaces/clothing/replicasets", json.dumps({"labelSelector": [selector]})),
        ("/api/v1/namespaces/clothing/pods", json.dumps({"labelSelector": [selector]})),
        ("/api/v1/namespaces/clothing/events", json.dumps({"fieldSelector": ["involvedObject.kind=Pod"]})),
        ("/api/v1/namespaces/default/events", json.dumps({"fieldSelector": ["involvedObject.kind=NodeClaim"]})),
        ("/apis/karpenter.sh/v1/nodeclaims", "{}"),
    }  # fmt: skip
    assert {auth for _, _, auth in handler.requests} == {"Bearer t0ken"}


def test_a_cluster_without_karpenter_has_no_node_claims(
    api: tuple[str, type[StandInApi]],
) -> None:
    """kind, or a cluster of your own: the API has no NodeClaim kind (404), and the wait
    goes on with the pods' own events."""
    _, handler = api

    class NoKarpenter(handler):  # type: ignore[valid-type,misc]
        def do_GET(self) -> None:
            if self.path.startswith("/apis/karpenter.sh/"):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            super().do_GET()

    no_karpenter = ThreadingHTTPServer(("127.0.0.1", 0), NoKarpenter)
    thread = threading.Thread(target=no_karpenter.serve_forever, daemon=True)
    thread.start()
    try:
        port = no_karpenter.server_address[1]
        snapshot = ApiReader(kubeconfig(f"http://127.0.0.1:{port}")).snapshot(
            "clothing", "tf-serving"
        )
    finally:
        no_karpenter.shutdown()
        no_karpenter.server_close()
    assert snapshot.node_claims == [] and snapshot.pods == handler.snapshot.pods


def test_the_reader_turns_api_errors_into_unreachable(api: tuple[str, type[StandInApi]]) -> None:
    server, _ = api
    with pytest.raises(ClusterUnreachable, match="404"):
        ApiReader(kubeconfig(server)).snapshot("clothing", "gone")
    closed = ThreadingHTTPServer(("127.0.0.1", 0), StandInApi)
    port = closed.server_address[1]
    closed.server_close()
    with pytest.raises(ClusterUnreachable):
        ApiReader(kubeconfig(f"http://127.0.0.1:{port}")).snapshot("clothing", "tf-serving")


def _uv() -> str:
    """uv as the Makefile finds it (Pulumi's uv toolchain needs it on PATH)."""
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    assert Path(found).exists(), "uv is not installed: make setup"
    return found


def test_the_command_pulumi_runs_fails_with_karpenters_reason(
    stacks: dict[str, StackRun], api: tuple[str, type[StandInApi]]
) -> None:
    """The exact command of the program's rollout wait, from its directory, with the
    kubeconfig on stdin: a pod Pending for days behind a vCPU quota fails at once."""
    server, handler = api
    [command] = [
        c for c in stacks["dev"].of_type("command:local:Command") if c.name == "tf-serving-rollout"
    ]
    words = shlex.split(command.inputs["create"])
    words[words.index("--generation") + 1] = "2"  # the recorded cluster's generation
    env = {**os.environ, "PATH": f"{Path(_uv()).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        words,
        cwd=ROOT / command.inputs["dir"],
        input=json.dumps(kubeconfig(server)),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(
        "error: tf-serving: pod tf-serving-6d9f7c8b5-x2k4q has had no node for "
    )
    assert "VcpuLimitExceeded" in result.stderr
    handler.snapshot = cluster(
        [k.pod(UNPLACED["metadata"]["name"], NEW_RS, node="n", ready=True)],
        deployment=k.deployment(total=1),
    )
    done = subprocess.run(
        [sys.executable, "-m", "infra.rollout_wait", "clothing/tf-serving", "--generation", "2", "--timeout", "60"],
        cwd=ROOT,
        input=json.dumps(kubeconfig(server)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "tf-serving: rolled out, 1 pods ready\n")
