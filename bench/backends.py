"""Image host + fake TF Serving for benchmarks, in their own process (so their CPU use does
not share a GIL with the load generator). Prints one JSON line with the ports, then serves
until stdin closes.

Two model contracts can be served, to compare the gateway before and after the model
carried its own input contract:

- ``export``: what ``model_tools export`` writes: uint8 pixels in, ``logits`` and
  ``classes`` out; the gateway needs no model settings;
- ``course``: the course's SavedModel: preprocessed float32 ``input_8`` in, ``dense_7``
  out; the gateway scales the pixels itself and is told the labels (``COURSE_GATEWAY_ENV``),
  and the course's own gateway (``bench.reference_app``) can call it too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from model_tools.cli import CLOTHING_CLASSES
from tests.support.fake_model_server import FakeModel, serve
from tests.support.image_host import ImageHost

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS: dict[str, dict[str, Any]] = {
    "export": {},
    "course": {
        "input_name": "input_8",
        "input_dtype": "float32",
        "output_name": "dense_7",
        "classes_output": False,
    },
}
# What the gateway must be told about the course's model (its signature does not say).
COURSE_GATEWAY_ENV = {
    "PREPROCESSING": "tf",
    "CLASS_LABELS": ",".join(CLOTHING_CLASSES),
    "OUTPUT_ACTIVATION": "softmax",
}


@contextmanager
def running_backends(
    images: Path,
    servers: int = 1,
    image_delay_s: float = 0.0,
    model_delay_s: float = 0.0,
    contract: str = "export",
) -> Iterator[dict[str, Any]]:
    """Start this module in a subprocess; yields its ports (``grpc_port``, ``grpc_target``,
    ``http_base``) and stops it on exit."""
    process = subprocess.Popen(
        [
            sys.executable, "-m", "bench.backends", "--images", str(images),
            "--servers", str(servers),
            "--image-delay", str(image_delay_s), "--model-delay", str(model_delay_s),
            "--contract", contract,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdin is not None
    try:
        yield json.loads(process.stdout.readline())
    finally:
        process.stdin.close()
        process.wait(timeout=10)


def url_bodies(info: dict[str, Any], names: list[str]) -> Callable[[int], dict[str, object]]:
    """Request i asks for image i (cycling) from the backends' image host."""

    def body(i: int) -> dict[str, object]:
        return {"url": f"{info['http_base']}/images/{names[i % len(names)]}"}

    return body


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--contract", choices=sorted(CONTRACTS), default="export")
    parser.add_argument("--model-delay", type=float, default=0.0)
    parser.add_argument("--image-delay", type=float, default=0.0)
    parser.add_argument(
        "--servers", type=int, default=1, help="model servers, on 127.0.0.1, 127.0.0.2, ..."
    )
    args = parser.parse_args()
    servers, addresses = [], []
    for i in range(args.servers):
        model = FakeModel(**CONTRACTS[args.contract], record=False, delay_s=args.model_delay)
        server, port = serve(model, host=f"127.0.0.{i + 1}", max_workers=32)
        servers.append(server)
        addresses.append(f"127.0.0.{i + 1}:{port}")
    host = ImageHost(root=args.images)
    host.delay_s = args.image_delay
    host.start()
    info = {
        "grpc_port": int(addresses[0].rsplit(":", 1)[1]),
        "grpc_target": "ipv4:" + ",".join(addresses),
        "http_base": host.base,
    }
    print(json.dumps(info), flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    host.stop()
    for server in servers:
        server.stop(0)


if __name__ == "__main__":
    main()
