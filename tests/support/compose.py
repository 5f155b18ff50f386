"""The gateway's configuration as ``docker-compose.yaml`` gives it (tests only), so tests
run the gateway the way users do, with no per-model settings added."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
# compose's `${NAME}` and `${NAME:-default}` (the default also when NAME is empty)
_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolate(value: str, shell: Mapping[str, str]) -> str:
    """``value`` as compose reads it from the file, given the shell's variables."""
    return _VARIABLE.sub(lambda m: shell.get(m[1]) or (m[2] or ""), value)


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())[
        "services"
    ]
    return services


def compose_gateway_env(model_port: int, shell: Mapping[str, str] | None = None) -> dict[str, str]:
    """compose's gateway environment for a shell that sets ``shell`` (by default nothing,
    as `make run` with no options), pointed at a model server on loopback and allowed to
    download from the loopback image host."""
    env = {
        k: interpolate(str(v), shell or {})
        for k, v in compose_services()["gateway"]["environment"].items()
    }
    env["TF_SERVING_HOST"] = f"127.0.0.1:{model_port}"
    env["FETCH_ALLOW"] = "127.0.0.0/8"
    env["MODEL_TIMEOUT_S"] = "30"  # Xception on this CPU, not a GPU
    return env
