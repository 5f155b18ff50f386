"""Measure the images per second one TF Serving replica serves, on a live stack.

Raises the load on the deployed gateway step by step, reads from the stack's Prometheus
after each step the images per second KEDA sees (``infra.demand.demand_query``) per TF
Serving replica, and prints the ``tfServing.imagesPerSecond`` that puts the measured knee
where ``infra.demand.KNEE`` says it is.

    kubectl -n monitoring port-forward svc/kps-prometheus 9090 &
    uv run python -m bench.scaling_calibration --gateway "$(pulumi stack output gateway_url)" \\
        --api-key "$KEY" --image-url https://<bucket>.s3.<region>.amazonaws.com/pants.jpg

Hold TF Serving at one replica while it runs (``tfServing.minReplicas`` = ``maxReplicas`` =
1), and list only the GPU type to calibrate in ``gpuNodes.instanceTypes``: a ceiling is one
GPU type's, so calibrate the slowest you allow. Use an image near the cluster (in S3 in its
region): a far or rate-limited host measures the internet, not the GPU.

Each step runs ``--seconds`` at one concurrency; at its end Prometheus is asked for the
image rate over the step (the query KEDA runs, with the step as its window) and for TF
Serving's ready replicas (kube-state-metrics). The ceiling is the most images/s per replica
any step reached; the held rate, the most of a step whose p99 held ``--objective-s`` with
every answer 200. The knee (``KNEE`` of the ceiling: p99 held there and broke above)
should sit at the held rate, so the recommendation is ``min(ceiling, held / KNEE)``, and
KEDA then holds each replica at ``infra.demand.Demand.target`` of it. If no step broke the
objective the ceiling was not reached: the recommendation is a lower bound, raise
``--steps``.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass

from bench.loadgen import LoadResult, run_load
from infra.alerts import P99_OBJECTIVE_S
from infra.demand import KNEE, Demand, demand_query
from infra.kube import TF_SERVING
from infra.serving import NAMESPACE

# TF Serving's ready replicas, from kube-state-metrics.
REPLICAS_QUERY = (
    "sum(kube_deployment_status_replicas_available"
    f'{{namespace="{NAMESPACE}",deployment="{TF_SERVING.name}"}})'
)
DEMAND_UNSCRAPED = (
    "is the gateway's /metrics scraped (its PodMonitor)? It counts only the images of "
    "requests that passed the API key check and parsing"
)
REPLICAS_UNSCRAPED = "is kube-state-metrics scraped?"


@dataclass(frozen=True)
class Step:
    concurrency: int
    load: LoadResult
    images_per_second: float  # asked of the whole service, as KEDA reads it
    replicas: float  # TF Serving's ready replicas at the step's end

    @property
    def per_replica(self) -> float:
        """Images/s per TF Serving replica: what KEDA compares with its target."""
        return self.images_per_second / max(self.replicas, 1)

    @property
    def refused(self) -> bool:
        """A 4xx answer (a wrong API key, a refused image) says nothing of the GPU."""
        return any(400 <= status < 500 for status, n in self.load.statuses.items() if n)

    def held(self, objective_s: float) -> bool:
        """p99 within the objective and every answer 200."""
        return (
            self.load.count > 0
            and all(status == 200 for status, n in self.load.statuses.items() if n)
            and self.load.percentile_ms(99) <= objective_s * 1000
        )


@dataclass(frozen=True)
class Recommendation:
    ceiling: float  # the most images/s per replica any step reached (none refused)
    held: float  # the most images/s per replica of a step that held the objective
    broke_at: int | None  # the first concurrency that broke the objective; None: none did
    images_per_second: float  # tfServing.imagesPerSecond, to 0.1 images/s


def recommended(steps: list[Step], objective_s: float) -> Recommendation:
    """``min(ceiling, held / KNEE)``: the held rate at ``KNEE`` of the configured ceiling,
    where p99 was measured to hold, but never above what a step actually reached."""
    held = [s.per_replica for s in steps if s.held(objective_s)]
    if not held:
        raise ValueError("no step held the objective: start with less load (--steps)")
    counted = [s for s in steps if not s.refused]
    broke = [s.concurrency for s in counted if s.load.count and not s.held(objective_s)]
    ceiling = max(s.per_replica for s in counted)
    return Recommendation(
        ceiling=ceiling,
        held=max(held),
        broke_at=broke[0] if broke else None,
        images_per_second=round(min(ceiling, max(held) / KNEE), 1),
    )


def instant_query(prometheus: str, query: str, at: float, unscraped: str) -> float:
    """The one sample ``query`` gives at ``at`` from Prometheus's HTTP API; an empty answer
    (a series Prometheus does not have) raises, with ``unscraped`` as the likely cause."""
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query, "time": at})
    with urllib.request.urlopen(url, timeout=30) as response:
        answer = json.load(response)
    if answer.get("status") != "success":
        raise RuntimeError(f"Prometheus refused {query!r}: {answer}")
    result = answer["data"]["result"]
    if not result:
        raise RuntimeError(f"Prometheus has no samples for {query!r}: {unscraped}")
    return float(result[0]["value"][1])


def measure(prometheus: str, seconds: int, at: float) -> tuple[float, float]:
    """(the images/s KEDA reads over the ``seconds`` before ``at``, TF Serving's ready
    replicas at ``at``)."""
    demand = instant_query(prometheus, demand_query(NAMESPACE, f"{seconds}s"), at, DEMAND_UNSCRAPED)
    replicas = instant_query(prometheus, REPLICAS_QUERY, at, REPLICAS_UNSCRAPED)
    return demand, replicas


def calibrate(
    gateway: str,
    prometheus: str,
    steps: list[int],
    seconds: int,
    images: list[str],
    headers: dict[str, str],
) -> list[Step]:
    results = []
    for concurrency in steps:
        load = run_load(
            gateway,
            lambda i: {"url": images[i % len(images)]},
            requests=10**9,
            concurrency=concurrency,
            max_seconds=seconds,
            headers=headers,
        )
        step = Step(concurrency, load, *measure(prometheus, seconds, time.time()))
        results.append(step)
        print(
            f"concurrency {concurrency:>3}: {load.rps:7.1f} req/s, p99 "
            f"{load.percentile_ms(99):7.0f} ms, {load.count - load.statuses[200]} not 200, "
            f"{step.per_replica:7.1f} images/s per replica ({step.replicas:g} ready)",
            flush=True,
        )
    return results


def report(result: Recommendation, objective_s: float, prometheus: str) -> str:
    """What the calibration found, and the config line it recommends."""
    target = Demand(result.images_per_second, None, prometheus, NAMESPACE).target
    if result.broke_at is None:
        broke = (
            f"the load never broke the objective: the ceiling was not reached and "
            f"{result.images_per_second:.1f} is a lower bound: raise --steps"
        )
    else:
        broke = f"the load broke the objective from concurrency {result.broke_at}"
    return "\n".join(
        [
            f"ceiling: {result.ceiling:.1f} images/s per replica (the most any step reached)",
            f"held: {result.held:.1f} images/s per replica (p99 <= {objective_s:g} s, every "
            "answer 200)",
            broke,
            f"tfServing.imagesPerSecond: {result.images_per_second:.1f}  (KEDA then holds "
            f"each replica at {target:g} images/s)",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", required=True, help="the stack's gateway_url")
    parser.add_argument("--prometheus", default="http://localhost:9090")
    parser.add_argument("--api-key", default="", help="a key of the stack's apiKeys, if on")
    parser.add_argument(
        "--image-url",
        action="append",
        required=True,
        dest="images",
        help="an image near the cluster (e.g. in S3 in its region): a far or rate-limited "
        "host measures the internet, not the GPU",
    )
    parser.add_argument("--steps", default="1,2,4,8,16,32,64", help="concurrency per step")
    parser.add_argument(
        "--seconds",
        type=int,
        default=120,
        help="per step, and the rate's window: several of Prometheus's 15 s scrapes",
    )
    parser.add_argument("--objective-s", type=float, default=P99_OBJECTIVE_S)
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    prometheus = args.prometheus.rstrip("/")
    steps = calibrate(
        args.gateway.rstrip("/"),
        prometheus,
        [int(s) for s in args.steps.split(",")],
        args.seconds,
        args.images,
        headers,
    )
    print(report(recommended(steps, args.objective_s), args.objective_s, prometheus))


if __name__ == "__main__":
    main()
