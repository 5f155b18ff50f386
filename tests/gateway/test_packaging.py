"""The gateway's TF Serving stubs are generated, current, and need no TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_gateway_imports_without_tensorflow() -> None:
    code = (
        "import sys, gateway.app, gateway.model_client;"
        "heavy = ('tensorflow', 'tensorflow_serving', 'keras');"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in heavy);"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_gateway_dependencies_exclude_tensorflow() -> None:
    text = (ROOT / "services" / "gateway" / "pyproject.toml").read_text().lower()
    assert "tensorflow" not in text.split("dependencies = [", 1)[1].split("]", 1)[0]


@pytest.mark.tensorflow
def test_committed_stubs_match_tensorflow_serving_api() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "services" / "gateway" / "tools" / "generate_stubs.py"),
            "--check",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.tensorflow
def test_stubs_coexist_with_tensorflow_in_one_process() -> None:
    code = (
        "from gateway._proto.tensorflow_serving.apis import predict_pb2 as mine\n"
        "from tensorflow_serving.apis import predict_pb2 as theirs\n"
        "r = mine.PredictRequest(); r.model_spec.name = 'm'; r.inputs['x'].dtype = 1\n"
        "assert theirs.PredictRequest.FromString(r.SerializeToString()).model_spec.name == 'm'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
