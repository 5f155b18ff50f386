"""infra.hpa_handover against a stand-in of the Kubernetes API that answers as the real one
does: DELETE of an existing HPA 200 with the object, of a missing one 404 with a Status,
a refused one 403."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from infra.hpa_handover import main
from tests.infra.test_rollout_wait import kubeconfig

PATH = "/apis/autoscaling/v2/namespaces/clothing/horizontalpodautoscalers/"


class HpaApi(BaseHTTPRequestHandler):
    hpas: set[str]
    forbidden: bool
    calls: list[tuple[str, str, str | None]]

    def do_DELETE(self) -> None:
        cls = type(self)
        cls.calls.append(("DELETE", self.path, self.headers.get("Authorization")))
        name = self.path.removeprefix(PATH)
        if cls.forbidden:
            code, body = 403, {"kind": "Status", "status": "Failure", "code": 403}
        elif self.path.startswith(PATH) and name in cls.hpas:
            cls.hpas.discard(name)
            code, body = 200, {"kind": "HorizontalPodAutoscaler", "metadata": {"name": name}}
        else:
            code, body = 404, {"kind": "Status", "status": "Failure", "reason": "NotFound"}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[tuple[str, type[HpaApi]]]:
    handler = type("Api", (HpaApi,), {"hpas": {"tf-serving"}, "forbidden": False, "calls": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def run(server: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["clothing/tf-serving"], io.StringIO(json.dumps(kubeconfig(server))))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_old_hpa_is_deleted_once_and_keda_s_is_never_touched(
    api: tuple[str, type[HpaApi]], capsys: pytest.CaptureFixture[str]
) -> None:
    server, handler = api
    handler.hpas.add("keda-hpa-tf-serving")
    assert run(server, capsys)[:2] == (
        0,
        "deleted HPA clothing/tf-serving: KEDA's ScaledObject scales the Deployment now\n",
    )
    assert handler.calls == [("DELETE", PATH + "tf-serving", "Bearer t0ken")]
    # again (a new stack, or a rerun): nothing there, nothing done, no failure
    assert run(server, capsys)[:2] == (
        0,
        "no HPA clothing/tf-serving: nothing to hand over to KEDA\n",
    )
    assert handler.hpas == {"keda-hpa-tf-serving"}


def test_a_refusal_fails_the_command(
    api: tuple[str, type[HpaApi]], capsys: pytest.CaptureFixture[str]
) -> None:
    server, handler = api
    handler.forbidden = True
    code, _, err = run(server, capsys)
    assert code == 1 and err.startswith("error: DELETE ") and "403" in err
    assert handler.hpas == {"tf-serving"}


def test_an_unreachable_api_fails_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run("http://127.0.0.1:9", capsys)
    assert code == 1 and err.startswith("error: ")
