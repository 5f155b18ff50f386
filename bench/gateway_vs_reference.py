"""Benchmark: this gateway vs the course's reference gateway, same images, same fake model.

    uv run python -m bench.gateway_vs_reference [--images DIR] [--requests N] [--concurrency C]

Prints requests/s and p50/p99 for both, and per-image preprocessing time against bare
Pillow decode + resize. Everything runs on this machine's loopback: the gateway (gunicorn,
2 gthread workers) and the reference (gunicorn, 1 sync worker, as in the course) share the
machine's cores with the image host, the fake model server and the load generator.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from pathlib import Path

from PIL import Image

from bench.backends import running_backends, url_bodies
from bench.loadgen import LoadResult, run_load
from gateway.imaging import Preprocessor
from tests.support.gateway_process import gunicorn_gateway

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "data" / "clothing-dataset-small" / "test"
FIXTURES = ROOT / "tests" / "fixtures" / "images"


def image_names(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.jpg"))


def preprocessing_cost(root: Path, names: list[str], rounds: int = 9) -> tuple[float, float, float]:
    """Per-image ms of bare Pillow decode+resize and of the gateway's Preprocessor, and
    the median over rounds of their ratio. The two alternate image by image, so drift in
    machine load hits both alike."""
    blobs = [(root / n).read_bytes() for n in names]
    pre = Preprocessor()
    nearest = Image.Resampling.NEAREST

    def bare(data: bytes) -> None:
        Image.open(io.BytesIO(data)).resize((299, 299), nearest)

    bare_ms, ours_ms, ratios = [], [], []
    for _ in range(rounds):
        t_bare = t_ours = 0.0
        for blob in blobs:
            start = time.perf_counter()
            bare(blob)
            middle = time.perf_counter()
            pre(blob)
            t_bare += middle - start
            t_ours += time.perf_counter() - middle
        bare_ms.append(t_bare / len(blobs) * 1000)
        ours_ms.append(t_ours / len(blobs) * 1000)
        ratios.append(t_ours / t_bare)
    return statistics.median(bare_ms), statistics.median(ours_ms), statistics.median(ratios)


def compare(args: argparse.Namespace, names: list[str], image_ms: float, model_ms: float) -> None:
    results: dict[str, LoadResult] = {}
    with running_backends(args.images, 1, image_ms / 1000, model_ms / 1000) as ports:
        env = {
            "TF_SERVING_HOST": f"127.0.0.1:{ports['grpc_port']}",
            "FETCH_ALLOW": "127.0.0.0/8",
            "PYTHONPATH": str(ROOT),
        }
        body = url_bodies(ports, names)
        with gunicorn_gateway(env, workers=args.workers, threads=args.threads) as (base, _):
            run_load(base, body, 40, args.concurrency)  # warm-up: channels, metadata
            results["gateway"] = run_load(base, body, args.requests, args.concurrency)
        with gunicorn_gateway(
            env,
            workers=1,
            extra_args=("--worker-class", "sync", "--threads", "1"),
            app="bench.reference_app:app",
            config=None,  # plain gunicorn, as the course ran it
        ) as (base, _):
            run_load(base, body, 40, args.concurrency)
            results["reference"] = run_load(base, body, args.requests, args.concurrency)

    print(
        f"\nimage host latency {image_ms:g} ms, model latency {model_ms:g} ms; "
        f"{args.requests} requests, {args.concurrency} concurrent clients, one image each"
    )
    print(f"{'':<34}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    labels = {
        "gateway": f"gateway (gthread {args.workers}x{args.threads})",
        "reference": "course reference (1 sync worker)",
    }
    for key, r in results.items():
        print(
            f"{labels[key]:<34}{r.rps:>9.1f}{r.percentile_ms(50):>9.1f}"
            f"{r.percentile_ms(99):>9.1f}{r.errors:>8}"
        )
    g, ref = results["gateway"], results["reference"]
    print(
        f"throughput x{g.rps / ref.rps:.2f} (target >= 3); "
        f"p99 {g.percentile_ms(99):.0f} vs {ref.percentile_ms(99):.0f} ms (target <=)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--images", type=Path, default=DATASET if DATASET.is_dir() else FIXTURES)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--image-latency-ms",
        type=float,
        default=20.0,
        help="delay the image host adds per image (a nearby CDN)",
    )
    parser.add_argument(
        "--model-latency-ms",
        type=float,
        default=10.0,
        help="delay the fake model adds per Predict (a real SavedModel took ~9 ms here)",
    )
    args = parser.parse_args()
    names = image_names(args.images)
    print(f"images: {len(names)} JPEGs from {args.images}; cores: {os.cpu_count()}")
    compare(args, names, args.image_latency_ms, args.model_latency_ms)
    compare(args, names, 0.0, 0.0)  # CPU-bound: everything on the same 2 cores, no waiting
    bare_ms, ours_ms, ratio = preprocessing_cost(args.images, names)
    print(
        f"\npreprocessing per image ({len(names)} images, median of rounds): bare Pillow "
        f"decode+resize {bare_ms:.3f} ms, gateway {ours_ms:.3f} ms, ratio {ratio:.2f} "
        "(target <= 1.2)"
    )


if __name__ == "__main__":
    main()
