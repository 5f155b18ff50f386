"""An image's content hash (the part of its tag that names what was built) changes exactly
when its build would: ECR's immutable tags refuse a second push of a tag, so a rebuild
under an old tag fails `pulumi up`, and a tag that changes without a rebuild leaves the
cluster on a stale image. (The tag's other part, a release id drawn anew with each new
content, covers a change reverted: tests/infra/test_wiring.py.)

Works on a copy of the repository's real Dockerfiles, ignore files and sources in a
temporary directory, so files can be edited freely.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from infra.images import ImageBuild, gateway_build, model_build, proxy_build
from infra.model_export import ModelExport
from tests.infra.harness import ROOT

SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "models", ".tmp-*")


def _checkout(root: Path) -> Path:
    """The parts of the repository the builds can see, and some they must not."""
    root.mkdir(parents=True)
    for name in ("pyproject.toml", "uv.lock", "README.md", "Makefile", "docker-compose.yaml"):
        shutil.copy2(ROOT / name, root / name)
    shutil.copytree(ROOT / "services", root / "services", ignore=SKIP)
    shutil.copytree(ROOT / "infra", root / "infra", ignore=SKIP)
    export = root / "services" / "tf-serving" / "models" / "clothing-model" / "1"
    (export / "variables").mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"graph")
    (export / "variables" / "variables.data-00000-of-00001").write_bytes(b"weights")
    (export / "manifest.json").write_text("{}")
    (root / "services" / "tf-serving" / "models" / "models.config").write_text("config")
    return root


def _builds(root: Path) -> dict[str, ImageBuild]:
    export = ModelExport("clothing-model", 1, root / "services" / "tf-serving" / "models")
    return {
        "gateway": gateway_build(root),
        "proxy": proxy_build(root),
        "model": model_build(export, True, root),
    }


def _tags(root: Path) -> dict[str, str]:
    return {name: build.content for name, build in _builds(root).items()}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return _checkout(tmp_path / "checkout")


def _copied_sources(dockerfile: Path) -> list[str]:
    """The context paths the Dockerfile's COPY instructions read (not --from= stages)."""
    sources = []
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            parts = [p for p in line.split()[1:] if not p.startswith("--")]
            sources += parts[:-1]
    return sources


@pytest.mark.parametrize("image", ["gateway", "proxy", "model"])
def test_each_context_sends_what_its_dockerfile_copies_and_nothing_else(
    repo: Path, image: str
) -> None:
    build = _builds(repo)[image]
    sent = build.context_files()
    sources = [s.rstrip("/") for s in _copied_sources(build.dockerfile)]
    assert sources, "the Dockerfile copies something from the context"
    for source in sources:
        assert any(f == source or f.startswith(source + "/") for f in sent), source
    for file in sent:
        assert any(file == s or file.startswith(s + "/") for s in sources), file


# A file of each kind each build reads, and files it must not care about.
INSIDE = {
    "gateway": [
        "pyproject.toml",
        "uv.lock",
        "services/contract/pyproject.toml",
        "services/contract/src/serving_contract/model.py",
        "services/gateway/pyproject.toml",
        "services/gateway/src/gateway/app.py",
        "services/gateway/src/gateway/openapi.json",
        "services/tf-serving/pyproject.toml",
    ],
    "proxy": ["services/gateway/proxy/nginx.conf"],
    "model": [
        "services/tf-serving/config/batching_parameters.txt",
        "services/tf-serving/models/models.config",
        "services/tf-serving/models/clothing-model/1/saved_model.pb",
        "services/tf-serving/models/clothing-model/1/variables/variables.data-00000-of-00001",
    ],
}
OUTSIDE = {
    "gateway": [
        "services/gateway/proxy/nginx.conf",
        "README.md",
        "infra/config.py",
        "services/gateway/README.md",
        "services/gateway/tools/generate_stubs.py",
        "services/tf-serving/src/model_tools/export.py",
        "services/tf-serving/config/batching_parameters.txt",
        "services/tf-serving/models/clothing-model/1/saved_model.pb",
    ],
    "proxy": ["pyproject.toml", "uv.lock", "services/gateway/src/gateway/app.py"],
    "model": [
        "README.md",
        "pyproject.toml",
        "uv.lock",
        "services/gateway/src/gateway/app.py",
        "services/gateway/Dockerfile",
        "services/tf-serving/README.md",
        "services/tf-serving/src/model_tools/export.py",
    ],
}


