"""Exports load and serve in the TensorFlow of the pinned TF Serving image.

The project exports with its own TensorFlow, but TF Serving runs the graph with the
TensorFlow it was built with (TF Serving X.Y.Z ships TensorFlow X.Y). An op or attribute
that runtime does not know would fail the load in the cluster, not here. So every export
kind is loaded, restored and run with that TensorFlow (``make setup`` installs it into its
own venv from ``tools/tf-serving-runtime-requirements.txt``), in a session on the
signatures' tensor names as ``tensorflow_model_server`` does, and must answer what the
project's TensorFlow answers.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.model.conftest import IMAGES, ROOT
from tests.support.reference import keras_input, keras_pixels

pytestmark = pytest.mark.tensorflow
RUNTIME = ROOT / ".tools" / "tf-serving-runtime" / "bin" / "python"
DOCKERFILE = ROOT / "services" / "tf-serving" / "Dockerfile"


def serving_version() -> str:
    match = re.search(r"^ARG TF_SERVING_VERSION=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "services/tf-serving/Dockerfile must set ARG TF_SERVING_VERSION"
    return match.group(1)


def test_runtime_is_the_tensorflow_of_the_pinned_image() -> None:
    pins = (ROOT / "tools" / "tf-serving-runtime.in").read_text()
    assert f"tensorflow-cpu=={serving_version()}\n" in pins
    locked = (ROOT / "tools" / "tf-serving-runtime-requirements.txt").read_text()
    assert f"\ntensorflow-cpu=={serving_version()}\n" in locked


def _run_in_runtime(version_dir: Path, inputs: dict[str, Any], tmp: Path) -> dict[str, np.ndarray]:
    if not RUNTIME.is_file():
        pytest.skip("the TF Serving runtime venv is missing: `make setup` installs it")
    np.savez(tmp / "inputs.npz", **inputs)
    result = subprocess.run(
        [str(RUNTIME), str(ROOT / "tests" / "support" / "run_saved_model.py"),
         str(version_dir), str(tmp / "inputs.npz"), str(tmp / "outputs.npz")],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"TensorFlow {serving_version()}" in result.stdout
    with np.load(tmp / "outputs.npz") as outputs:
        return {key: outputs[key] for key in outputs.files}


def _here(version_dir: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    results = {}
    for key, value in inputs.items():
        signature, alias = key.split("/", 1)
        for name, out in loaded.signatures[signature](**{alias: tf.constant(value)}).items():
            results[f"{signature}/{name}"] = out.numpy()
    return results


@pytest.mark.parametrize("export_kind", ["keras3", "course_tf_keras"])
def test_exports_serve_in_the_tf_serving_runtime(
    export_kind: str, exported: Path, course_export: Path, tmp_path: Path
) -> None:
    version_dir = exported if export_kind == "keras3" else course_export / "clothing-model" / "1"
    manifest_inputs = json.loads((version_dir / "manifest.json").read_text())
    [preprocessed_input] = manifest_inputs["signatures"]["preprocessed"]["inputs"]
    pixels = np.concatenate([keras_pixels(path) for path in IMAGES[:4]])
    inputs = {
        "serving_default/image": pixels,
        f"preprocessed/{preprocessed_input}": np.concatenate(
            [keras_input(path) for path in IMAGES[:4]]
        ),
    }
    theirs = _run_in_runtime(version_dir, inputs, tmp_path)
    ours = _here(version_dir, inputs)
    assert set(theirs) == set(ours)
    for key, value in ours.items():
        if value.dtype.kind in "SO":
            assert theirs[key].tolist() == value.tolist(), key
        else:
            np.testing.assert_allclose(theirs[key], value, atol=1e-5, rtol=0, err_msg=key)


def test_the_docs_name_the_pinned_release_in_one_place() -> None:
    """The release is spelled in the Dockerfile, and the docs say why in one section: moving
    the pin without rewriting that section fails, and no other page repeats the number."""
    version = serving_version()
    release_notes = (ROOT / "services" / "tf-serving" / "README.md").read_text()
    assert f"`TF_SERVING_VERSION` in the `Dockerfile` ({version})" in release_notes
    assert f"Why {version}:" in release_notes
    for page in (ROOT / "README.md", ROOT / "docs" / "architecture.md"):
        assert version not in page.read_text(), page
