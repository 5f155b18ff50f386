"""Bytes -> the pixels the model's signature asks for: sniff, decode, resize, normalise the
colour mode, orient, and (only for models that take preprocessed float32) scale.

For an ordinary RGB JPEG the pixels are bit-identical to Keras
``load_img(path, target_size=size, interpolation="nearest")``, and the scaled tensor to
``keras.applications.<model>.preprocess_input`` of it. Beyond what Keras does, EXIF
orientation is applied, transparency is flattened onto white (Keras would expose whatever
colour hides under transparent pixels, usually black) and 16-bit greyscale is scaled to 8
bits.

Memory is bounded whatever the image: at full resolution the image stays in its decoded
mode (the resize happens there; the colour conversion runs on the small result), and
before decoding, the peak it would need is compared with a budget of 1.5x the 8-bit RGB
size of an image at the pixel cap (``MAX_IMAGE_PIXELS``). Only an image whose mode forces
full-size copies (alpha with a non-``nearest`` resize filter), a WebP (libwebp's own
canvas) or a progressive JPEG (libjpeg's whole-image coefficient buffer, ``gateway.jpeg``)
can be over it, and is refused as ``image_too_large`` before it costs anything; so is a
JPEG of more scans than encoders write, whose CPU cost has no bound. An EXIF-rotated image is turned
upright before the resize when a full-size copy fits the budget, else the small result is.
Nothing is decoded before that check: the EXIF orientation is read from the header only.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from gateway import jpeg
from gateway.decode_memory import MemoryGate
from gateway.failures import Failure
from serving_contract.gateway_env import (
    EXIF_TRANSPOSE,
    MAX_IMAGE_PIXELS,
    MIB,
    RESIZE_FILTER,
    image_peak_bytes,
    mib,
)
from serving_contract.model import CAFFE_MEAN_RGB, TORCH_MEAN, TORCH_STD

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)
# RESIZE_FILTER's values (the settings accept these names) and the Pillow filter of each.
FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
_TORCH_MEAN = np.array(TORCH_MEAN, dtype=np.float32)
_TORCH_STD = np.array(TORCH_STD, dtype=np.float32)
_CAFFE_MEAN_BGR = np.array(CAFFE_MEAN_RGB[::-1], dtype=np.float32)
_WHITE = (255, 255, 255)
_ORIENTATION = 0x0112  # EXIF tag
# EXIF orientation -> the transpose that makes the image upright.
_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = (5, 6, 7, 8)
# Bytes per pixel of a decoded image, by mode, as Pillow holds it (RGB takes 4, like RGBA).
_DECODED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_WIDE_MODE_BYTES = 4
# Measured by tests/gateway/test_memory.py (peak RSS growth, fitted over 0.5-16 M pixels)
# and rounded up: the codecs' own buffers (JPEG and PNG: 2.5-5 MiB), a non-nearest resize's
# coefficient tables and intermediate (~0.7 bytes a pixel), WebP's whole pipeline
# (libwebp's RGBA canvas, the frame's bytes and Pillow's copy: ~8 MiB plus ~16 a pixel),
# and an upright copy of a rotated image (its decoded size plus ~4 MiB).
_CODEC_BYTES, _CODEC_FIXED = 0.05, 6 * MIB
_WEBP_BYTES, _WEBP_FIXED = 16.5, 9 * MIB
_RESAMPLE_BYTES = 1.0
_UPRIGHT_FIXED = 4 * MIB
# Above what any encoder writes (libjpeg's progression: 10 scans, 18 for CMYK); each scan
# is a pass over the whole image's coefficients.
MAX_JPEG_SCANS = 100

Pixels = npt.NDArray[np.uint8]


def sniff(data: bytes) -> str | None:
    """The image format the bytes start with (JPEG, PNG, GIF, WEBP), else None."""
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def scale_pixels(pixels: npt.NDArray[np.uint8], mode: str) -> npt.NDArray[np.float32]:
    """Keras ``imagenet_utils.preprocess_input`` for RGB uint8 images ``(..., H, W, 3)``.

    The same float32 operations in the same order as Keras, so the values are identical.
    """
    x = pixels.astype(np.float32)
    if mode == "tf":
        x /= np.float32(127.5)
        x -= np.float32(1.0)
    elif mode == "torch":
        x /= np.float32(255.0)
        x -= _TORCH_MEAN
        x /= _TORCH_STD
    elif mode == "caffe":
        x = x[..., ::-1] - _CAFFE_MEAN_BGR  # RGB -> BGR, then zero-centre per channel
    elif mode != "none":
        raise ValueError(f"unknown preprocessing mode {mode!r}")
    return x


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )


def to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB version of ``img`` whatever its mode (called on the resized image)."""
    if img.mode == "RGB":
        return img
    if _has_alpha(img):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode.startswith("I") or img.mode == "F":
        # 16/32-bit greyscale: Pillow's convert() would clip everything above 255.
        wide = np.asarray(img, dtype=np.float64)
        scale = 255.0 / 65535.0 if img.mode != "F" else 1.0
        grey = np.clip(wide * scale, 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return img.convert("RGB")


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation, 1 (upright) unless the image says 2-8. Only EXIF in the header
    counts (a PNG's eXIf chunk after the image data, which browsers ignore too, would take
    a whole decode to reach, before the memory check); an image without is upright, and
    broken or odd EXIF (a rational, a string, a huge number, a malformed block) as well."""
    if "exif" not in img.info:
        return 1
    try:
        value = img.getexif().get(_ORIENTATION, 1)
    except Exception:  # noqa: BLE001  (a third-party parser of hostile bytes: optional data)
        return 1
    return value if type(value) is int and value in _ORIENT else 1


@dataclass(frozen=True)
class DecodePlan:
    """How an image will be decoded and the most memory that takes (an estimate the memory
    tests check against measured peaks)."""

    peak_bytes: int
    orientation: int  # EXIF orientation (1: upright)
    upright_first: bool  # turn an EXIF-rotated image upright before resizing


def plan_decode(
    kind: str,
    mode: str,
    pixels: int,
    resample: Image.Resampling,
    budget: int,
    *,
    alpha: bool = False,
    orientation: int = 1,
    coefficients: int = 0,
) -> DecodePlan:
    """``coefficients``: the bytes of a JPEG's whole-image coefficient buffer, if its
    decoder needs one (``gateway.jpeg``)."""
    decoded = _DECODED_BYTES.get(mode, _WIDE_MODE_BYTES)
    if kind == "WEBP":
        per_pixel, fixed = _WEBP_BYTES, _WEBP_FIXED
    else:
        per_pixel, fixed = decoded + _CODEC_BYTES, _CODEC_FIXED
    if resample != Image.Resampling.NEAREST:
        per_pixel += _RESAMPLE_BYTES
        if mode in ("RGBA", "LA"):  # Pillow premultiplies into a full-size copy
            per_pixel += _WIDE_MODE_BYTES
        elif mode == "1":  # converted to L first (Pillow would resize it nearest)
            per_pixel += 1
        elif mode in ("P", "PA"):  # converted first, to RGBA (then premultiplied) or RGB
            per_pixel += 2 * _WIDE_MODE_BYTES if alpha else _WIDE_MODE_BYTES
    peak = int(per_pixel * pixels) + fixed + coefficients
    # Upright first (a full-size copy) when it fits: then the pixels are exactly the ones
    # the upright photo gives; else the small result is rotated.
    with_copy = peak + decoded * pixels + _UPRIGHT_FIXED
    upright_first = orientation in _ORIENT and with_copy <= budget
    return DecodePlan(with_copy if upright_first else peak, orientation, upright_first)


@dataclass(frozen=True)
class Decoder:
    resize_filter: str = RESIZE_FILTER.default
    exif_transpose: bool = EXIF_TRANSPOSE.default
    max_pixels: int = MAX_IMAGE_PIXELS.default
    # Shared by the process's threads: a decode waits for its planned peak to be free.
    gate: MemoryGate | None = None

    def __post_init__(self) -> None:
        if self.resize_filter not in FILTERS:
            raise ValueError(f"unknown resize filter {self.resize_filter!r}")

    @property
    def memory_budget(self) -> int:
        return image_peak_bytes(self.max_pixels)

    def __call__(self, data: bytes, size: tuple[int, int]) -> Pixels:
        """(height, width, 3) uint8 RGB pixels; a Failure for non-images
        (``unsupported_media_type``), bombs (``image_too_large``) and bad data
        (``undecodable_image``)."""
        kind = sniff(data)
        if kind is None:
            raise Failure("unsupported_media_type", "not a JPEG, PNG, WebP or GIF image")
        try:
            return self._decode(data, kind, size)
        except Image.DecompressionBombError as exc:
            raise Failure(
                "image_too_large", f"image has more than {self.max_pixels} pixels", detail=str(exc)
            ) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
            # Pillow's words may name its objects' memory addresses: for the log only.
            raise Failure(
                "undecodable_image", f"cannot decode the {kind} image", detail=repr(exc)
            ) from None

    def plan(self, img: Image.Image, data: bytes, kind: str) -> DecodePlan:
        """The decode of an opened (header-only) image, before any pixel is decoded."""
        coefficients = 0
        if kind == "JPEG":
            scans = jpeg.scan_count(data, stop_after=MAX_JPEG_SCANS)
            if scans > MAX_JPEG_SCANS:
                raise Failure(
                    "image_too_large",
                    f"a JPEG of more than {MAX_JPEG_SCANS} scans (encoders write at most a "
                    "few dozen): re-encode it",
                )
            if scans > 1 or img.info.get("progressive"):
                layers = getattr(img, "layer", None) or [(0, 1, 1, 0)] * 4
                coefficients = jpeg.coefficient_bytes(img.size, [(h, v) for _, h, v, _ in layers])
        return plan_decode(
            kind, img.mode, img.size[0] * img.size[1], FILTERS[self.resize_filter],
            self.memory_budget, alpha=_has_alpha(img),
            orientation=exif_orientation(img) if self.exif_transpose else 1,
            coefficients=coefficients,
        )  # fmt: skip

    def _decode(self, data: bytes, kind: str, size: tuple[int, int]) -> Pixels:
        # Only the header is read here: the limits are checked before decoding.
        img: Image.Image = Image.open(io.BytesIO(data), formats=[kind])
        w, h = img.size
        if w * h > self.max_pixels:
            raise Failure(
                "image_too_large", f"image is {w}x{h} pixels; the limit is {self.max_pixels}"
            )
        plan = self.plan(img, data, kind)
        if plan.peak_bytes > self.memory_budget:
            raise Failure(
                "image_too_large",
                f"a {w}x{h} {kind} image ({img.mode}) needs about "
                f"{mib(plan.peak_bytes, up=True)} to decode and resize with "
                f"{self.resize_filter!r}; the limit is {mib(self.memory_budget)}: send a "
                "smaller image",
            )
        with self.gate.reserve(plan.peak_bytes) if self.gate else contextlib.nullcontext():
            return self._convert(img, plan, FILTERS[self.resize_filter], size)

    @staticmethod
    def _convert(
        img: Image.Image, plan: DecodePlan, resample: Image.Resampling, size: tuple[int, int]
    ) -> Pixels:
        """Decode (Pillow decodes lazily, on the first operation) and bring to ``size``."""
        height, width = size
        orientation = plan.orientation
        if resample != Image.Resampling.NEAREST and img.mode in ("P", "PA", "1"):
            img = img.convert("RGBA" if _has_alpha(img) else "RGB" if img.mode != "1" else "L")
        if plan.upright_first:
            img = img.transpose(_ORIENT[orientation])
            orientation = 1
        # Resize in the stored frame to what is (width, height) once upright, and rotate the
        # small result: no full-size copy (nearest may then pick a neighbouring pixel on an
        # axis the rotation reverses).
        target = (height, width) if orientation in _SWAPS_AXES else (width, height)
        if img.size != target:
            img = img.resize(target, resample)
        img = to_rgb(img)
        if orientation in _ORIENT:
            img = img.transpose(_ORIENT[orientation])
        return np.asarray(img, dtype=np.uint8)
