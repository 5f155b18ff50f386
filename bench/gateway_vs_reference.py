"""Benchmark: the gateway before and after the model carried its input contract, against
the course's reference gateway, on the same images.

    uv run python -m bench.gateway_vs_reference [--images DIR] [--requests N] [--concurrency C]

"before": the model takes preprocessed float32 (the course's SavedModel), so the gateway
scales every pixel and sends 4 bytes each. "after": the model exported by ``model_tools``
takes uint8 pixels and normalises them in its graph, so the gateway sends 1 byte each.
Printed, in one run: bytes on the wire per image, gateway CPU per request, per-image
preprocessing against bare Pillow decode + resize, and throughput / latency of both against
the course's gateway. Everything runs on this machine's loopback: the gateway (gunicorn, 2
gthread workers) and the reference (gunicorn, 1 sync worker, as in the course) share the
cores with the image host, the fake model server and the load generator.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from bench.backends import COURSE_GATEWAY_ENV, running_backends, url_bodies
from bench.cpu_per_request import cpu_ms
from bench.loadgen import LoadResult, run_load
from gateway._proto.tensorflow_serving.apis import predict_pb2
from gateway.imaging import Decoder, scale_pixels
from gateway.tensors import fill_image_tensor
from tests.support.gateway_process import gunicorn_gateway

ROOT = Path(__file__).resolve().parents[1]
# The images `make bench` sends unless --images says: the 10 CC0 dataset JPEGs in the
# repository, so every clone measures the same set.
FIXTURES = ROOT / "tests" / "fixtures" / "images"
SIZE = (299, 299)
# contract served -> (label, extra gateway environment)
GATEWAYS = {
    "course": ("gateway before (float32)", COURSE_GATEWAY_ENV),
    "export": ("gateway after (uint8)", {}),
}


def image_names(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.jpg"))


def decode_before(data: bytes) -> np.ndarray:
    return scale_pixels(Decoder()(data, SIZE), "tf")


def decode_after(data: bytes) -> np.ndarray:
    return Decoder()(data, SIZE)


def preprocessing_cost(
    root: Path, names: list[str], ours: Callable[[bytes], np.ndarray], rounds: int = 9
) -> tuple[float, float, float]:
    """Per-image ms of bare Pillow decode+resize and of ``ours``, and the median over rounds
    of their ratio. The two alternate image by image, so drift in machine load hits both."""
    blobs = [(root / n).read_bytes() for n in names]
    nearest = Image.Resampling.NEAREST

    def bare(data: bytes) -> None:
        Image.open(io.BytesIO(data)).resize(SIZE, nearest)

    bare_ms, ours_ms, ratios = [], [], []
    for _ in range(rounds):
        t_bare = t_ours = 0.0
        for blob in blobs:
            start = time.perf_counter()
            bare(blob)
            middle = time.perf_counter()
            ours(blob)
            t_bare += middle - start
            t_ours += time.perf_counter() - middle
        bare_ms.append(t_bare / len(blobs) * 1000)
        ours_ms.append(t_ours / len(blobs) * 1000)
        ratios.append(t_ours / t_bare)
    return statistics.median(bare_ms), statistics.median(ours_ms), statistics.median(ratios)


def wire_bytes(data: bytes, decode: Callable[[bytes], np.ndarray]) -> int:
    """Serialized size of the PredictRequest the gateway sends for one image."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "clothing-model"
    fill_image_tensor(request.inputs["image"], decode(data)[np.newaxis])
    return request.ByteSize()


def compare(args: argparse.Namespace, names: list[str], image_ms: float, model_ms: float) -> None:
    results: dict[str, LoadResult] = {}
    delays = (image_ms / 1000, model_ms / 1000)
    for contract, (label, extra_env) in GATEWAYS.items():
        with running_backends(args.images, 1, *delays, contract=contract) as ports:
            env = {
                "TF_SERVING_HOST": f"127.0.0.1:{ports['grpc_port']}",
                "FETCH_ALLOW": "127.0.0.0/8",
                "PYTHONPATH": str(ROOT),
                **extra_env,
            }
            body = url_bodies(ports, names)
            with gunicorn_gateway(env, workers=args.workers, threads=args.threads) as (base, _):
                run_load(base, body, 40, args.concurrency)  # warm-up: channels, metadata
                results[label] = run_load(base, body, args.requests, args.concurrency)
            if contract == "course":  # the course's gateway calls the course's model
                with gunicorn_gateway(
                    env,
                    workers=1,
                    extra_args=("--worker-class", "sync", "--threads", "1"),
                    app="bench.reference_app:app",
                    config=None,  # plain gunicorn, as the course ran it
                ) as (base, _):
                    run_load(base, body, 40, args.concurrency)
                    reference = run_load(base, body, args.requests, args.concurrency)

    print(
        f"\nimage host latency {image_ms:g} ms, model latency {model_ms:g} ms; "
        f"{args.requests} requests, {args.concurrency} concurrent clients, one image each"
    )
    print(f"{'':<34}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'vs course':>11}")
    for label, r in [*results.items(), ("course reference (1 sync worker)", reference)]:
        print(
            f"{label:<34}{r.rps:>9.1f}{r.percentile_ms(50):>9.1f}"
            f"{r.percentile_ms(99):>9.1f}{r.errors:>8}{r.rps / reference.rps:>10.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--images", type=Path, default=FIXTURES)
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

    sample = (args.images / names[0]).read_bytes()
    before_bytes, after_bytes = wire_bytes(sample, decode_before), wire_bytes(sample, decode_after)
    print(
        f"\nbytes on the wire per image (PredictRequest): before {before_bytes:,}, "
        f"after {after_bytes:,} ({before_bytes / after_bytes:.1f}x less)"
    )
    before_cpu, after_cpu = cpu_ms("heap", "course"), cpu_ms("heap", "export")
    print(
        f"gateway CPU per request (gateway + model stand-in + image host, one process): "
        f"before {before_cpu:.2f} ms, after {after_cpu:.2f} ms"
    )
    for label, decode in (("before", decode_before), ("after", decode_after)):
        bare_ms, ours_ms, ratio = preprocessing_cost(args.images, names, decode)
        print(
            f"preprocessing per image {label}: {ours_ms:.3f} ms vs bare Pillow decode+resize "
            f"{bare_ms:.3f} ms, ratio {ratio:.2f} (target <= 1.2; median of rounds)"
        )

    compare(args, names, args.image_latency_ms, args.model_latency_ms)
    compare(args, names, 0.0, 0.0)  # CPU-bound: everything on the same 2 cores, no waiting


if __name__ == "__main__":
    main()
