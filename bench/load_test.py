"""Load test: the gateway under gunicorn in front of model servers, pushed with a fixed
number of requests (and a time cap); prints sustained throughput, latency percentiles,
errors, and the gateway's memory at the start and the end.

    uv run python -m bench.load_test [--requests 3000] [--concurrency 16] [--servers 3]

The model servers are the test gRPC stand-ins on 127.0.0.1..3 behind one round_robin
channel (as the headless Service is in production); they and the image host add the
latencies given (defaults: 20 ms per image, 10 ms per Predict). Everything runs on this
machine's loopback and shares its cores.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import psutil

from bench.backends import running_backends, url_bodies
from bench.gateway_vs_reference import FIXTURES, image_names
from bench.loadgen import LoadResult, run_load
from tests.support.gateway_process import gunicorn_gateway

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = 5


def gateway_rss_mb(master_pid: int) -> float:
    master = psutil.Process(master_pid)
    processes = [master, *master.children(recursive=True)]
    return sum(p.memory_info().rss for p in processes) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=FIXTURES)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--image-latency-ms", type=float, default=20.0)
    parser.add_argument("--model-latency-ms", type=float, default=10.0)
    args = parser.parse_args()
    names = image_names(args.images)

    delays = (args.image_latency_ms / 1000, args.model_latency_ms / 1000)
    with running_backends(args.images, args.servers, *delays) as info:
        env = {
            "TF_SERVING_HOST": info["grpc_target"],
            "GRPC_LB_POLICY": "round_robin",
            "FETCH_ALLOW": "127.0.0.0/8",
            "PYTHONPATH": str(ROOT),
        }
        body = url_bodies(info, names)
        with gunicorn_gateway(env, workers=args.workers, threads=args.threads) as (base, master):
            run_load(base, body, 200, args.concurrency)  # warm-up: channels, metadata, caches
            rss = [gateway_rss_mb(master.pid)]
            combined = LoadResult()
            for part in range(CHECKPOINTS):  # the same load, in slices, to sample memory
                count = args.requests // CHECKPOINTS + (part < args.requests % CHECKPOINTS)
                budget = args.max_seconds / CHECKPOINTS
                result = run_load(base, body, count, args.concurrency, budget)
                combined.latencies_s += result.latencies_s
                combined.statuses += result.statuses
                combined.elapsed_s += result.elapsed_s
                rss.append(gateway_rss_mb(master.pid))
    elapsed, statuses = combined.elapsed_s, combined.statuses
    print(
        f"gateway: {args.workers} gthread workers x {args.threads} threads on {os.cpu_count()} "
        f"cores; {args.servers} model servers (round_robin); image +{args.image_latency_ms:g} ms, "
        f"model +{args.model_latency_ms:g} ms; {args.concurrency} concurrent clients"
    )
    print(f"requests      {combined.count} in {elapsed:.1f} s")
    print(f"throughput    {combined.rps:.1f} req/s sustained")
    p50, p95, p99 = (combined.percentile_ms(q) for q in (50, 95, 99))
    print(f"latency       p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms")
    print(f"statuses      {dict(sorted(statuses.items()))}; 5xx/failed: {combined.errors}")
    series = ", ".join(f"{mb:.0f}" for mb in rss)
    print(f"gateway RSS   {series} MB (start, then after each {100 // CHECKPOINTS}% of requests)")
    print(f"              start {rss[0]:.1f} MB, end {rss[-1]:.1f} MB")


if __name__ == "__main__":
    main()
