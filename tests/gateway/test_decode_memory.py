"""A worker's images decoded at once share one memory budget, sized from its container's
memory limit: many large images sent together wait their turn (or get 503 decoder_busy)
instead of getting the pod OOM-killed. Measured as the worker's peak RSS (VmHWM) under
gunicorn, with and without the budget."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
from PIL import Image

from gateway.decode_memory import MemoryGate, container_memory_limit
from gateway.errors import ERRORS
from gateway.failures import Failure
from gateway.settings import Settings, SettingsError
from serving_contract.gateway_env import MIB, WORKER_BASE_BYTES, image_peak_bytes
from tests.gateway.conftest import TEST_ENV
from tests.support.fake_model_server import FakeModel, serve
from tests.support.gateway_process import gunicorn_gateway


# --- where the budget comes from -------------------------------------------------------
def test_the_container_limit_is_read_from_cgroup_v2_or_v1(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("1073741824\n")
    assert container_memory_limit(v2) == 2**30
    (v2 / "memory.max").write_text("max\n")
    assert container_memory_limit(v2) is None
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("536870912\n")
    assert container_memory_limit(v1) == 2**29
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert container_memory_limit(v1) is None
    assert container_memory_limit(tmp_path / "none") is None


def _settings(env: dict[str, str], limit_mib: int | None) -> Settings:
    return Settings.from_env(
        env, memory_limit=lambda: None if limit_mib is None else limit_mib * MIB
    )


def test_the_budget_is_the_containers_limit_shared_by_the_workers() -> None:
    need = image_peak_bytes(Settings().image.max_pixels)
    assert _settings({}, None).decode_memory.budget_bytes == 2 * need  # no limit: a laptop
    one_gib = _settings({}, 1024).decode_memory
    bodies = (8 + 8) * Settings().fetch.max_bytes  # a body per request and download thread
    assert one_gib.budget_bytes == 512 * MIB - WORKER_BASE_BYTES - bodies
    assert one_gib.budget_bytes >= need
    assert "1024 MiB" in one_gib.source
    explicit = _settings({"DECODE_MEMORY_MIB": "300"}, 1024).decode_memory
    assert explicit.budget_bytes == 300 * MIB


@pytest.mark.parametrize(
    ("env", "limit_mib", "names", "enough"),
    [
        (
            {}, 512, ["memory limit (512 MiB)", "MAX_IMAGE_PIXELS=40000000", "DECODE_MEMORY_MIB"],
            {"WEB_CONCURRENCY": "1"},
        ),
        ({"WEB_CONCURRENCY": "4"}, 1024, ["memory limit (1024 MiB)", "WEB_CONCURRENCY"], {}),
        (
            {"DECODE_MEMORY_MIB": "100"}, None, ["DECODE_MEMORY_MIB: 100 MiB", "188 MiB"],
            {"MAX_IMAGE_PIXELS": "18000000"},
        ),
    ],
)  # fmt: skip
def test_too_little_memory_for_one_image_at_the_cap_stops_the_start(
    env: dict[str, str], limit_mib: int | None, names: list[str], enough: dict[str, str]
) -> None:
    with pytest.raises(SettingsError) as info:
        _settings(env, limit_mib)
    for name in names:
        assert name in str(info.value)
    # what the message suggests makes the same container enough
    _settings({**env, **enough, "WEB_CONCURRENCY": enough.get("WEB_CONCURRENCY", "2")}, limit_mib)


# --- the gate -------------------------------------------------------------------------
def test_the_gate_never_lets_reservations_exceed_its_capacity() -> None:
    gate = MemoryGate(capacity=100, wait_s=10, retry_after_s=5)
    peak, lock = [0], threading.Lock()

    def decode(nbytes: int) -> None:
        with gate.reserve(nbytes):
            with lock:
                peak[0] = max(peak[0], gate.used)
            time.sleep(0.01)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(decode, [60, 30, 45, 10, 100, 5, 70] * 6))
    assert peak[0] <= 100
    assert gate.used == 0


def test_a_decode_that_cannot_get_memory_in_time_is_503_with_retry_after() -> None:
    gate = MemoryGate(capacity=100, wait_s=0.2, retry_after_s=7)
    with gate.reserve(80):
        started = time.monotonic()
        with pytest.raises(Failure) as info, gate.reserve(30):
            pass
        assert 0.2 <= time.monotonic() - started < 1.0
    busy = info.value
    assert (ERRORS[busy.code].status, busy.code, busy.retry_after) == (503, "decoder_busy", 7)
    with pytest.raises(RuntimeError), gate.reserve(50):
        raise RuntimeError("a failed decode")
    assert gate.used == 0  # released all the same


# --- under gunicorn -------------------------------------------------------------------
MAX_PIXELS = 16_000_000
SIDE = 4000  # at the cap
CONCURRENT = 8  # every thread of the worker decoding a large image at once
PEAK = image_peak_bytes(MAX_PIXELS)  # 72 MB: what one decode may take
SLACK = 40 * MIB  # the request bodies (2 MB each), allocator granularity, gRPC buffers


def _large_jpeg() -> bytes:
    ramp = np.linspace(0, 255, SIDE, dtype=np.uint8)
    pixels = np.stack([np.tile(ramp, (SIDE, 1))] * 3, axis=-1)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=30)
    return out.getvalue()


def _peak_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0])


def _burst(budget_mib: int) -> tuple[int, list[tuple[int, str | None]]]:
    """Peak RSS growth of a one-worker gateway while CONCURRENT cap-size images arrive at
    once, and the answers."""
    image = _large_jpeg()
    server, port = serve(FakeModel(record=False))
    env = {
        **TEST_ENV,
        "TF_SERVING_HOST": f"127.0.0.1:{port}",
        "MAX_IMAGE_PIXELS": str(MAX_PIXELS),
        "DECODE_MEMORY_MIB": str(budget_mib),
    }
    try:
        with gunicorn_gateway(env, workers=1, threads=CONCURRENT) as (base, master):
            [worker] = psutil.Process(master.pid).children()

            def post() -> tuple[int, str | None]:
                response = requests.post(
                    base + "/predict", data=image, headers={"Content-Type": "image/jpeg"},
                    timeout=60,
                )  # fmt: skip
                code = None if response.ok else response.json()["error"]["code"]
                return response.status_code, code

            assert post() == (200, None)  # warm: imports, caches, the gRPC channel
            before = _peak_kib(worker.pid)
            with ThreadPoolExecutor(CONCURRENT) as pool:
                answers = list(pool.map(lambda _: post(), range(CONCURRENT)))
            return (_peak_kib(worker.pid) - before) * 1024, answers
    finally:
        server.stop(0)


@pytest.mark.timeout(180)
def test_large_images_sent_together_stay_within_the_workers_budget() -> None:
    budget_mib = 2 * PEAK // MIB + 1  # room for two decodes at the cap
    growth, answers = _burst(budget_mib)
    assert all(answer in ((200, None), (503, "decoder_busy")) for answer in answers), answers
    assert sum(status == 200 for status, _ in answers) >= CONCURRENT // 2, answers
    assert growth <= budget_mib * MIB + SLACK, f"grew {growth / MIB:.0f} MiB"

    # the control: with the budget out of the way, the same burst breaks that bound, so
    # the bound is the gate's doing (best of two: how many decodes overlap depends on the
    # machine's cores and load)
    unbounded = 0
    for _ in range(2):
        grew, answers = _burst(CONCURRENT * PEAK // MIB + 1)
        assert all(answer == (200, None) for answer in answers), answers
        unbounded = max(unbounded, grew)
    assert unbounded > budget_mib * MIB + SLACK, (unbounded / MIB, growth / MIB)
