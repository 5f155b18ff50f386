"""Every value that files which cannot import Python repeat is the one ``serving_contract``
holds: the Dockerfiles, nginx.conf, docker-compose.yaml, the Makefile and the Markdown docs
are read here and checked against it.

This module is the home of cross-file consistency checks: a check that two files agree
on a value belongs here, once, rather than beside either file. Python imports the value
from the contract instead (``serving_contract.ports``, ``serving_contract.gateway_env``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.errors import NO_SUCH_PATH
from gateway.request_body import too_large
from gateway.settings import Settings
from infra.config import LOCAL_REGISTRY
from serving_contract import gateway_env
from serving_contract.gateway_env import (
    BODY_OVERHEAD_BYTES,
    HOST,
    MAX_IMAGE_BYTES,
    PORT,
    PROMETHEUS_MULTIPROC_DIR,
    TF_SERVING_HOST,
    Var,
    mib,
)
from serving_contract.ports import (
    GATEWAY_PORT,
    GRPC_PORT,
    GUNICORN_PORT,
    METRICS_PORT,
    REDIRECT_PORT,
    REST_PORT,
)
from tests.support.compose import compose_services
from tests.support.proxy import CONFIG

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "services"
GATEWAY_README = SERVICES / "gateway" / "README.md"
CONTAINER_PORTS = {GRPC_PORT, REST_PORT, GATEWAY_PORT, GUNICORN_PORT, REDIRECT_PORT, METRICS_PORT}
# ... and the one port the docs may name besides: the local registry's (infra.config)
REGISTRY_PORT = int(LOCAL_REGISTRY.rsplit(":", 1)[1])
GATEWAY_VARS = [v for v in vars(gateway_env).values() if isinstance(v, Var)]


def _dockerfile(*path: str) -> str:
    """A Dockerfile's final stage, its continued lines joined."""
    text = SERVICES.joinpath(*path, "Dockerfile").read_text().replace("\\\n", " ")
    return text.rsplit("\nFROM ", 1)[1]


def _exposed(dockerfile: str) -> set[int]:
    [ports] = re.findall(r"^EXPOSE (.+)$", dockerfile, re.MULTILINE)
    return {int(port) for port in ports.split()}


def _probed(dockerfile: str) -> int:
    """The port a HEALTHCHECK that talks through bash's /dev/tcp connects to."""
    [port] = re.findall(r"/dev/tcp/127\.0\.0\.1/(\d+)", dockerfile)
    return int(port)


def nginx_ports() -> tuple[int, tuple[str, int]]:
    """(the port nginx listens on, (host, port) of its gunicorn upstream)."""
    text = CONFIG.read_text()
    [listen] = re.findall(r"listen (\d+) default_server;", text)
    [(host, port)] = re.findall(r"server (127\.0\.0\.1):(\d+);", text)
    return int(listen), (host, int(port))


def test_tf_serving_image_ports() -> None:
    dockerfile = _dockerfile("tf-serving")
    assert re.findall(r'"--port=(\d+)"', dockerfile) == [str(GRPC_PORT)]
    assert re.findall(r'"--rest_api_port=(\d+)"', dockerfile) == [str(REST_PORT)]
    assert _exposed(dockerfile) == {GRPC_PORT, REST_PORT}
    assert _probed(dockerfile) == REST_PORT


def test_gateway_image_environment() -> None:
    """The image sets only variables the gateway reads (besides Python's own), its port is
    the gateway's default and the one its HEALTHCHECK reads, and the metrics directory is
    on a tmpfs compose mounts over the read-only root."""
    dockerfile = _dockerfile("gateway")
    [assignments] = re.findall(r"^ENV (.+)$", dockerfile, re.MULTILINE)
    env = dict(re.findall(r"(\w+)=(\S+)", assignments))
    python = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
    assert set(env) - python <= {var.name for var in GATEWAY_VARS}
    assert int(env[PORT.name]) == PORT.default
    assert _exposed(dockerfile) == {PORT.default}
    assert re.findall(r'os\.environ\[\\"(\w+)\\"\]', dockerfile) == [PORT.name]
    gateway = compose_services()["gateway"]
    assert gateway["read_only"] is True
    directory = env[PROMETHEUS_MULTIPROC_DIR.name]
    assert any(directory.startswith(f"{tmpfs}/") for tmpfs in gateway["tmpfs"])


def test_proxy_image_ports() -> None:
    dockerfile = _dockerfile("gateway", "proxy")
    assert _exposed(dockerfile) == {GATEWAY_PORT, REDIRECT_PORT, METRICS_PORT}
    assert _probed(dockerfile) == GATEWAY_PORT


def test_nginx_ports_and_body_limit() -> None:
    """nginx listens on the proxy's ports, passes to gunicorn's, and refuses a body exactly
    where the gateway would, one image and the overhead allowed with it, in the gateway's
    words (sizes in MiB, as every message states them)."""
    text = CONFIG.read_text()
    listen, upstream = nginx_ports()
    assert (listen, upstream) == (GATEWAY_PORT, ("127.0.0.1", GUNICORN_PORT))
    listens = {int(port) for port in re.findall(r"listen (\d+)[ ;]", text)}
    assert listens == {GATEWAY_PORT, METRICS_PORT, REDIRECT_PORT}
    [kib] = re.findall(r"client_max_body_size (\d+)k;", text)
    limit = MAX_IMAGE_BYTES.default + BODY_OVERHEAD_BYTES
    assert int(kib) * 1024 == limit == Settings().max_request_bytes
    [page] = re.findall(r'"code": "request_too_large", "message": "([^"]+)"', text)
    assert page == too_large(limit).message == f"request body larger than {mib(limit)}"
    messages = re.findall(r'"message": "([^"]+)"', text)
    assert [m for m in messages if re.search(r"\d ?(?:bytes|[KMG]i?B|[kmg])\b", m)] == [page]


