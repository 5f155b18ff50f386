"""Colour modes and formats beyond plain RGB JPEG decode to sensible RGB pixels, and the
gateway-side scaling for float32 models matches Keras's formulas."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from gateway.imaging import Decoder, scale_pixels, sniff
from tests.support.image_host import FIXTURES

SIZE = (299, 299)


def PRE(data: bytes) -> np.ndarray:
    return Decoder()(data, SIZE)


def _encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kwargs)
    return out.getvalue()


def _rgb_reference(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB").resize(SIZE, Image.Resampling.NEAREST))


def test_formats_are_sniffed_by_content_not_name() -> None:
    jpeg = (FIXTURES / "hat.jpg").read_bytes()
    img = Image.open(FIXTURES / "hat.jpg")
    assert sniff(jpeg) == "JPEG"
    assert sniff(_encode(img, "PNG")) == "PNG"
    assert sniff(_encode(img, "GIF")) == "GIF"
    assert sniff(_encode(img, "WEBP", lossless=True)) == "WEBP"
    assert sniff(b"BM" + jpeg) is None  # BMP: not accepted
    assert sniff(b"<svg") is None


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_lossless_formats_match_the_jpeg_pixels(fmt: str) -> None:
    img = Image.open(FIXTURES / "dress.jpg")
    extra = {"lossless": True} if fmt == "WEBP" else {}
    np.testing.assert_array_equal(PRE(_encode(img, fmt, **extra)), _rgb_reference(img))


def test_grayscale_becomes_three_equal_channels() -> None:
    grey = Image.open(FIXTURES / "shoes.jpg").convert("L")
    x = PRE(_encode(grey, "PNG"))
    assert x.shape == (299, 299, 3)
    np.testing.assert_array_equal(x[..., 0], x[..., 1])
    np.testing.assert_array_equal(x[..., 1], x[..., 2])


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    wide = Image.fromarray(np.full((20, 20), 65535, dtype=np.uint16))
    x = PRE(_encode(wide, "PNG"))
    assert x.dtype == np.uint8
    assert np.all(x == 255)  # white, not clipped garbage


def test_transparency_is_flattened_onto_white() -> None:
    rgba = Image.new("RGBA", (50, 50), (0, 0, 0, 0))  # fully transparent black
    rgba.paste((255, 0, 0, 255), (0, 0, 25, 50))  # opaque red left half
    x = PRE(_encode(rgba, "PNG"))
    assert (x[:, 0] == [255, 0, 0]).all()  # red
    assert (x[:, -1] == [255, 255, 255]).all()  # white where transparent


def test_palette_with_transparency_and_gif_first_frame() -> None:
    frames = [Image.new("P", (30, 30), i) for i in (10, 200)]
    for f in frames:
        f.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    gif = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    x = PRE(gif)
    assert (x[0, 0] == [10, 245, 0]).all()


def test_cmyk_jpeg_is_converted() -> None:
    cmyk = Image.open(FIXTURES / "hat.jpg").convert("CMYK")
    data = _encode(cmyk, "JPEG", quality=95)
    x = PRE(data)
    assert x.shape == (299, 299, 3) and x.dtype == np.uint8


@pytest.mark.parametrize("mode", ["tf", "torch", "caffe", "none"])
def test_scaling_modes_are_keras_preprocess_input(mode: str) -> None:
    from keras.applications import imagenet_utils

    img = Image.open(FIXTURES / "hat.jpg").convert("RGB").resize(SIZE, Image.Resampling.NEAREST)
    pixels = np.asarray(img, dtype=np.uint8)
    x = scale_pixels(pixels, mode)
    if mode != "none":  # bit-identical to Keras itself
        expected = imagenet_utils.preprocess_input(pixels.astype(np.float32), mode=mode)
        np.testing.assert_array_equal(x, expected)
    pixels = pixels.astype(np.float32)
    if mode == "tf":
        np.testing.assert_array_equal(x, pixels / np.float32(127.5) - np.float32(1))
    elif mode == "torch":
        mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
        std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
        np.testing.assert_allclose(x, (pixels / 255.0 - mean) / std, rtol=1e-6)
    elif mode == "caffe":
        np.testing.assert_allclose(
            x, pixels[..., ::-1] - np.array([103.939, 116.779, 123.68], dtype=np.float32), rtol=1e-6
        )
    else:
        np.testing.assert_array_equal(x, pixels)
