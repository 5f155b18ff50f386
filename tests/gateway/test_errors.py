"""Every error path of POST /predict answers JSON with the right status and never a 500."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from typing import get_args

import grpc
import pytest
from flask.testing import FlaskClient
from PIL import Image

from gateway.errors import ERRORS, NO_SUCH_PATH
from gateway.failures import Code
from gateway.model_errors import MODEL_FAILED, MODEL_UNAVAILABLE
from serving_contract.gateway_env import MIB, mib
from tests.gateway.conftest import ClientFactory, GatewayLog, current
from tests.support.fake_model_server import FakeModel
from tests.support.image_host import FIXTURES, ImageHost


def _error(response: object, status: int, code: str) -> str:
    assert response.status_code == status, response.json  # type: ignore[attr-defined]
    body = response.json  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return str(body["error"]["message"])


def _png(mode: str, size: tuple[int, int] = (40, 30), color: object = 128) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, "PNG")  # type: ignore[arg-type]
    return out.getvalue()


@pytest.mark.parametrize(
    ("body", "content_type", "fragment"),
    [
        (b"{not json", "application/json", "not valid JSON"),
        (b"[1, 2]", "application/json", "JSON object"),
        (b'{"url": 5}', "application/json", "non-empty string"),
        (b'{"url": ""}', "application/json", "non-empty string"),
        (b'{"urls": []}', "application/json", "non-empty list"),
        (b'{"urls": ["a", 3]}', "application/json", "urls[1]"),
        (b'{"url": "x", "urls": ["y"]}', "application/json", "exactly one"),
        (b'{"image": "x"}', "application/json", "unknown field"),
        (b"[" * 100000 + b"]" * 100000, "application/json", "not valid JSON"),
    ],
)
def test_bad_json_bodies_are_400(
    client: FlaskClient, body: bytes, content_type: str, fragment: str
) -> None:
    message = _error(
        client.post("/predict", data=body, content_type=content_type), 400, "bad_request"
    )
    assert fragment in message


def test_too_many_urls(make_client: ClientFactory) -> None:
    client = make_client(MAX_URLS="2")
    message = _error(
        client.post("/predict", json={"urls": ["http://a/1", "http://a/2", "http://a/3"]}),
        400,
        "bad_request",
    )
    assert "limit is 2" in message


def test_missing_upload_field(client: FlaskClient) -> None:
    response = client.post("/predict", data={"other": "x"}, content_type="multipart/form-data")
    _error(response, 400, "bad_request")


def test_unsupported_content_type(client: FlaskClient) -> None:
    _error(
        client.post("/predict", data=b"hello", content_type="text/plain"),
        415,
        "unsupported_content_type",
    )


def test_request_too_large(make_client: ClientFactory) -> None:
    client = make_client(MAX_IMAGE_BYTES="1000")
    message = _error(
        client.post("/predict", data=b"\xff\xd8\xff" + b"0" * 200_000, content_type="image/jpeg"),
        413,
        "request_too_large",
    )
    assert message == f"request body larger than {mib(1000 + 64 * 1024)}"


def test_downloaded_image_too_large(make_client: ClientFactory, image_host: ImageHost) -> None:
    client = make_client(MAX_IMAGE_BYTES="5000")
    message = _error(
        client.post("/predict", json={"url": image_host.url("/images/hat.jpg")}),
        413,
        "image_too_large",
    )
    assert "0.00476 MiB" in message  # 5000 bytes, in the one unit every message uses


@pytest.mark.parametrize(
    ("nbytes", "limit", "size"),
    [
        (10 * MIB, "10 MiB", "10 MiB"),
        (10 * MIB + 64 * 1024, "10.06 MiB", "10.07 MiB"),  # 10.0625: the body limit
        (10 * MIB + 1, "10 MiB", "10.01 MiB"),  # one byte over never reads as the limit
        (14_062_864, "13.41 MiB", "13.42 MiB"),
        (MIB // 2, "0.5 MiB", "0.5 MiB"),
        (5000, "0.00476 MiB", "0.00477 MiB"),  # three significant digits below 1 MiB
        (1024 * MIB, "1024 MiB", "1024 MiB"),
        (0, "0 MiB", "0 MiB"),
    ],
)
def test_sizes_are_stated_in_mib(nbytes: int, limit: str, size: str) -> None:
    assert (mib(nbytes), mib(nbytes, up=True)) == (limit, size)


def test_not_an_image(client: FlaskClient, image_host: ImageHost) -> None:
    _error(
        client.post("/predict", json={"url": image_host.url("/text")}),
        415,
        "unsupported_media_type",
    )
    _error(
        client.post("/predict", data=b"%PDF-1.4 ...", content_type="image/jpeg"),
        415,
        "unsupported_media_type",
    )
    _error(
        client.post("/predict", data=b"", content_type="image/jpeg"), 415, "unsupported_media_type"
    )


def test_content_encoding_is_not_decoded(client: FlaskClient, image_host: ImageHost) -> None:
    # We ask for identity; a gzip body is not decompressed (no zip bombs), so it is no image.
    _error(
        client.post("/predict", json={"url": image_host.url("/gzip")}),
        415,
        "unsupported_media_type",
    )


def test_undecodable_image(client: FlaskClient) -> None:
    data = (FIXTURES / "hat.jpg").read_bytes()
    _error(
        client.post("/predict", data=data[:300], content_type="image/jpeg"),
        422,
        "undecodable_image",
    )
    _error(
        client.post(
            "/predict", data=b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, content_type="image/png"
        ),
        422,
        "undecodable_image",
    )


def test_decompression_bomb_is_refused_before_decoding(make_client: ClientFactory) -> None:
    client = make_client(MAX_IMAGE_PIXELS="1000000")
    bomb = io.BytesIO()
    Image.new("L", (4000, 4000), 0).save(bomb, "PNG")  # 16 Mpx that compresses to a few KB
    assert len(bomb.getvalue()) < 100_000
    message = _error(
        client.post("/predict", data=bomb.getvalue(), content_type="image/png"),
        413,
        "image_too_large",
    )
    assert "4000x4000" in message


@pytest.mark.parametrize("code", [404, 500])
def test_upstream_http_errors_are_502(
    client: FlaskClient, image_host: ImageHost, code: int
) -> None:
    message = _error(
        client.post("/predict", json={"url": image_host.url(f"/status?code={code}")}),
        502,
        "download_failed",
    )
    assert f"HTTP {code}" in message


def test_connection_refused_is_502(client: FlaskClient) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connection refused
        _error(
            client.post("/predict", json={"url": f"http://127.0.0.1:{port}/x.jpg"}),
            502,
            "download_failed",
        )


def test_batch_error_names_the_failing_url(client: FlaskClient, image_host: ImageHost) -> None:
    urls = [image_host.url("/images/hat.jpg"), image_host.url("/status?code=404")]
    message = _error(client.post("/predict", json={"urls": urls}), 502, "download_failed")
    assert message.startswith("urls[1]:")


@pytest.mark.parametrize(
    ("code", "status", "error_code"),
    [
        (grpc.StatusCode.UNAVAILABLE, 503, "model_unavailable"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 503, "model_unavailable"),
        (grpc.StatusCode.INVALID_ARGUMENT, 502, "model_error"),
        (grpc.StatusCode.INTERNAL, 502, "model_error"),
    ],
)
def test_model_server_errors(
    client: FlaskClient,
    fake_model: tuple[FakeModel, int],
    code: grpc.StatusCode,
    status: int,
    error_code: str,
) -> None:
    model, _ = fake_model
    model.fail_with = code
    response = client.post(
        "/predict", data=(FIXTURES / "hat.jpg").read_bytes(), content_type="image/jpeg"
    )
    message = _error(response, status, error_code)
    if status == 503:
        assert response.headers["Retry-After"] == "5"
    # fixed words per code: the model server's own (here "injected failure") stay inside
    assert message == (MODEL_UNAVAILABLE if status == 503 else MODEL_FAILED)
    metrics = client.get("/metrics").text
    assert f'gateway_model_call_errors_total{{call="predict",grpc_status="{code.name}"}} 1.0' in (
        metrics
    )


def test_model_server_down_is_503_with_retry_after(
    make_client: ClientFactory, gateway_log: GatewayLog
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{s.getsockname()[1]}"
        client = make_client(TF_SERVING_HOST=target)
        response = client.post(
            "/predict", data=(FIXTURES / "hat.jpg").read_bytes(), content_type="image/jpeg"
        )
        assert _error(response, 503, "model_unavailable") == MODEL_UNAVAILABLE
        assert response.headers["Retry-After"] == "5"
        # the gateway itself can serve: ready, and the model's state in the same words
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json == {
            "status": "ready",
            "model": "unavailable",
            "detail": MODEL_UNAVAILABLE,
        }
        # what the public does not see, the log and the metrics keep
        assert target in gateway_log.details() and "UNAVAILABLE" in gateway_log.details()
        metrics = client.get("/metrics").text
        for call in ("metadata", "status"):
            assert f'{{call="{call}",grpc_status="UNAVAILABLE"}} 1.0' in metrics


def test_model_deadline_is_504(
    make_client: ClientFactory, fake_model: tuple[FakeModel, int]
) -> None:
    model, _ = fake_model
    client = make_client(MODEL_TIMEOUT_S="0.5")
    client.get("/readyz")  # learn the signature before the model gets slow
    model.delay_s = 4.0
    started = time.monotonic()
    response = client.post(
        "/predict", data=(FIXTURES / "hat.jpg").read_bytes(), content_type="image/jpeg"
    )
    _error(response, 504, "model_timeout")
    assert response.headers["Retry-After"] == "5"
    assert time.monotonic() - started < 3.0  # the 0.5 s deadline, not the 4 s stall


def test_model_not_loaded_is_503(make_client: ClientFactory) -> None:
    client = make_client(MODEL_NAME="some-other-model")
    response = client.post(
        "/predict", data=(FIXTURES / "hat.jpg").read_bytes(), content_type="image/jpeg"
    )
    _error(response, 503, "model_unavailable")


def test_unknown_route_and_method(client: FlaskClient) -> None:
    _error(client.get("/nope"), 404, "not_found")
    _error(client.get("/predict"), 405, "method_not_allowed")
    for path in ("/nope", "/static/nothing.js"):  # in the gateway's words, not Werkzeug's
        assert client.get(path).json["error"]["message"] == NO_SUCH_PATH


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def test_every_route_answers_a_wrong_method_in_json_with_allow(client: FlaskClient) -> None:
    """RFC 9110: a 405 lists the methods the path takes, here in the registry's format."""
    rules = list(client.application.url_map.iter_rules())
    assert len(rules) >= 7  # the API's routes and the website's
    for rule in rules:
        path = re.sub(r"<(?:\w+:)?\w+>", "site.css", rule.rule)
        allowed = sorted(rule.methods or ())
        for method in sorted(set(METHODS) - set(allowed)):
            response = client.open(path, method=method)
            assert response.headers["Allow"] == ", ".join(allowed), (method, path)
            assert response.status_code == 405, (method, path)
            if method != "HEAD":  # which has no body
                message = _error(response, 405, "method_not_allowed")
                assert message == f"{method} is not allowed here; use {', '.join(allowed)}"


@pytest.mark.allow_internal_error
def test_unexpected_exception_is_json_500(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    classifier = current(client.application).classifier

    def boom(data: bytes) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(classifier, "classify_upload", boom)
    _error(
        client.post("/predict", data=b"\xff\xd8\xff", content_type="image/jpeg"),
        500,
        "internal_error",
    )


def test_failures_name_exactly_the_registrys_codes() -> None:
    """mypy checks every code raised against ``Code``; this checks ``Code`` against the
    registry, so a raised code always has a status and words."""
    assert sorted(get_args(Code)) == sorted(ERRORS)


# Everything below the routes: what fetches, decodes, reads the body and keys, and calls
# the model raises Failures and leaves HTTP to the registry.
THE_WORK = (
    "api_keys", "classifier", "decode_memory", "fetch", "imaging", "jpeg", "model_client",
    "model_errors", "postprocess", "request_body", "request_parsing", "settings", "signature",
)  # fmt: skip


def test_the_work_imports_neither_flask_nor_the_registry() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {THE_WORK!r}: importlib.import_module('gateway.' + name)\n"
        "web = sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'werkzeug')"
        " or m == 'gateway.errors')\n"
        "print(web); sys.exit(1 if web else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
