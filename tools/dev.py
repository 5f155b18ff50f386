"""``make dev``: try an exported model without Docker. The model server and the gateway on
this machine, the website at http://localhost:9696, until Ctrl-C.

The model server is ``python -m model_tools serve``: TensorFlow in Python that loads the
export the way TF Serving does and answers its gRPC API, so the gateway cannot tell. It is
not TF Serving (no batching, one request at a time, not what the images run) and it is for
trying a model, not for serving anyone: ``make run`` runs the real TF Serving image. The
gateway is the real one, under gunicorn with its own settings, as in its image but without
the proxy in front.

    python tools/dev.py EXPORT_DIR [--name NAME] [--port 9696] [--model-port 8500]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from serving_contract.gateway_env import (
    HOST,
    MODEL_NAME,
    PORT,
    PROMETHEUS_MULTIPROC_DIR,
    TF_SERVING_HOST,
)
from serving_contract.ports import GATEWAY_PORT, GRPC_PORT

LOOPBACK = "127.0.0.1"
# Loading a model and replaying its warmup (the course's Xception: ~20 s on a laptop CPU).
READY_TIMEOUT_S = 600
STOP_TIMEOUT_S = 20


def _listening(port: int) -> bool:
    """Whether something answers on the port (a trial bind would also fail on the
    connections a previous run left in TIME_WAIT)."""
    with socket.socket() as s:
        return s.connect_ex((LOOPBACK, port)) == 0


# Straight to loopback, whatever proxy the environment names.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _serving(readyz: str) -> bool:
    """Whether the gateway serves the model: its /readyz says so in the body (it is ready,
    200, as soon as the gateway itself can answer, whatever the model's state)."""
    try:
        with _DIRECT.open(readyz, timeout=2) as answer:
            return bool(json.load(answer).get("model") == "available")
    except (urllib.error.URLError, OSError, ValueError):  # not listening yet, or not JSON
        return False


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    # Ctrl-C reaches this process twice (from the terminal, and forwarded by `uv run`): the
    # second must not cut the wait for the servers short and leave them running.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # gunicorn's workers too
            process.wait()


def _wait(until: Callable[[], bool], processes: list[subprocess.Popen[bytes]], what: str) -> bool:
    """Until ``until()``; False (said) if a process exits first or the time runs out."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not until():
        if any(p.poll() is not None for p in processes):
            print("error: make dev stopped: a server exited (its error is above)", file=sys.stderr)
            return False
        if time.monotonic() > deadline:
            print(f"error: {what} was not ready after {READY_TIMEOUT_S} s", file=sys.stderr)
            return False
        time.sleep(0.2)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make dev", description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir", type=Path, help="what `make model` wrote (MODEL_DIR)")
    parser.add_argument("--name", help="the exported model to serve (MODEL_NAME)")
    parser.add_argument("--port", type=int, default=GATEWAY_PORT, help="the gateway's")
    parser.add_argument("--model-port", type=int, default=GRPC_PORT, help="the model server's")
    args = parser.parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):  # as Ctrl-C: stop both servers
        signal.signal(signum, signal.default_int_handler)
    for port, what in ((args.port, "gateway"), (args.model_port, "model server")):
        if _listening(port):
            print(
                f"error: port {port} (the {what}'s) is taken, perhaps by `make run`: stop it, "
                'or choose others: make dev DEV_ARGS="--port 9797 --model-port 8600"',
                file=sys.stderr,
            )
            return 2
    name = ["--name", args.name] if args.name else []
    with tempfile.TemporaryDirectory(prefix="clothing-dev-") as metrics:
        env = {
            **os.environ,
            TF_SERVING_HOST.name: f"{LOOPBACK}:{args.model_port}",
            HOST.name: LOOPBACK,
            PORT.name: str(args.port),
            PROMETHEUS_MULTIPROC_DIR.name: metrics,
            **({MODEL_NAME.name: args.name} if args.name else {}),
        }
        model_server = [sys.executable, "-m", "model_tools", "serve", str(args.export_dir)]
        gateway = [sys.executable, "-m", "gunicorn", "-c", "python:gateway.gunicorn_conf"]
        site = f"http://localhost:{args.port}"
        # Each server in a session of its own, out of reach of the terminal's Ctrl-C: this
        # process stops each with one SIGTERM. (A gunicorn worker that also got the
        # terminal's SIGINT and its master's SIGQUIT could hang in its exit, and outlive
        # its master still holding the port.) S603: this interpreter, a list, no shell.
        processes = [
            subprocess.Popen(  # noqa: S603
                [*model_server, *name, "--port", str(args.model_port)], start_new_session=True
            ),
        ]
        try:
            # The gateway starts once the model server listens (it does once the model is
            # loaded and warmed up), as compose starts it once TF Serving is healthy: a gRPC
            # channel that tried earlier waits out its reconnect backoff, seconds after the
            # model is there.
            if not _wait(lambda: _listening(args.model_port), processes, "the model server"):
                return 1
            processes.append(
                subprocess.Popen(  # noqa: S603
                    [*gateway, "gateway.app:create_app()"], env=env, start_new_session=True
                )
            )
            readyz = f"http://{LOOPBACK}:{args.port}/readyz"
            if not _wait(lambda: _serving(readyz), processes, "the gateway"):
                return 1
            print(
                f"\nReady: {site}  (the website; the API: POST {site}/predict)\n"
                "  The model server is TensorFlow in Python, not TF Serving: for trying a\n"
                "  model, not for serving (`make run` runs TF Serving in Docker).\n"
                "  Ctrl-C stops both.\n",
                flush=True,
            )
            while all(p.poll() is None for p in processes):
                time.sleep(0.5)
            print(
                "error: a server exited (its error is above); stopping the other", file=sys.stderr
            )
            return 1
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM
            return 0
        finally:
            _stop(processes)


if __name__ == "__main__":
    sys.exit(main())
