"""Export a real Keras model, serve it with TensorFlow over gRPC, put the real gateway in
front (gunicorn), classify dataset JPEGs over HTTP, and compare with Keras itself."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.model.conftest import LABELS
from tests.support.gateway_process import gunicorn_gateway
from tests.support.image_host import FIXTURES, ImageHost
from tests.support.reference import keras_xception_input, softmax

pytestmark = pytest.mark.tensorflow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tf_server(exported: Path) -> Iterator[int]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.tf_model_server", str(exported.parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None
    assert process.stdin is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError("TF model server did not start")
    yield json.loads(line)["grpc_port"]
    process.stdin.close()
    process.wait(timeout=30)


def test_gateway_probabilities_equal_keras_softmax(
    exported: Path, keras_model_file: Path, tf_server: int, image_host: ImageHost
) -> None:
    import keras

    model = keras.models.load_model(keras_model_file)
    names = sorted(p.stem for p in FIXTURES.glob("*.jpg"))
    reference = np.concatenate([keras_xception_input(FIXTURES / f"{n}.jpg") for n in names])
    expected = softmax(model.predict(reference, verbose=0))

    env = {
        "TF_SERVING_HOST": f"127.0.0.1:{tf_server}",
        "MODEL_MANIFEST": str(exported / "manifest.json"),
        "FETCH_ALLOW": "127.0.0.0/8",
        "MODEL_TIMEOUT_S": "30",
    }
    with gunicorn_gateway(env, workers=1, threads=4) as (base, _):
        assert requests.get(base + "/readyz", timeout=30).status_code == 200
        urls = [image_host.url(f"/images/{n}.jpg") for n in names]
        batch = requests.post(base + "/predict", json={"urls": urls}, timeout=60)
        assert batch.status_code == 200, batch.text
        body = batch.json()
        assert body["model"] == {
            "name": "clothing-model",
            "version": 1,
            "signature": "serving_default",
        }
        for row, prediction in zip(expected, body["predictions"], strict=True):
            got = np.array([prediction["probabilities"][label] for label in LABELS])
            np.testing.assert_allclose(got, row, atol=1e-5, rtol=0)
            assert prediction["top_class"] == LABELS[int(np.argmax(row))]
        single = requests.post(base + "/predict", json={"url": urls[3]}, timeout=60).json()
        got = np.array([single["probabilities"][label] for label in LABELS])
        np.testing.assert_allclose(got, expected[3], atol=1e-5, rtol=0)
