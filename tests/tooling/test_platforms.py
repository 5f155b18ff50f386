"""The lock serves every platform people deploy from: Linux x86_64 and arm64 (Windows
through WSL 2 is Linux), macOS on Apple Silicon and on Intel.

Each dependency group is resolved from ``uv.lock`` for each platform, offline and without
installing anything (``uv sync --dry-run --python-platform``, into an environment that does
not exist, so the answer is the whole set). A package without a wheel for a platform fails
the resolution (the lock's ``required-environments``), and the TensorFlow wheel each
platform gets is the one it can run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# uv's platform triple -> the TensorFlow distribution the model tooling installs there
# (None: no TensorFlow wheel exists for Intel Macs since 2.17; the Makefile runs the model
# tooling in a Linux container there).
PLATFORMS = {
    "x86_64-unknown-linux-gnu": "tensorflow-cpu",
    "aarch64-unknown-linux-gnu": "tensorflow",
    "aarch64-apple-darwin": "tensorflow",
    "x86_64-apple-darwin": None,
}
TENSORFLOW = {"tensorflow", "tensorflow-cpu", "tf-keras", "keras"}
DEV_TOOLS = {"pytest", "mypy", "ruff", "hypothesis"}
PULUMI = {"pulumi", "pulumi-aws", "pulumi-awsx", "pulumi-eks", "pulumi-kubernetes"}


def _uv() -> str:
    """The uv that runs the suite (``uv run`` sets UV), else one on PATH or in .tools."""
    found = os.environ.get("UV") or shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not Path(found).is_file():
        pytest.skip("uv is not installed: `make setup` installs it")
    return found


def would_install(platform: str, tmp_path: Path, *groups: str) -> set[str]:
    """The distributions a fresh environment on ``platform`` gets for ``groups``."""
    result = subprocess.run(
        [_uv(), "sync", "--locked", "--offline", "--dry-run", "--python-platform", platform,
         *groups],
        cwd=ROOT,
        env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "absent-venv")},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # " + name==1.2.3" from the index, " + name @ file://..." for a workspace member
    listed = re.findall(r"^ \+ ([A-Za-z0-9_.-]+)(?:==| @ )", result.stderr + result.stdout, re.M)
    return set(listed)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_what_pulumi_installs_is_the_infra_group(platform: str, tmp_path: Path) -> None:
    """Pulumi's uv toolchain runs a plain `uv sync`: the Pulumi SDKs, nothing heavy."""
    installed = would_install(platform, tmp_path)
    assert installed >= PULUMI | {"pydantic", "docker", "pulumi-docker-build"}
    assert not installed & (TENSORFLOW | DEV_TOOLS | {"grpcio-tools", "atheris"})


@pytest.mark.parametrize("platform", PLATFORMS)
def test_the_gateway_has_no_tensorflow_anywhere(platform: str, tmp_path: Path) -> None:
    installed = would_install(platform, tmp_path, "--no-default-groups", "--group", "gateway")
    assert {"flask", "gunicorn", "grpcio", "numpy", "pillow"} <= installed
    assert not installed & TENSORFLOW


@pytest.mark.parametrize(("platform", "tensorflow"), PLATFORMS.items())
def test_the_model_tooling_gets_the_tensorflow_of_its_platform(
    platform: str, tensorflow: str | None, tmp_path: Path
) -> None:
    installed = would_install(platform, tmp_path, "--no-default-groups", "--group", "model")
    assert "clothing-model-tools" in installed
    if tensorflow is None:
        assert not installed & {"tensorflow", "tensorflow-cpu"}
    else:
        assert installed & {"tensorflow", "tensorflow-cpu"} == {tensorflow}
        assert {"tf-keras", "keras", "h5py", "tensorflow-serving-api"} <= installed


@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_group_resolves(platform: str, tmp_path: Path) -> None:
    installed = would_install(platform, tmp_path, "--all-groups")
    assert installed >= DEV_TOOLS | PULUMI
    # coverage-guided fuzzing: atheris has wheels for Linux x86_64 only
    assert ("atheris" in installed) == (platform == "x86_64-unknown-linux-gnu")


def test_the_infra_group_has_everything_the_program_imports(tmp_path: Path) -> None:
    """What `pulumi up` installs runs the program: every third-party module infra/ imports
    comes from a distribution of the plain `uv sync`."""
    import ast
    import sys
    from importlib.metadata import packages_distributions

    imported = set()
    for source in (ROOT / "infra").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"infra", "__future__"}
    # the workspace's own packages are installed editable: no RECORD names their modules
    providers = {**packages_distributions(), "serving_contract": ["clothing-contract"]}
    needed = {
        re.sub(r"[-_.]+", "-", dist).lower() for name in third_party for dist in providers[name]
    }
    installed = would_install("x86_64-unknown-linux-gnu", tmp_path)
    assert needed, "found no imports"
    # the program shares the contract with the gateway, not the gateway's code (nor Flask)
    assert "clothing-gateway" not in installed
    assert needed <= installed, needed - installed
