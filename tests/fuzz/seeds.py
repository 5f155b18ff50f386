"""Seed inputs per fuzz target: small valid examples libFuzzer mutates from (a fuzzer that
starts from real files reaches the decoders' deep paths in seconds, not hours)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from gateway._proto.tensorflow.core.framework import types_pb2
from gateway._proto.tensorflow_serving.apis import predict_pb2
from gateway.tensors import fill_image_tensor
from tests.support.image_host import FIXTURES


def _images() -> list[bytes]:
    small = Image.open(FIXTURES / "hat.jpg").resize((40, 30))
    out = []
    for fmt, mode in [("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("GIF", "P"),
                      ("WEBP", "RGB"), ("JPEG", "L"), ("PNG", "I;16")]:  # fmt: skip
        data = io.BytesIO()
        exif = Image.Exif()
        exif[0x0112] = 6
        small.convert(mode).save(data, fmt, **({"exif": exif} if fmt == "JPEG" else {}))
        out.append(data.getvalue())
    for mode in ("RGB", "CMYK"):  # progressive: scan by scan, into a coefficient buffer
        data = io.BytesIO()
        small.convert(mode).save(data, "JPEG", progressive=True)
        out.append(data.getvalue())
    return out


def _responses() -> list[bytes]:
    typed = predict_pb2.PredictResponse()
    typed.model_spec.version.value = 3
    logits = typed.outputs["logits"]
    logits.dtype = types_pb2.DT_FLOAT
    logits.tensor_shape.dim.add(size=2)
    logits.tensor_shape.dim.add(size=3)
    logits.float_val.extend([0.1, 0.2, 0.7, 0.3, 0.3, 0.4])
    classes = typed.outputs["classes"]
    classes.dtype = types_pb2.DT_STRING
    classes.tensor_shape.dim.add(size=2)
    classes.tensor_shape.dim.add(size=3)
    classes.string_val.extend([b"a", b"b", b"c"] * 2)
    packed = predict_pb2.PredictResponse()
    fill_image_tensor(packed.outputs["logits"], np.ones((2, 3), np.float32))
    return [typed.SerializeToString(), packed.SerializeToString()]


SEEDS = {
    "decode": _images,
    "url": lambda: [
        u.encode()
        for u in [
            "http://example.com/a.jpg?x=1",
            "https://bücher.example:8443/ü/image.png",
            "http://[2001:db8::1]:80/x",
            "http://user:pw@host/",
        ]
    ],
    "body": lambda: [
        json.dumps(v).encode()
        for v in [{"url": "http://a/b"}, {"urls": ["http://a/b", "https://c/d"]}, {"x": 1}]
    ],
    "predict_response": _responses,
}


def write_corpus(target: str, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(SEEDS[target]()):
        (directory / f"seed-{i}").write_bytes(seed)
    return directory


if __name__ == "__main__":
    import sys

    write_corpus(sys.argv[1], Path(sys.argv[2]))
