"""Run the gateway's nginx proxy (services/gateway/proxy/nginx.conf) on loopback, in front
of a gunicorn gateway (tests only). Debian's nginx-light, the same nginx the proxy image
installs; the config is the repository's, with only its port, upstream, temp paths and
(where a test says) timeouts rewritten for a test run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.gateway_process import free_port, wait_until_serving

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "services" / "gateway" / "proxy" / "nginx.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)


def _replace_once(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, replacement, text)
    assert count == 1, f"expected one {pattern!r} in nginx.conf, found {count}"
    return new


@contextmanager
def nginx_servers(upstream_port: int, **timeouts: str) -> Iterator[dict[int, str]]:
    """Runs the proxy; yields each port nginx.conf listens on -> the base URL of that
    server here (each on a free loopback port). ``timeouts`` override directives, e.g.
    ``client_body_timeout="1s"``."""
    if NGINX is None:
        raise RuntimeError("nginx is not installed")
    with tempfile.TemporaryDirectory() as work:
        # Run as root (as CI does), nginx's workers drop to `nobody`: they must reach the
        # temp paths under this directory to spill request bodies there.
        os.chmod(work, 0o755)
        original = CONFIG.read_text()
        servers: dict[int, str] = {}

        def listen_here(match: re.Match[str]) -> str:
            port = free_port()
            servers[int(match.group(1))] = f"http://127.0.0.1:{port}"
            return f"listen 127.0.0.1:{port}{match.group(2)};"

        text = re.sub(r"listen (\d+)((?: default_server)?);", listen_here, original)
        text = _replace_once(
            text, r"server 127\.0\.0\.1:\d+;", f"server 127.0.0.1:{upstream_port};"
        )
        text = text.replace("/tmp/", f"{work}/")
        for directive, value in timeouts.items():
            text = _replace_once(text, rf"{directive} \S+;", f"{directive} {value};")
        config = Path(work) / "nginx.conf"
        config.write_text(text)
        log = Path(work) / "error.log"  # a file: a pipe nobody reads would fill and block
        with log.open("wb") as errors:
            process = subprocess.Popen(
                [NGINX, "-c", str(config), "-e", "stderr", "-g", "daemon off;"],
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
        [main] = re.findall(r"listen (\d+) default_server;", original)
        try:
            try:
                wait_until_serving(servers[int(main)] + "/nginx-healthz", process, timeout_s=10)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"{exc}; nginx said: {log.read_text()[-2000:]}") from None
            yield servers
        finally:
            process.terminate()
            process.wait(timeout=10)


@contextmanager
def nginx_proxy(upstream_port: int, **timeouts: str) -> Iterator[str]:
    """Yields the base URL of the proxy's main server (the pod's port)."""
    from serving_contract.ports import GATEWAY_PORT

    with nginx_servers(upstream_port, **timeouts) as servers:
        yield servers[GATEWAY_PORT]
