"""Start and stop the TensorFlow-backed TF Serving stand-in as a subprocess (tests only)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def tf_server(model_dir: Path, *, tensor_content: bool = False) -> Iterator[int]:
    """Serve the newest version under ``model_dir`` (``<out>/<name>``); yields the gRPC port
    once the model is loaded and warmed up."""
    args = [sys.executable, "-m", "tests.support.tf_model_server", str(model_dir)]
    args += ["--name", model_dir.name]
    if tensor_content:
        args.append("--enable_serialization_as_tensor_content")
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
    assert process.stdin is not None and process.stdout is not None
    try:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"TF model server exited with {process.wait()} before serving")
        yield int(json.loads(line)["grpc_port"])
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