def test_nginx_says_no_such_path_as_the_gateway_does() -> None:
    pages = re.findall(r'"code": "not_found", "message": "([^"]+)"', CONFIG.read_text())
    assert pages and set(pages) == {NO_SUCH_PATH}


def test_compose_ports_and_gateway_environment() -> None:
    """compose publishes the containers' ports, gives the gateway only variables it reads,
    points it at TF Serving's gRPC port and has gunicorn listen where nginx sends."""
    services = compose_services()
    assert services["tf-serving"]["ports"] == [f"127.0.0.1:{REST_PORT}:{REST_PORT}"]
    gateway = services["gateway"]
    assert gateway["ports"] == [
        f"{GATEWAY_PORT}:{GATEWAY_PORT}",
        f"127.0.0.1:{METRICS_PORT}:{METRICS_PORT}",
    ]
    env = gateway["environment"]
    assert set(env) <= {var.name for var in GATEWAY_VARS}
    assert env[TF_SERVING_HOST.name].rsplit(":", 1)[1] == str(GRPC_PORT)
    _, upstream = nginx_ports()
    assert (env[HOST.name], int(env[PORT.name])) == upstream


# A port in prose or a command: `:9696`, `port 9696`, `port-forward deploy/gateway 9696`.
PORT_MENTION = re.compile(r":(\d{4,5})\b|\bport (\d{4,5})\b|port-forward \S+\s+(\d{4,5})\b")
# The monitoring namespace's own ports, which the docs port-forward to (`svc/kps-prometheus
# 9090`, `svc/grafana 3000:80`, then http://localhost:3000): not the containers'.
MONITORING_STACK = re.compile(
    r"-n monitoring port-forward svc/\S+\s+(\d+)(?::\d+)?`(?:, open\s+http://localhost:\1\b)?"
)


def test_docs_name_only_the_containers_ports() -> None:
    """Every port the docs, the Makefile and compose's comments name is one the contract
    holds, so a port changed there fails here until the docs say the new one (a mention
    naming the wrong one of the contract's ports is not caught)."""
    pages = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted(SERVICES.glob("*/README.md")),
        ROOT / "Makefile",
    ]
    texts = {page.relative_to(ROOT).as_posix(): page.read_text() for page in pages}
    compose = (ROOT / "docker-compose.yaml").read_text().splitlines()
    texts["docker-compose.yaml comments"] = "\n".join(
        line.split("#", 1)[1] for line in compose if "#" in line
    )
    others = []
    for name, text in texts.items():
        ours = MONITORING_STACK.sub(lambda stack: "\n" * stack[0].count("\n"), text)
        for mention in PORT_MENTION.finditer(ours):
            port = int(next(group for group in mention.groups() if group))
            if port not in CONTAINER_PORTS | {REGISTRY_PORT}:
                line = ours.count("\n", 0, mention.start()) + 1
                others.append(f"{name}:{line}: {mention[0]!r}")
    assert others == []


COST_FIGURE = re.compile(r"\$([\d,]+(?:\.(\d+))?)/(?:h|month)\b")


def test_cost_figures_in_the_docs_are_what_make_cost_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every cost the README or the docs quote from `make cost` (a paragraph or table row
    that names it, and the README's cost table) is a figure it prints today, to the digits
    quoted."""
    from infra.cost import main as make_cost

    assert make_cost([]) == 0
    printed = [float(m[1].replace(",", "")) for m in COST_FIGURE.finditer(capsys.readouterr().out)]
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    quoted, wrong = 0, []
    for page in pages:
        text = page.read_text()
        table = (
            text.split("### Cost per hour", 1)[1].split("\n#", 1)[0]
            if "### Cost per hour" in text
            else ""
        )
        blocks = [b for b in re.split(r"\n\s*\n", text) if "make cost" in b]
        blocks += [row for row in table.splitlines() if row.startswith(("| dev", "| prod"))]
        for block in blocks:
            for figure in COST_FIGURE.finditer(block):
                value, digits = float(figure[1].replace(",", "")), len(figure[2] or "")
                quoted += 1
                if not any(round(p, digits) == value for p in printed):
                    wrong.append(f"{page.name}: {figure[0]}")
    assert quoted >= 10, "the cost table and the figures around it were not found"
    assert wrong == [], f"not what `make cost` prints now: {wrong}"


def test_the_timeouts_the_docs_quote_are_the_programs() -> None:
    """How long `pulumi up` waits for each rollout, and how long TF Serving's model may
    take to load, as docs/operations.md says them."""
    from infra import gateway, tf_serving

    text = (ROOT / "docs" / "operations.md").read_text()
    [(tf, gw)] = re.findall(r"(\d+) minutes for TF Serving, (\d+) for the gateway", text)
    assert (int(tf), int(gw)) == (tf_serving.TIMEOUT_S // 60, gateway.TIMEOUT_S // 60)
    [(minutes, checks, period)] = re.findall(
        r"startup probe allows (\d+) minutes for \((\d+)\s+checks, (\d+) s apart", text
    )
    assert int(checks) == tf_serving.STARTUP_CHECKS
    assert int(period) == tf_serving.STARTUP_PERIOD_S
    assert int(minutes) * 60 == tf_serving.STARTUP_CHECKS * tf_serving.STARTUP_PERIOD_S
