"""How TF Serving-style server-side batching parameters trade latency for throughput on a GPU.

The project's own probe (``../shared/tools/gpu/batching_probe.py`` on the project's machines;
method and first figures in ``../shared/notes/gpu-utilisation-vs-load.md``) with the batching
parameters of ``services/tf-serving/config/batching_parameters.txt`` made command-line
options, so that other values of ``max_batch_size`` and ``batch_timeout_micros`` can be tried
on a GPU. Everything else is that probe's measurement, unchanged:

- the model: Xception (timm ``legacy_xception``), 299x299x3 uint8 in, normalised in the graph,
  10 classes, FP32 with TF32 convolutions as TensorFlow does by default, one CUDA graph per
  allowed (padded) batch size, so a compiled-graph runtime without per-op Python launch cost;
- the batcher: TF Serving's semantics. A batch opens with its first request and closes when
  it holds ``max_batch_size`` requests or ``batch_timeout_micros`` after that request arrived;
  it runs padded to the smallest allowed size that holds it; more than
  ``max_enqueued_batches x max_batch_size`` waiting requests are refused at once. The batch
  is concatenated on the host into pinned memory, as TF Serving's batcher does. One batch
  runs at a time (``num_batch_threads`` is not modelled);
- the load: first each allowed size back to back (median of 30 runs after 5), whose largest
  size gives the capacity; then open-loop Poisson arrivals at fractions of a capacity, one
  step each, the first second of each step dropped. Per step: offered and served rate,
  p50/p99 latency from scheduled arrival to result on the host, mean batch size, NVML
  utilization.gpu (mean of 100 ms samples) and the kernel-busy fraction from CUDA events.

New here, besides the options: ``--capacity-img-s`` sets the capacity the load fractions
refer to (default: this run's own back-to-back figure at its largest allowed size, as the
original probe does), so that runs with different ``max_batch_size`` can be offered the same
absolute load; the JSON records the batching parameters it ran with; and a step shorter than
2 s (a quick ``--dry`` check) drops its first half instead of its first second.

    python3 bench/gpu_batching_probe.py [--max-batch-size 32] [--batch-timeout-us 2000]
        [--allowed-batch-sizes 1,2,4,8,16,32] [--max-enqueued-batches 64]
        [--fractions 0.01,...,1.2] [--step-s 5] [--capacity-img-s N] [--dry] [--out DIR]

Needs torch, timm and nvidia-ml-py (pynvml) on a machine with an NVIDIA GPU; ``--dry`` runs
the harness on a CPU stand-in (a batch of n takes 0.6 ms + 0.12 ms x n) with numpy alone.
It runs PyTorch, not TF Serving: the batching semantics are TF Serving's, the kernels are not.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

SIDE = 299
DEFAULT_FRACTIONS = "0.01,0.03,0.05,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,1.2"

Images = npt.NDArray[np.uint8]
Logits = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Batching:
    """The batching_parameters.txt fields the probe models."""

    max_batch_size: int
    batch_timeout_us: int
    allowed_batch_sizes: tuple[int, ...]
    max_enqueued_batches: int

    @property
    def timeout_s(self) -> float:
        return self.batch_timeout_us / 1e6

    @property
    def max_queued(self) -> int:
        return self.max_enqueued_batches * self.max_batch_size

    def padded(self, n: int) -> int:
        return next(a for a in self.allowed_batch_sizes if a >= n)


def parse_batching(
    max_batch_size: int, batch_timeout_us: int, allowed: str, max_enqueued_batches: int
) -> Batching:
    sizes = tuple(int(s) for s in allowed.split(",") if s.strip())
    if not sizes or any(s <= 0 for s in sizes) or list(sizes) != sorted(set(sizes)):
        raise ValueError(f"allowed batch sizes must be positive and increasing: {allowed!r}")
    if sizes[-1] != max_batch_size:
        raise ValueError(
            f"allowed batch sizes must end at max_batch_size {max_batch_size} (as TF Serving"
            f" requires): {allowed!r}"
        )
    if batch_timeout_us < 0 or max_enqueued_batches <= 0:
        raise ValueError("batch timeout must be >= 0 and max enqueued batches > 0")
    return Batching(max_batch_size, batch_timeout_us, sizes, max_enqueued_batches)


class Engine(Protocol):
    name: str

    def run(self, pinned: Images, size: int) -> tuple[Logits, float]: ...

    def util(self) -> float | None: ...

    def pinned(self) -> Images: ...


class FakeEngine:
    """CPU stand-in to test the harness (--dry): a batch of n takes 0.6 ms + 0.12 ms * n."""

    name = "dry-run stand-in"

    def __init__(self, batching: Batching) -> None:
        self.max_batch = batching.max_batch_size

    def run(self, pinned: Images, size: int) -> tuple[Logits, float]:
        t = 0.0006 + 0.00012 * size
        time.sleep(t)
        return np.zeros((size, 10), np.float32), t

    def util(self) -> float | None:
        return None

    def pinned(self) -> Images:
        return np.empty((self.max_batch, SIDE, SIDE, 3), np.uint8)


class GpuEngine:
    def __init__(self, batching: Batching) -> None:
        import timm
        import torch

        self.torch = torch
        self.max_batch = batching.max_batch_size
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = True
        dev = torch.device("cuda")
        model = None
        self.arch = ""
        for arch in ("legacy_xception", "xception", "xception41"):
            try:
                model = timm.create_model(arch, pretrained=False, num_classes=10)
                self.arch = arch
                break
            except Exception:  # noqa: BLE001 - an older or newer timm names it otherwise
                continue
        assert model is not None, "no Xception in this timm"
        model = model.eval().to(dev).to(memory_format=torch.channels_last)
        self.name = (
            f"{torch.cuda.get_device_name(0)}, torch {torch.__version__},"
            f" timm {timm.__version__} {self.arch}"
        )
        self.static_in: dict[int, Any] = {}
        self.static_out: dict[int, Any] = {}
        self.graphs: dict[int, Any] = {}

        def forward(x: Any) -> Any:  # x: uint8 NHWC on the GPU
            y = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
            return model(y.contiguous(memory_format=torch.channels_last))

        with torch.no_grad():
            for size in batching.allowed_batch_sizes:
                xin = torch.randint(0, 256, (size, SIDE, SIDE, 3), dtype=torch.uint8, device=dev)
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(3):
                        forward(xin)
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    out = forward(xin)
                self.static_in[size], self.static_out[size], self.graphs[size] = xin, out, g
            # correctness: graph replay equals eager on fresh random input
            check = batching.allowed_batch_sizes[len(batching.allowed_batch_sizes) // 2]
            x = torch.randint(0, 256, (check, SIDE, SIDE, 3), dtype=torch.uint8, device=dev)
            self.static_in[check].copy_(x)
            self.graphs[check].replay()
            ref = forward(x)
            self.graph_vs_eager = float((self.static_out[check] - ref).norm() / ref.norm())
        self.start_ev = torch.cuda.Event(enable_timing=True)
        self.end_ev = torch.cuda.Event(enable_timing=True)
        import pynvml

        pynvml.nvmlInit()
        self.nvml = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)

    def run(self, pinned: Images, size: int) -> tuple[Logits, float]:
        torch = self.torch
        src = torch.from_numpy(pinned[:size])
        with torch.no_grad():
            self.static_in[size].copy_(src, non_blocking=True)
            self.start_ev.record()
            self.graphs[size].replay()
            self.end_ev.record()
            out: Logits = self.static_out[size].cpu().numpy()  # synchronises
        return out, float(self.start_ev.elapsed_time(self.end_ev)) / 1000.0

    def util(self) -> float | None:
        return float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def pinned(self) -> Images:
        t = self.torch.empty((self.max_batch, SIDE, SIDE, 3), dtype=self.torch.uint8)
        arr: Images = t.pin_memory().numpy()
        return arr


# (image index, scheduled arrival, enqueue time)
Request = tuple[int, float, float]


class Server:
    """TF Serving's batching semantics: a batch opens with its first request and closes when
    full or when batch_timeout has passed since that request arrived; it runs padded to
    the smallest allowed size; more than max_queued waiting requests are refused at once."""

    def __init__(self, engine: Engine, batching: Batching, images: Images, pinned: Images) -> None:
        self.engine, self.batching, self.images, self.pinned = engine, batching, images, pinned
        self.q: queue.Queue[Request] = queue.Queue()
        self.done: list[tuple[float, float]] = []  # (scheduled arrival, completion)
        self.batches: list[tuple[float, int, float]] = []  # (completion, n, kernel seconds)
        self.refused = 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def submit(self, img: int, t_sched: float) -> None:
        if self.q.qsize() >= self.batching.max_queued:
            self.refused += 1
            return
        self.q.put((img, t_sched, time.perf_counter()))

    def _loop(self) -> None:
        max_batch = self.batching.max_batch_size
        while not self.stop.is_set():
            try:
                first = self.q.get(timeout=0.05)
            except queue.Empty:
                continue
            batch = [first]
            deadline = first[2] + self.batching.timeout_s
            while len(batch) < max_batch:
                try:
                    batch.append(self.q.get_nowait())
                    continue
                except queue.Empty:
                    pass
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    batch.append(self.q.get(timeout=remaining))
                except queue.Empty:
                    break
            n = len(batch)
            size = self.batching.padded(n)
            for i, (img, _, _) in enumerate(batch):
                np.copyto(self.pinned[i], self.images[img])
            _, kernel_s = self.engine.run(self.pinned, size)
            t_done = time.perf_counter()
            self.done.extend((b[1], t_done) for b in batch)
            self.batches.append((t_done, n, kernel_s))


def sampler(engine: Engine, samples: list[tuple[float, float]], stop: threading.Event) -> None:
    while not stop.is_set():
        u = engine.util()
        if u is not None:
            samples.append((time.perf_counter(), u))
        time.sleep(0.1)


def back_to_back(engine: Engine, batching: Batching, images: Images, pinned: Images) -> list[Any]:
    """Each allowed size back to back: time per batch and images/s (median of 30 after 5)."""
    sweep = []
    for size in batching.allowed_batch_sizes:
        for i in range(size):
            np.copyto(pinned[i], images[i % len(images)])
        walls, kernels = [], []
        for it in range(35):
            t = time.perf_counter()
            _, k = engine.run(pinned, size)
            if it >= 5:
                walls.append(time.perf_counter() - t)
                kernels.append(k)
        w = float(np.median(walls))
        k = float(np.median(kernels))
        sweep.append(
            {
                "size": size,
                "wall_ms": round(w * 1e3, 3),
                "kernel_ms": round(k * 1e3, 3),
                "img_per_s": round(size / w, 1),
            }
        )
        print(
            f"size {size:3d}: {w * 1e3:7.3f} ms per batch ({k * 1e3:7.3f} ms kernels),"
            f" {size / w:8.1f} img/s",
            flush=True,
        )
    return sweep


def load_step(
    engine: Engine,
    batching: Batching,
    images: Images,
    pinned: Images,
    samples: list[tuple[float, float]],
    fraction: float,
    capacity: float,
    step_s: float,
) -> dict[str, Any]:
    """One step of open-loop Poisson arrivals at fraction x capacity."""
    rate = capacity * fraction
    srv = Server(engine, batching, images, pinned)
    t_start = time.perf_counter()
    t_next = t_start
    t_end = t_start + step_s
    rnd = random.Random(int(fraction * 1000))  # arrival times, not secrets
    k = 0
    while True:
        now = time.perf_counter()
        if now >= t_end:
            break
        while t_next <= now:
            srv.submit(k % len(images), t_next)
            k += 1
            t_next += rnd.expovariate(rate)
        time.sleep(max(0.0, min(t_next - time.perf_counter(), 0.001)))
    offered_n = k
    time.sleep(0.3)
    srv.stop.set()
    srv.t.join(timeout=5)
    # skip the first second (half the step where a step is under 2 s, e.g. a --dry check)
    w0 = t_start + min(1.0, step_s / 2)
    lat = np.array([d - a for a, d in srv.done if w0 <= a < t_end])
    served = sum(1 for a, d in srv.done if w0 <= d < t_end) / (t_end - w0)
    bs = [n for (td, n, _) in srv.batches if w0 <= td < t_end]
    busy = sum(ks for (td, _, ks) in srv.batches if w0 <= td < t_end) / (t_end - w0)
    us = [u for (ts, u) in samples if w0 + 0.2 <= ts < t_end]
    has_lat = len(lat) > 0
    return {
        "fraction": fraction,
        "offered_per_s": round(offered_n / step_s, 1),
        "served_per_s": round(served, 1),
        "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 2) if has_lat else None,
        "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 2) if has_lat else None,
        "mean_batch": round(float(np.mean(bs)), 2) if bs else None,
        "kernel_busy_pct": round(100 * busy, 1),
        "nvml_util_pct": round(float(np.mean(us)), 1) if us else None,
        "refused": srv.refused,
        "unfinished": offered_n - len(srv.done) - srv.refused,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--batch-timeout-us", type=int, default=2000)
    ap.add_argument(
        "--allowed-batch-sizes",
        default="1,2,4,8,16,32",
        help="comma list, increasing, ending at --max-batch-size",
    )
    ap.add_argument("--max-enqueued-batches", type=int, default=64)
    ap.add_argument("--fractions", default=DEFAULT_FRACTIONS, help="load steps, x capacity")
    ap.add_argument("--step-s", type=float, default=5.0, help="seconds per load step")
    ap.add_argument(
        "--capacity-img-s",
        type=float,
        default=None,
        help="capacity the fractions refer to (default: this run's back-to-back figure at"
        " the largest allowed size)",
    )
    ap.add_argument("--dry", action="store_true", help="CPU stand-in instead of the GPU")
    ap.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for the JSON")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    batching = parse_batching(
        args.max_batch_size,
        args.batch_timeout_us,
        args.allowed_batch_sizes,
        args.max_enqueued_batches,
    )
    fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    if args.step_s <= 0:
        raise SystemExit("--step-s must be positive")
    rng = np.random.default_rng(7)
    images: Images = rng.integers(0, 256, (64, SIDE, SIDE, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    engine: Engine = FakeEngine(batching) if args.dry else GpuEngine(batching)
    pinned = engine.pinned()
    result: dict[str, Any] = {
        "engine": engine.name,
        "batching": asdict(batching),
        "setup_s": round(time.perf_counter() - t0, 1),
        "graph_vs_eager_rel": getattr(engine, "graph_vs_eager", None),
    }
    print(
        f"# {engine.name}; batching {asdict(batching)}; setup {result['setup_s']} s;"
        f" graph vs eager rel {result['graph_vs_eager_rel']}",
        flush=True,
    )

    # 1. each allowed size back to back
    sweep = back_to_back(engine, batching, images, pinned)
    result["sweep"] = sweep
    own_capacity = float(sweep[-1]["img_per_s"])
    capacity = args.capacity_img_s if args.capacity_img_s else own_capacity
    print(f"# load fractions x {capacity:.1f} img/s (own back-to-back {own_capacity:.1f})")

    # 2. open-loop Poisson load at fractions of capacity
    samples: list[tuple[float, float]] = []
    stop_s = threading.Event()
    threading.Thread(target=sampler, args=(engine, samples, stop_s), daemon=True).start()
    steps = []
    for f in fractions:
        step = load_step(engine, batching, images, pinned, samples, f, capacity, args.step_s)
        steps.append(step)
        print(json.dumps(step), flush=True)
    stop_s.set()
    result["capacity_img_per_s"] = capacity
    result["own_capacity_img_per_s"] = own_capacity
    result["step_s"] = args.step_s
    result["steps"] = steps
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "batching_probe.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    print("\nload  offered/s  served/s   p50 ms   p99 ms  batch  busy%  util%")
    for s in steps:
        print(
            f"{s['fraction']:4.2f} {s['offered_per_s']:10.1f} {s['served_per_s']:9.1f}"
            f" {s['p50_ms']!s:>8} {s['p99_ms']!s:>8} {s['mean_batch']!s:>6}"
            f" {s['kernel_busy_pct']:6.1f} {s['nvml_util_pct']!s:>6}"
        )


if __name__ == "__main__":
    main()
