"""`make dev`, as someone without Docker meets it: from a Keras file to the website and an
answer on localhost, then Ctrl-C, which stops everything it started."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from model_tools.cli import CLOTHING_CLASSES
from tests.model.conftest import tiny_classifier
from tests.support.gateway_process import free_port
from tests.support.image_host import FIXTURES

ROOT = Path(__file__).resolve().parents[2]


def _bound(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(line: str, process: subprocess.Popen[bytes], log: Path) -> str:
    """What `make dev` printed, once it printed ``line``."""
    deadline = time.monotonic() + 240  # an export, then TensorFlow's import twice
    while line not in (printed := log.read_text()):
        assert process.poll() is None, printed
        assert time.monotonic() < deadline, printed
        time.sleep(0.5)
    return printed


@pytest.mark.tensorflow
def test_make_dev_exports_serves_answers_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    model = tmp_path / "mine.keras"
    tiny_classifier().save(model)
    port, model_port = free_port(), free_port()
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                "make", "--no-print-directory", "dev", f"MODEL_FILE={model}",
                f"MODEL_DIR={tmp_path / 'models'}", f"MODEL_CACHE={tmp_path / 'cache'}",
                "EXPORT_ARGS=--preprocessing tf",
                f"DEV_ARGS=--port {port} --model-port {model_port}",
            ],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        printed = _wait_for(f"Ready: http://localhost:{port}", process, log)
        assert "TensorFlow in Python, not TF Serving" in printed
        assert (tmp_path / "models" / "clothing-model" / "1" / "saved_model.pb").is_file()
        base = f"http://127.0.0.1:{port}"
        assert requests.get(base + "/readyz", timeout=10).json()["model"] == "available"
        assert "text/html" in requests.get(base + "/", timeout=10).headers["Content-Type"]
        with (FIXTURES / "pants.jpg").open("rb") as image:
            answer = requests.post(base + "/predict", files={"image": image}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"]["name"] == "clothing-model"
        assert list(answer.json()["probabilities"]) == list(CLOTHING_CLASSES)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in its terminal
        process.wait(timeout=60)
    assert not _bound(port) and not _bound(model_port)
    with pytest.raises(ProcessLookupError):  # nothing it started is left
        os.killpg(process.pid, 0)


def test_make_dev_says_when_a_port_is_taken(tmp_path: Path) -> None:
    """`make run` holds the same ports: one line that says what to do, no traceback."""
    (tmp_path / "models.config").write_text("")  # an export: nothing to make first
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                "make", "--no-print-directory", "dev", f"MODEL_DIR={tmp_path}",
                f"DEV_ARGS=--port {port} --model-port {free_port()}",
            ],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert result.returncode != 0
    assert f"error: port {port} (the gateway's) is taken, perhaps by `make run`" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_the_last_run_left_in_time_wait_is_free(tmp_path: Path) -> None:
    """Right after a `make dev`, its gateway port holds connections in TIME_WAIT: that is
    no server, and the next `make dev` must not call the port taken."""
    (tmp_path / "models.config").write_text("")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = listener.accept()
        served.close()  # the server closes first, as gunicorn does: its side waits
        client.close()
    with socket.socket() as model_port_taken:
        model_port_taken.bind(("127.0.0.1", 0))
        model_port_taken.listen()
        model_port = model_port_taken.getsockname()[1]
        result = subprocess.run(
            [
                "make", "--no-print-directory", "dev", f"MODEL_DIR={tmp_path}",
                f"DEV_ARGS=--port {port} --model-port {model_port}",
            ],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert f"port {model_port} (the model server's) is taken" in result.stderr
    assert f"port {port}" not in result.stderr


def test_intel_macs_are_sent_to_make_run() -> None:
    """No TensorFlow wheel there: no model server outside a container."""
    result = subprocess.run(
        ["make", "--no-print-directory", "dev", "HOST_PLATFORM=Darwin-x86_64"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "make run serves the model in Docker" in result.stderr
