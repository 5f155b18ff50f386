"""Calibrate TF Serving's autoscaling target on a live stack: raise the load on the deployed
gateway step by step, read the GPUs' utilisation from the stack's Prometheus after each
step, and print the utilisation up to which /predict's p99 stays within its objective and
the ``monitoring.targetGpuPercent`` that leaves room for the load to grow while a new TF
Serving pod starts.

    kubectl -n monitoring port-forward svc/kps-prometheus 9090 &
    uv run python -m bench.scaling_calibration --gateway "$(pulumi stack output gateway_url)" \\
        --api-key "$KEY" --image-url https://<bucket>.s3.<region>.amazonaws.com/pants.jpg \\
        --scale-up-minutes 8 --growth-per-minute 0.05

Hold TF Serving at one pod while it runs (``tfServing.minReplicas`` = ``maxReplicas`` = 1),
so the utilisation is one GPU's. ``--scale-up-minutes``: how long a new TF Serving pod
takes to serve on a new GPU node, measured from the stack's events (docs/operations.md,
"Scaling by load"); ``--growth-per-minute``: how fast the load you must absorb grows, as a
share of itself. The target is the utilisation that held the objective, divided by the
growth during the scale-up: ``u / (1 + growth x minutes)``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass

from bench.loadgen import LoadResult, run_load
from infra.alerts import P99_OBJECTIVE_S
from infra.serving import NAMESPACE

GPU_QUERY = 'avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{{namespace="{ns}"}}[{seconds}s]))'


@dataclass(frozen=True)
class Step:
    concurrency: int
    load: LoadResult
    gpu_percent: float


def gpu_utilisation(prometheus: str, seconds: int, at: float) -> float:
    """The TF Serving GPUs' mean utilisation over the ``seconds`` before ``at`` (%), from
    Prometheus's HTTP API."""
    query = GPU_QUERY.format(ns=NAMESPACE, seconds=seconds)
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query, "time": at})
    with urllib.request.urlopen(url, timeout=30) as response:
        answer = json.load(response)
    if answer.get("status") != "success":
        raise RuntimeError(f"Prometheus refused {query!r}: {answer}")
    result = answer["data"]["result"]
    if not result:
        raise RuntimeError(f"no GPU utilisation in Prometheus for {query!r}: is DCGM scraped?")
    return float(result[0]["value"][1])


def recommended_target(
    steps: list[Step], objective_s: float, growth_per_minute: float, scale_up_minutes: float
) -> tuple[float, int]:
    """(the highest utilisation whose step held the objective with no errors, the target
    that leaves room for the growth during a scale-up, whole percent within 20-95)."""
    held = [
        s.gpu_percent
        for s in steps
        if s.load.count
        # a refused request (a 401, any 4xx) says nothing of the GPU
        and all(status == 200 for status, n in s.load.statuses.items() if n)
        and s.load.percentile_ms(99) <= objective_s * 1000
    ]
    if not held:
        raise ValueError("no step held the objective: start with less load (--steps)")
    utilisation = max(held)
    target = utilisation / (1 + growth_per_minute * scale_up_minutes)
    return utilisation, min(95, max(20, math.floor(target)))


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
        gpu = gpu_utilisation(prometheus, seconds, time.time())
        results.append(Step(concurrency, load, gpu))
        refused = load.count - load.statuses[200]
        print(
            f"concurrency {concurrency:>3}: {load.rps:7.1f} req/s, p99 "
            f"{load.percentile_ms(99):7.0f} ms, {refused} not 200, GPU {gpu:5.1f}%",
            flush=True,
        )
    return results


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
    parser.add_argument("--seconds", type=int, default=120, help="per step")
    parser.add_argument("--objective-s", type=float, default=P99_OBJECTIVE_S)
    parser.add_argument("--scale-up-minutes", type=float, required=True)
    parser.add_argument("--growth-per-minute", type=float, required=True)
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    steps = calibrate(
        args.gateway.rstrip("/"),
        args.prometheus.rstrip("/"),
        [int(s) for s in args.steps.split(",")],
        args.seconds,
        args.images,
        headers,
    )
    utilisation, target = recommended_target(
        steps, args.objective_s, args.growth_per_minute, args.scale_up_minutes
    )
    print(
        f"p99 held {args.objective_s} s up to {utilisation:.1f}% GPU utilisation; with "
        f"{args.growth_per_minute:.0%}/min growth over {args.scale_up_minutes} min of "
        f"scale-up: monitoring.targetGpuPercent = {target}"
    )


if __name__ == "__main__":
    main()
