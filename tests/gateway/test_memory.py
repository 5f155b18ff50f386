"""Decoding any image at the pixel cap stays within 1.5x the 8-bit RGB size of such an
image (plus the codecs' fixed buffers), measured as the growth of the process's peak RSS.

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
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
# The cap in these tests (big enough that the codecs' few fixed MiB do not dominate; the
# ratio to the 8-bit RGB size is what is checked).
MAX_PIXELS = 16_000_000
WIDTH, HEIGHT = 4000, 4000  # exactly at the cap
BUDGET = 1.5 * 3 * MAX_PIXELS + 16 * 2**20
SLACK = 3 * 2**20  # allocator granularity and the decoders' own buffers

CHILD = """
import json, sys
from gateway.imaging import Decoder
from gateway.errors import ERRORS
from gateway.failures import Failure

def peak_kib():
    with open("/proc/self/status") as status:
        return int(status.read().split("VmHWM:")[1].split()[0])

data = open(sys.argv[1], "rb").read()
decoder = Decoder(max_pixels=int(sys.argv[2]), resize_filter=sys.argv[3])
before = peak_kib()
try:
    decoder(data, (299, 299))
    status = 200
except Failure as exc:
    status = ERRORS[exc.code].status
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
    if fmt.startswith("PJPEG"):  # progressive, 4:4:4 or 4:2:0
        kwargs.update(progressive=True, subsampling=0 if fmt.endswith("444") else 2)
        fmt = "JPEG"
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
    ("RGB", "JPEG", 1, "bilinear", FULL, False),  # refused at the default cap (40 M)
    ("I;16", "PNG", 1, "lanczos", FULL, False),
    ("P", "PNG", 1, "bicubic", QUARTER, False),
    ("RGBA", "PNG", 1, "bilinear", FULL, True),  # needs a premultiplied copy
    # progressive JPEGs: libjpeg keeps every coefficient of the image (2 bytes each)
    ("RGB", "PJPEG420", 1, "nearest", QUARTER, False),
    ("RGB", "PJPEG444", 6, "nearest", QUARTER, False),
    ("CMYK", "PJPEG444", 1, "nearest", QUARTER, False),
    ("RGB", "PJPEG420", 1, "nearest", FULL, True),  # ~3 bytes a pixel beside the image
    ("CMYK", "PJPEG444", 1, "nearest", FULL, True),  # ~8
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
    from gateway.imaging import Decoder

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
        decoder = Decoder(max_pixels=MAX_PIXELS, resize_filter=resize_filter)
        with Image.open(path) as img:
            plan = decoder.plan(img, path.read_bytes(), img.format or fmt)
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


def _progressive_jpeg(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    _pattern("RGB", *size).save(out, "JPEG", progressive=True)
    return out.getvalue()


def test_a_jpeg_of_endless_scans_is_refused_before_decoding() -> None:
    """Each scan is a pass over the whole image: repeating one small scan thousands of
    times made a few hundred KB cost minutes of CPU. Refused from its markers, at once."""
    from gateway.failures import Failure
    from gateway.imaging import MAX_JPEG_SCANS, Decoder

    data = _progressive_jpeg((2000, 2000))
    last_scan = data[data.rindex(b"\xff\xda") : data.rindex(b"\xff\xd9")]
    bomb = data[: data.rindex(b"\xff\xd9")] + last_scan * 1000 + b"\xff\xd9"
    started = time.process_time()
    with pytest.raises(Failure) as refused:
        Decoder()(bomb, (299, 299))
    assert refused.value.code == "image_too_large"
    assert f"more than {MAX_JPEG_SCANS} scans" in refused.value.message
    assert time.process_time() - started < 0.5
    # what encoders write decodes: libjpeg's progression (10 scans), the same repeated to
    # the limit
    assert Decoder()(data, (299, 299)).shape == (299, 299, 3)
    repeats = MAX_JPEG_SCANS - 10
    at_limit = data[: data.rindex(b"\xff\xd9")] + last_scan * repeats + b"\xff\xd9"
    assert Decoder()(at_limit, (299, 299)).shape == (299, 299, 3)


def test_scans_are_counted_from_the_markers_not_every_byte_pair() -> None:
    """A thumbnail or profile inside an APPn segment holds SOS bytes of its own."""
    from gateway.jpeg import scan_count

    baseline = io.BytesIO()
    _pattern("RGB", 64, 48).save(baseline, "JPEG")
    thumbnail = baseline.getvalue()
    segment = b"\xff\xef" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail  # APP15
    with_thumbnail = thumbnail[:2] + segment + thumbnail[2:]
    assert with_thumbnail.count(b"\xff\xda") == 2
    assert scan_count(with_thumbnail, stop_after=100) == 1
    assert scan_count(_progressive_jpeg((64, 48)), stop_after=100) == 10
    assert scan_count(_progressive_jpeg((64, 48)), stop_after=3) == 4  # stops past the limit


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_planning_decodes_nothing(fmt: str) -> None:
    """The plan (and so the memory check and the decode gate) comes before any pixel: a
    PNG's EXIF lookup used to decode the whole image first, outside both."""
    from gateway.imaging import Decoder

    out = io.BytesIO()
    _pattern("RGB" if fmt != "GIF" else "P", 640, 480).save(out, fmt)
    with Image.open(io.BytesIO(out.getvalue())) as img:
        plan = Decoder().plan(img, out.getvalue(), fmt)
        assert img._im is None, "the image was decoded while planning"  # Pillow's pixels
    assert plan.orientation == 1
