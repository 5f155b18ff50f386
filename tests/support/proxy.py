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
def nginx_proxy(upstream_port: int, **timeouts: str) -> Iterator[str]:
    """Yields the proxy's base URL. ``timeouts`` override directives, e.g.
    ``client_body_timeout="1s"``."""
    if NGINX is None:
        raise RuntimeError("nginx is not installed")
    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        # Run as root (as CI does), nginx's workers drop to `nobody`: they must reach the
        # temp paths under this directory to spill request bodies there.
        os.chmod(work, 0o755)
        text = CONFIG.read_text()
        text = _replace_once(
            text, r"listen \d+ default_server;", f"listen 127.0.0.1:{port} default_server;"
        )
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
        base = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_until_serving(base + "/nginx-healthz", process, timeout_s=10)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"{exc}; nginx said: {log.read_text()[-2000:]}") from None
            yield base
        finally:
            process.terminate()
            process.wait(timeout=10)
