"""`make run` and `make model` fail with one clear message, not a build log or a curl retry
log: no Docker, no Compose v2, a Compose too old, a stopped engine; a model that cannot be
downloaded; a MODEL_FILE that does not exist."""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "tools" / "check-docker.sh"


def _fake_docker(bin_dir: Path, compose: str | None, engine_up: bool = True) -> None:
    """A `docker` that answers `compose version --short` and `info` as told."""
    compose_line = (
        f'[ "$1 $2 $3" = "compose version --short" ] && {{ echo "{compose}"; exit 0; }}'
        if compose
        else '[ "$1" = "compose" ] && { echo "docker: unknown command: docker compose" >&2; exit 1; }'
    )
    script = bin_dir / "docker"
    script.write_text(
        f'#!/bin/bash\n{compose_line}\n[ "$1" = "info" ] && exit {0 if engine_up else 1}\nexit 0\n'
    )
    script.chmod(0o755)


def _check(bin_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/bash", str(CHECK)],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("compose", "engine_up", "message"),
    [
        (None, True, "needs Docker Compose v2 ('docker compose')"),
        ("2.16.1", True, "needs Docker Compose 2.17 or newer; found 2.16.1"),
        ("v2.29.7", False, "the Docker engine is not running"),
    ],
)
def test_missing_docker_pieces_are_named(
    tmp_path: Path, compose: str | None, engine_up: bool, message: str
) -> None:
    _fake_docker(tmp_path, compose, engine_up)
    result = _check(tmp_path)
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2


def test_no_docker_at_all(tmp_path: Path) -> None:
    result = _check(tmp_path)  # nothing on PATH
    assert result.returncode == 1
    assert "make run needs Docker" in result.stderr


def test_a_working_docker_passes(tmp_path: Path) -> None:
    _fake_docker(tmp_path, "2.29.7")
    result = _check(tmp_path)
    assert result.returncode == 0
    assert result.stderr == ""


def test_apple_silicon_is_told_how_tf_serving_runs(tmp_path: Path) -> None:
    """TF Serving's amd64-only image needs AVX: QEMU gives it, Docker's Rosetta does not."""
    _fake_docker(tmp_path, "2.29.7")
    uname = tmp_path / "uname"
    uname.write_text('#!/bin/bash\n[ "$1" = "-s" ] && echo Darwin || echo arm64\n')
    uname.chmod(0o755)
    result = _check(tmp_path)
    assert result.returncode == 0  # a note, not an error
    assert "Use Rosetta for x86_64/amd64" in result.stderr
    assert "Illegal instruction" in result.stderr


def _make_model(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "model", f"MODEL_CACHE={tmp_path / 'cache'}",
         f"MODEL_DIR={tmp_path / 'models'}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


class _Unavailable(BaseHTTPRequestHandler):
    """An overloaded model host: 503, which curl retries (and would log each retry)."""

    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def unavailable_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/xception.h5"
    server.shutdown()
    server.server_close()


def test_failed_download_says_how_to_use_a_model_on_disk(
    tmp_path: Path, unavailable_url: str
) -> None:
    result = _make_model(tmp_path, f"MODEL_URL={unavailable_url}")
    assert result.returncode != 0
    # One message with curl's reason and the way out; nothing else but make's own line.
    lines = [
        line for line in result.stderr.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\*", line)
    ]
    assert lines[0].startswith(f"error: could not download {unavailable_url} (curl: (22)")
    assert "503" in lines[0]
    assert "make model MODEL_FILE=path/to/model.h5" in result.stderr
    assert len(lines) == 3, result.stderr
    assert "downloading" in result.stdout and len(result.stdout.splitlines()) == 1
    assert not list((tmp_path / "cache").glob("*.h5*"))  # no partial file or log left behind


def test_a_missing_model_file_is_named(tmp_path: Path) -> None:
    result = _make_model(tmp_path, f"MODEL_FILE={tmp_path / 'mine.h5'}")
    assert result.returncode != 0
    assert f"error: MODEL_FILE={tmp_path / 'mine.h5'} does not exist" in result.stderr


def _dry_run(*args: str) -> str:
    return subprocess.run(
        ["make", "-n", "--no-print-directory", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip


def _dry_run_model(tmp_path: Path, *args: str) -> str:
    """What `make model` would run for a model file on disk."""
    model = tmp_path / "mine.keras"
    model.write_bytes(b"")
    return _dry_run(
        "model", f"MODEL_FILE={model}", f"MODEL_CACHE={tmp_path / 'cache'}",
        f"MODEL_DIR={tmp_path / 'models'}", *args,
    )  # fmt: skip


def test_model_name_reaches_the_export_and_the_gateway(tmp_path: Path) -> None:
    """`make run MODEL_NAME=x` serves the export under x, and compose tells the gateway."""
    from gateway.settings import Settings
    from serving_contract.ports import GRPC_PORT
    from tests.support.compose import compose_gateway_env

    assert '--name "shoes"' in _dry_run_model(tmp_path, "MODEL_NAME=shoes")
    named = Settings.from_env(compose_gateway_env(GRPC_PORT, {"MODEL_NAME": "shoes"}))
    assert named.model.name == "shoes"
    assert Settings.from_env(compose_gateway_env(GRPC_PORT)).model.name == Settings().model.name


@pytest.mark.parametrize("platform", ["Darwin-arm64", "Darwin-x86_64", "Linux-aarch64"])
def test_setup_on_a_laptop_installs_the_environment_not_the_ci_tools(platform: str) -> None:
    """The TF Serving image's TensorFlow, Debian's nginx and Chromium exist for Linux x86_64
    only."""
    commands = _dry_run("setup", f"HOST_PLATFORM={platform}")
    assert "sync --locked --all-groups" in commands
    assert "tf-serving-runtime" not in commands and "install-test-packages" not in commands


def test_setup_where_ci_runs_installs_the_browser_checks() -> None:
    """CI's platform gets Chromium and axe-core, so the website's browser tests run there
    rather than skip."""
    commands = _dry_run("-B", "setup", "HOST_PLATFORM=Linux-x86_64")
    assert "bash tools/install-test-packages.sh" in commands
    assert "npm ci --prefix tests/web" in commands
    assert "chromium" in (ROOT / "tools" / "install-test-packages.sh").read_text()


def test_intel_macs_export_in_a_linux_container(tmp_path: Path) -> None:
    intel = _dry_run_model(tmp_path, "HOST_PLATFORM=Darwin-x86_64")
    assert "tools/in-linux.sh python -m model_tools export" in intel
    native = _dry_run_model(tmp_path, "HOST_PLATFORM=Darwin-arm64")
    assert "run --locked --group model python -m model_tools export" in native


def test_screenshots_leave_the_tracked_pictures_alone_unless_asked() -> None:
    assert f'WEBSITE_SCREENSHOTS="{ROOT}/.cache/screenshots"' in _dry_run("screenshots")
    assert f'WEBSITE_SCREENSHOTS="{ROOT}/docs"' in _dry_run("screenshots", "UPDATE_DOCS=1")
