"""Decoding any image at the pixel cap stays within 1.5x the 8-bit RGB size of such an
image, measured as the growth of the process's peak RSS.

A ~100 KB 16-bit greyscale PNG used to grow a worker by about 1 GB (a float64 copy at full
resolution), enough to get a 1 GiB pod OOM-killed with two workers. Each case runs in a
fresh subprocess and reads the peak from ``VmHWM`` in /proc (``ru_maxrss`` would not do:
Linux carries the parent's peak across exec).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
# The cap in these tests (big enough that the codecs' few fixed MiB do not dominate; the
# ratio to the 8-bit RGB size is what is checked).
MAX_PIXELS = 16_000_000
WIDTH, HEIGHT = 4000, 4000  # exactly at the cap
BUDGET = 1.5 * 3 * MAX_PIXELS
SLACK = 3 * 2**20  # allocator granularity and the decoders' own buffers

CHILD = """
import json, sys
from gateway.imaging import Decoder
from gateway.errors import ApiError

def peak_kib():
    with open("/proc/self/status") as status:
        return int(status.read().split("VmHWM:")[1].split()[0])

data = open(sys.argv[1], "rb").read()
decoder = Decoder(max_pixels=int(sys.argv[2]), resize_filter=sys.argv[3])
before = peak_kib()
try:
    decoder(data, (299, 299))
    status = 200
except ApiError as exc:
    status = exc.status
print(json.dumps({"growth": (peak_kib() - before) * 1024, "status": status}))
"""


def _pattern(mode: str, width: int, height: int) -> Image.Image:
    """An image with structure (so decoders work) that compresses well."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    grey = ((x + y) / 2).astype(np.uint8)
    rgb = Image.fromarray(np.dstack([grey, 255 - grey, grey // 2]), "RGB")
    if mode == "I;16":
        return Image.fromarray(grey.astype(np.uint16) * 257)
    if mode == "P+transparency":
        palette = rgb.quantize(64)
        palette.info["transparency"] = 0
        return palette
    if mode == "1":
        return rgb.convert("L").point(lambda v: 255 if v > 127 else 0).convert("1")
    return rgb.convert(mode)


def _encode(mode: str, fmt: str, orientation: int, width: int, height: int) -> bytes:
    img = _pattern(mode, width, height)
    out = io.BytesIO()
    kwargs: dict[str, object] = {}
    if mode == "P+transparency" and fmt == "PNG":
        kwargs["transparency"] = 0
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    if fmt == "WEBP":
        kwargs["quality"] = 50
    img.save(out, fmt, **kwargs)
    return out.getvalue()


FULL = (WIDTH, HEIGHT)
QUARTER = (WIDTH // 2, HEIGHT // 2)
# mode, format, EXIF orientation, resize filter, size, refused (over the budget)
CASES = [
    ("RGB", "JPEG", 1, "nearest", FULL, False),
    ("RGB", "JPEG", 6, "nearest", FULL, False),  # EXIF-rotated: no full-size rotated copy
    ("RGB", "JPEG", 6, "nearest", QUARTER, False),  # small enough to turn upright first
    ("L", "JPEG", 1, "nearest", FULL, False),
    ("CMYK", "JPEG", 1, "nearest", FULL, False),
    ("RGB", "PNG", 1, "nearest", FULL, False),
    ("RGBA", "PNG", 8, "nearest", FULL, False),
    ("LA", "PNG", 1, "nearest", FULL, False),
    ("P", "PNG", 1, "nearest", FULL, False),
    ("P+transparency", "PNG", 1, "nearest", FULL, False),
    ("I;16", "PNG", 1, "nearest", FULL, False),  # the ~100 KB PNG that grew a worker by 1 GB
    ("1", "PNG", 1, "nearest", FULL, False),
    ("P", "GIF", 1, "nearest", FULL, False),
    ("RGB", "WEBP", 1, "nearest", (1000, 1000), False),
    ("RGBA", "WEBP", 1, "nearest", (1000, 1000), False),
    ("RGB", "WEBP", 1, "nearest", FULL, True),  # libwebp's pipeline: ~17 bytes a pixel
    ("RGB", "JPEG", 3, "bilinear", QUARTER, False),
    ("RGB", "JPEG", 1, "bilinear", FULL, True),
    ("I;16", "PNG", 1, "lanczos", FULL, False),
    ("P", "PNG", 1, "bicubic", QUARTER, False),
    ("RGBA", "PNG", 1, "bilinear", FULL, True),  # needs a premultiplied copy
]


@pytest.mark.parametrize(
    ("mode", "fmt", "orientation", "resize_filter", "size", "refused"),
    CASES,
    ids=[f"{m}-{f}-o{o}-{r}-{s[0]}x{s[1]}" for m, f, o, r, s, _ in CASES],
)
def test_peak_memory_stays_within_the_budget(
    mode: str,
    fmt: str,
    orientation: int,
    resize_filter: str,
    size: tuple[int, int],
    refused: bool,
    tmp_path: Path,
) -> None:
    from gateway.imaging import FILTERS, Decoder, plan_decode

    path = tmp_path / "image"
    path.write_bytes(_encode(mode, fmt, orientation, *size))
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(MAX_PIXELS), resize_filter],
        capture_output=True, text=True, check=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    measured = json.loads(result.stdout)
    assert measured["status"] == (413 if refused else 200)
    growth = measured["growth"]
    assert growth <= BUDGET + SLACK, (
        f"peak grew by {growth / 2**20:.1f} MiB; budget {BUDGET / 2**20:.1f} MiB"
    )
    if not refused:  # the decoder's estimate bounds what it then takes (the decode gate
        # reserves it), within the same slack: Python's own allocations move the peak a bit
        with Image.open(path) as img:
            plan = plan_decode(
                img.format or fmt, img.mode, size[0] * size[1], FILTERS[resize_filter],
                Decoder(max_pixels=MAX_PIXELS).memory_budget,
                alpha=img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info,
                rotated=orientation != 1,
            )  # fmt: skip
        assert growth <= plan.peak_bytes + SLACK, (
            f"measured {growth / 2**20:.1f} MiB, estimated {plan.peak_bytes / 2**20:.1f} MiB"
        )


def test_the_budget_refuses_only_what_would_exceed_it() -> None:
    """The default filter keeps every mode and format (but WebP) within the budget at the
    cap; what needs more is refused before decoding."""
    from gateway.imaging import Decoder, plan_decode

    nearest, bilinear = Image.Resampling.NEAREST, Image.Resampling.BILINEAR
    budget = Decoder().memory_budget  # the default cap: 40 M pixels

    def peak(kind: str, mode: str, pixels: int, resample: Image.Resampling) -> int:
        return plan_decode(kind, mode, pixels, resample, budget).peak_bytes

    cap = Decoder().max_pixels
    for mode in ("RGB", "RGBA", "L", "LA", "P", "I;16", "CMYK", "1"):
        assert peak("PNG", mode, cap, nearest) <= budget
    assert peak("JPEG", "RGB", cap, bilinear) > budget
    assert peak("JPEG", "RGB", cap // 2, bilinear) <= budget
    assert peak("WEBP", "RGB", cap, nearest) > budget
    assert peak("WEBP", "RGB", 10_000_000, nearest) <= budget  # 10 MP WebP photos decode
