"""The TF Serving image's configuration files, and the local compose stack, hang together."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from model_tools.cli import build_parser
from model_tools.warmup import DEFAULT_BATCH_SIZES

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


@pytest.mark.tensorflow
def test_model_config_parses_with_tf_serving_proto() -> None:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(
        (SERVING / "config" / "models.config").read_text(),
        model_server_config_pb2.ModelServerConfig(),
    )
    [model] = config.model_config_list.config
    default_name = build_parser().parse_args(["export", "m.keras"]).name
    assert model.name == default_name == "clothing-model"
    assert model.base_path == f"/models/{model.name}"
    assert model.model_version_policy.latest.num_versions == 1


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
    assert re.search(r"^FROM tensorflow/serving:2\.21\.0\$\{VARIANT\}$", text, re.MULTILINE)
    lock = (ROOT / "uv.lock").read_text()
    assert 'name = "tensorflow-serving-api"\nversion = "2.21.0"' in lock  # same TF Serving release
    assert "grpc.max_connection_age_ms=" in text
    assert "--batching_parameters_file=/config/batching_parameters.txt" in text
    assert "--monitoring_config_file=/config/monitoring.config" in text
    assert "--model_config_file=/config/models.config" in text
    assert re.search(r"^USER 10001", text, re.MULTILINE)
    assert "HEALTHCHECK" in text
    assert (
        'path: "/monitoring/prometheus/metrics"'
        in (SERVING / "config" / "monitoring.config").read_text()
    )


def test_compose_wires_gateway_to_model_by_service_name() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"tf-serving", "gateway"}
    gateway = services["gateway"]
    host, port = gateway["environment"]["TF_SERVING_HOST"].split(":")
    assert host == "tf-serving"
    assert port == "8500"
    assert gateway["depends_on"]["tf-serving"]["condition"] == "service_healthy"
    assert "9696:9696" in gateway["ports"]
    for name, service in services.items():
        dockerfile = ROOT / service["build"]["context"] / service["build"]["dockerfile"]
        assert dockerfile.is_file(), name
        assert service["read_only"] is True
