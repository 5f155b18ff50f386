"""Start and stop ``python -m model_tools serve`` (TensorFlow answering as TF Serving does)
as a subprocess, for the tests that need a real model behind the gateway."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The line the server prints once the model is loaded, warmed up and listening.
_LISTENING = re.compile(rb" on 127\.0\.0\.1:(\d+), gRPC;")


@contextmanager
def tf_server(model_dir: Path, *, tensor_content: bool = False) -> Iterator[int]:
    """Serve the newest version under ``model_dir`` (``<out>/<name>``); yields the gRPC port
    once the model is loaded and warmed up."""
    args = [sys.executable, "-m", "model_tools", "serve", str(model_dir.parent)]
    args += ["--name", model_dir.name, "--port", "0"]
    if tensor_content:
        args.append("--enable_serialization_as_tensor_content")
    with subprocess.Popen(args, stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        try:
            line = process.stdout.readline()
            match = _LISTENING.search(line)
            if match is None:
                raise RuntimeError(f"the model server exited with {process.wait()}: {line!r}")
            yield int(match[1])
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
