"""Bytes -> model input: sniff, decode, normalise the colour mode, resize, scale.

For an ordinary RGB JPEG the result is bit-identical to Keras
``load_img(path, target_size=size, interpolation=...)`` followed by
``keras.applications.<model>.preprocess_input`` (``tf`` mode for Xception:
``x / 127.5 - 1`` in float32). Beyond what Keras does, EXIF orientation is applied,
transparency is flattened onto white (Keras would expose whatever colour hides under
transparent pixels, usually black) and 16-bit greyscale is scaled to 8 bits.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

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
# keras.applications.imagenet_utils constants
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_TORCH_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
_WHITE = (255, 255, 255)
_ORIENTATION = 0x0112  # EXIF tag
MODES = ("tf", "torch", "caffe", "raw")


def sniff(data: bytes) -> str | None:
    """The image format the bytes start with (JPEG, PNG, GIF, WEBP), else None."""
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def scale_pixels(pixels: npt.NDArray[np.uint8], mode: str) -> npt.NDArray[np.float32]:
    """Keras ``imagenet_utils.preprocess_input`` for one (H, W, 3) RGB uint8 image.

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
    elif mode != "raw":
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
class Preprocessor:
    height: int = 299
    width: int = 299
    resize_filter: str = "nearest"
    mode: str = "tf"
    exif_transpose: bool = True
    max_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        if self.resize_filter not in _FILTERS:
            raise ValueError(f"unknown resize filter {self.resize_filter!r}")
        if self.mode not in MODES:
            raise ValueError(f"unknown preprocessing mode {self.mode!r}")

    def decode(self, data: bytes) -> Image.Image:
        """A resized RGB image; ApiError 415/413/422 for non-images, bombs and bad data."""
        kind = sniff(data)
        if kind is None:
            raise ApiError(415, "unsupported_media_type", "not a JPEG, PNG, WebP or GIF image")
        try:
            # Only the header is read here: the pixel limit is checked before decoding.
            img: Image.Image = Image.open(io.BytesIO(data), formats=[kind])
            width, height = img.size
            if width * height > self.max_pixels:
                raise ApiError(
                    413,
                    "image_too_large",
                    f"image is {width}x{height} pixels; the limit is {self.max_pixels}",
                )
            if self.exif_transpose and _orientation(img, kind) != 1:
                img = ImageOps.exif_transpose(img)  # (it copies even when upright: skip it)
            img = to_rgb(img)
            if img.size != (self.width, self.height):
                img = img.resize((self.width, self.height), _FILTERS[self.resize_filter])
            img.load()
            return img
        except Image.DecompressionBombError as exc:
            raise ApiError(413, "image_too_large", str(exc)) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ApiError(
                422, "undecodable_image", f"cannot decode the {kind} image: {exc}"
            ) from None

    def scale(self, img: Image.Image) -> npt.NDArray[np.float32]:
        """(height, width, 3) float32 model input from a decoded RGB image."""
        return scale_pixels(np.asarray(img, dtype=np.uint8), self.mode)

    def __call__(self, data: bytes) -> npt.NDArray[np.float32]:
        return self.scale(self.decode(data))
