"""Bytes -> the pixels the model's signature asks for: sniff, decode, normalise the colour
mode, resize, and (only for models that take preprocessed float32) scale.

For an ordinary RGB JPEG the pixels are bit-identical to Keras
``load_img(path, target_size=size, interpolation="nearest")``, and the scaled tensor to
``keras.applications.<model>.preprocess_input`` of it. Beyond what Keras does, EXIF
orientation is applied, transparency is flattened onto white (Keras would expose whatever
colour hides under transparent pixels, usually black) and 16-bit greyscale is scaled to 8
bits.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from gateway.contract import CAFFE_MEAN_RGB, TORCH_MEAN, TORCH_STD
from gateway.errors import ApiError

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)
_FILTERS = {
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


def to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB version of ``img`` whatever its mode."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    ):
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


def _orientation(img: Image.Image, kind: str) -> int:
    """The EXIF orientation (1 = upright). A JPEG without an EXIF segment is upright;
    parsing for nothing costs ~3% of the decode."""
    if kind == "JPEG" and "exif" not in img.info:
        return 1
    return int(img.getexif().get(_ORIENTATION, 1))


@dataclass(frozen=True)
class Decoder:
    resize_filter: str = "nearest"
    exif_transpose: bool = True
    max_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        if self.resize_filter not in _FILTERS:
            raise ValueError(f"unknown resize filter {self.resize_filter!r}")

    def __call__(self, data: bytes, size: tuple[int, int]) -> Pixels:
        """(height, width, 3) uint8 RGB pixels; ApiError 415/413/422 for non-images, bombs
        and bad data."""
        height, width = size
        kind = sniff(data)
        if kind is None:
            raise ApiError("unsupported_media_type", "not a JPEG, PNG, WebP or GIF image")
        try:
            # Only the header is read here: the pixel limit is checked before decoding.
            img: Image.Image = Image.open(io.BytesIO(data), formats=[kind])
            w, h = img.size
            if w * h > self.max_pixels:
                raise ApiError(
                    "image_too_large",
                    f"image is {w}x{h} pixels; the limit is {self.max_pixels}",
                )
            if self.exif_transpose and _orientation(img, kind) != 1:
                img = ImageOps.exif_transpose(img)  # (it copies even when upright: skip it)
            img = to_rgb(img)
            if img.size != (width, height):
                img = img.resize((width, height), _FILTERS[self.resize_filter])
            img.load()
            return np.asarray(img, dtype=np.uint8)
        except Image.DecompressionBombError as exc:
            raise ApiError("image_too_large", str(exc)) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ApiError("undecodable_image", f"cannot decode the {kind} image: {exc}") from None