@pytest.mark.parametrize(
    ("image", "path"), [(image, path) for image, paths in INSIDE.items() for path in paths]
)
def test_an_edit_inside_a_build_changes_its_tag(repo: Path, image: str, path: str) -> None:
    before = _tags(repo)[image]
    with (repo / path).open("ab") as f:
        f.write(b"\n# edited\n")
    after_edit = _tags(repo)[image]
    assert after_edit != before
    (repo / path).chmod(0o755)  # pulumi-docker-build hashes file modes too
    assert _tags(repo)[image] not in (before, after_edit)


DOCKERFILES = {
    "gateway": "services/gateway/Dockerfile",
    "proxy": "services/gateway/proxy/Dockerfile",
    "model": "services/tf-serving/Dockerfile",
}


@pytest.mark.parametrize("image", ["gateway", "proxy", "model"])
def test_the_dockerfile_and_its_ignore_file_change_the_tag_when_the_build_changes(
    repo: Path, image: str
) -> None:
    """The Dockerfile is hashed by content (its mode is not sent); its ignore file by what
    it lets through: a comment changes nothing, a new pattern changes the context."""
    dockerfile = repo / DOCKERFILES[image]
    before = _tags(repo)[image]
    dockerfile.chmod(0o755)
    assert _tags(repo)[image] == before
    with dockerfile.open("a") as f:
        f.write("# edited\n")
    edited = _tags(repo)[image]
    assert edited != before
    ignore = dockerfile.with_name("Dockerfile.dockerignore")
    with ignore.open("a") as f:
        f.write("# a comment sends nothing new\n")
    assert _tags(repo)[image] == edited
    with ignore.open("a") as f:
        f.write("!README.md\n")
    assert _tags(repo)[image] != edited


@pytest.mark.parametrize(
    ("image", "path"), [(image, path) for image, paths in OUTSIDE.items() for path in paths]
)
def test_an_edit_outside_a_build_changes_nothing(repo: Path, image: str, path: str) -> None:
    before = _tags(repo)[image]
    with (repo / path).open("ab") as f:
        f.write(b"\n# edited\n")
    (repo / path).chmod(0o755)
    assert _tags(repo)[image] == before


def test_new_files_and_build_arguments_change_the_tag(repo: Path) -> None:
    before = _tags(repo)
    (repo / "services" / "gateway" / "src" / "gateway" / "new.py").write_text("x = 1\n")
    version = repo / "services" / "tf-serving" / "models" / "clothing-model" / "2"
    version.mkdir()
    (version / "saved_model.pb").write_bytes(b"v2")
    after = _tags(repo)
    assert after["gateway"] != before["gateway"] and after["model"] != before["model"]
    export = ModelExport("clothing-model", 2, repo / "services" / "tf-serving" / "models")
    cpu = model_build(export, on_gpu=False, root=repo)
    assert cpu.build_args == {"VARIANT": ""} and cpu.content != after["model"]


def test_tags_do_not_depend_on_where_the_checkout_lives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pulumi runs the program in <checkout>/infra: two checkouts give the same inputs."""
    tags = []
    for where in ("a/deep/place", "elsewhere"):
        root = _checkout(tmp_path / where / "clothing-serving")
        monkeypatch.chdir(root / "infra")
        tags.append(_tags(root))
        build = _builds(root)["model"]
        assert build.inputs()["context"] == ".."
        assert build.inputs()["named"] == {"models": "../services/tf-serving/models"}
    assert tags[0] == tags[1]
    assert all(re.fullmatch(r"[0-9a-f]{16}", tag) for tag in tags[0].values())
