"""The TF Serving image's configuration files, and the local compose stack, hang together."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from model_tools.warmup import DEFAULT_BATCH_SIZES
from serving_contract.ports import REST_PORT

ROOT = Path(__file__).resolve().parents[2]
SERVING = ROOT / "services" / "tf-serving"


def _batching() -> dict[str, list[int]]:
    values: dict[str, list[int]] = {}
    text = (SERVING / "config" / "batching_parameters.txt").read_text()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"(\w+)(?: \{ value: (\d+) \}|: (\w+))", line)
        assert match, f"unexpected line {line!r}"
        key, boxed, plain = match.groups()
        values.setdefault(key, []).append(
            int(boxed) if boxed else (int(plain) if plain.isdigit() else 0)
        )
    return values


def test_batching_matches_the_warmup_requests() -> None:
    b = _batching()
    allowed = b["allowed_batch_sizes"]
    assert allowed == sorted(allowed)
    assert allowed[-1] == b["max_batch_size"][0]
    assert tuple(allowed) == DEFAULT_BATCH_SIZES  # every shape the batcher forms is warmed up
    assert b["batch_timeout_micros"][0] <= 5000
    assert b["num_batch_threads"][0] >= 1
    assert b["max_enqueued_batches"][0] >= 1


def test_dockerfile_flags() -> None:
    text = (SERVING / "Dockerfile").read_text()
    assert re.search(r"^ARG TF_SERVING_VERSION=\d+\.\d+\.\d+$", text, re.MULTILINE)
    assert re.search(
        r"^FROM tensorflow/serving:\$\{TF_SERVING_VERSION\}\$\{VARIANT\}$", text, re.MULTILINE
    )
    assert "grpc.max_connection_age_ms=" in text
    assert "--batching_parameters_file=/config/batching_parameters.txt" in text
    assert "--monitoring_config_file=/config/monitoring.config" in text
    assert "--model_config_file=/models/models.config" in text  # written by the export
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert (
        'path: "/monitoring/prometheus/metrics"'
        in (SERVING / "config" / "monitoring.config").read_text()
    )


def test_the_serving_version_is_set_once() -> None:
    """compose and the Pulumi build take the Dockerfile's default; nothing overrides it."""
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    assert "TF_SERVING_VERSION" not in str(compose)
    assert "TF_SERVING_VERSION" not in (ROOT / "infra" / "images.py").read_text()
    # The stubs' API may be newer than the server: the protos only ever grow.
    from tests.model.test_tf_serving_runtime import serving_version

    lock = (ROOT / "uv.lock").read_text()
    api = re.search(r'name = "tensorflow-serving-api"\nversion = "(\d+)\.(\d+)', lock)
    assert api
    server = tuple(int(part) for part in serving_version().split(".")[:2])
    assert (int(api.group(1)), int(api.group(2))) >= server


def test_healthcheck_asks_for_the_exported_model(tmp_path: Path) -> None:
    """The image's HEALTHCHECK reads the model's name from the export's models.config and
    is healthy only when TF Serving's REST API says that model is AVAILABLE."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    [command] = re.findall(r"CMD (\[\"bash\".*\])", (SERVING / "Dockerfile").read_text())
    script = json.loads(command)[2]
    (tmp_path / "models.config").write_text(
        'model_config_list {\n  config {\n    name: "shoes"\n    base_path: "/models/shoes"\n'
        "  }\n}\n"
    )
    seen: list[str] = []
    state = {"value": "LOADING"}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            body = json.dumps({"model_version_status": [{"state": state["value"]}]}).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    local = script.replace("/models/models.config", str(tmp_path / "models.config")).replace(
        f"/dev/tcp/127.0.0.1/{REST_PORT}", f"/dev/tcp/127.0.0.1/{port}"
    )
    try:
        assert subprocess.run(["bash", "-c", local], check=False, timeout=10).returncode != 0
        state["value"] = "AVAILABLE"
        assert subprocess.run(["bash", "-c", local], check=False, timeout=10).returncode == 0
    finally:
        server.shutdown()
    assert seen == ["/v1/models/shoes", "/v1/models/shoes"]


def test_compose_wires_gateway_to_model_by_service_name() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"tf-serving", "gateway", "gateway-proxy"}
    gateway = services["gateway"]
    host, _ = gateway["environment"]["TF_SERVING_HOST"].split(":")
    assert host == "tf-serving"
    assert gateway["depends_on"]["tf-serving"]["condition"] == "service_healthy"
    # The proxy shares the gateway's network namespace (its ports: tests/test_one_source.py).
    assert services["gateway-proxy"]["network_mode"] == "service:gateway"
    for name, service in services.items():
        dockerfile = ROOT / service["build"]["context"] / service["build"]["dockerfile"]
        assert dockerfile.is_file(), name
        assert service["read_only"] is True
