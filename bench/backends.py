"""Image host + fake TF Serving for benchmarks, in their own process (so their CPU use does
not share a GIL with the load generator). Prints one JSON line with the ports, then serves
until stdin closes."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.fake_model_server import FakeModel, serve
from tests.support.image_host import ImageHost

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def running_backends(
    images: Path, servers: int = 1, image_delay_s: float = 0.0, model_delay_s: float = 0.0
) -> Iterator[dict[str, Any]]:
    """Start this module in a subprocess; yields its ports (``grpc_port``, ``grpc_target``,
    ``http_base``) and stops it on exit."""
    process = subprocess.Popen(
        [
            sys.executable, "-m", "bench.backends", "--images", str(images),
            "--servers", str(servers),
            "--image-delay", str(image_delay_s), "--model-delay", str(model_delay_s),
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
    parser.add_argument("--input-name", default="input_8")
    parser.add_argument("--output-name", default="dense_7")
    parser.add_argument("--model-delay", type=float, default=0.0)
    parser.add_argument("--image-delay", type=float, default=0.0)
    parser.add_argument(
        "--servers", type=int, default=1, help="model servers, on 127.0.0.1, 127.0.0.2, ..."
    )
    args = parser.parse_args()
    servers, addresses = [], []
    for i in range(args.servers):
        model = FakeModel(
            input_name=args.input_name,
            output_name=args.output_name,
            record=False,
            delay_s=args.model_delay,
        )
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
