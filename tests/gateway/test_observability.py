"""Health, readiness, metrics, request ids, JSON logs and the OpenAPI document."""

from __future__ import annotations

import io
import json
import logging
import re
import warnings
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from gateway._proto.tensorflow_serving.apis import get_model_status_pb2
from gateway.logs import configure_logging
from gateway.openapi import openapi_document
from serving_contract.api_keys import digest
from tests.gateway.conftest import ClientFactory
from tests.support.fake_model_server import FakeModel
from tests.support.image_host import FIXTURES, ImageHost

# A model server that sleeps when idle, or one that does not (the default).
SLEEPS = {"no": {}, "yes": {"MODEL_WAKE_ESTIMATE_S": "300"}}


def test_healthz_does_not_touch_the_model(
    client: FlaskClient, fake_model: tuple[FakeModel, int]
) -> None:
    model, _ = fake_model
    model.state = get_model_status_pb2.ModelVersionStatus.LOADING
    assert client.get("/healthz").json == {"status": "ok"}


@pytest.mark.parametrize(("sleeps", "loading"), [("no", "unavailable"), ("yes", "waking")])
def test_readyz_is_ready_and_tracks_the_models_state(
    make_client: ClientFactory, fake_model: tuple[FakeModel, int], sleeps: str, loading: str
) -> None:
    """The gateway can serve whatever the model's state, which the body says: a load
    balancer would otherwise send nothing while the model loads (or sleeps), instead of
    the gateway's JSON 503."""
    client = make_client(**SLEEPS[sleeps])
    model, _ = fake_model
    model.state = get_model_status_pb2.ModelVersionStatus.LOADING
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["status"] == "ready" and response.json["model"] == loading
    assert "LOADING" in response.json["detail"]
    model.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {
        "status": "ready",
        "model": "available",
        "detail": "model 'clothing-model' versions [1] available: uint8 299x299 input, "
        "logits output",
    }


@pytest.mark.parametrize("sleeps", SLEEPS)
def test_readyz_is_not_ready_for_a_model_this_gateway_cannot_serve(
    make_client: ClientFactory, sleeps: str
) -> None:
    """The model server answers, with a model that does not fit the settings: a broken
    deployment, which must not become ready (a model server that sleeps changes nothing)."""
    response = make_client(IMAGE_SIZE="224", **SLEEPS[sleeps]).get("/readyz")
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert response.json["error"]["code"] == "not_ready"
    assert "is 299x299 but IMAGE_SIZE is 224x224" in response.json["error"]["message"]


def test_metrics_count_requests_stages_and_errors(client: FlaskClient) -> None:
    client.post("/predict", data=(FIXTURES / "hat.jpg").read_bytes(), content_type="image/jpeg")
    client.post("/predict", data=b"nope", content_type="image/jpeg")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'gateway_requests_total{endpoint="/predict",status="200"} 1.0' in text
    assert 'gateway_requests_total{endpoint="/predict",status="415"} 1.0' in text
    assert 'gateway_errors_total{code="unsupported_media_type"} 1.0' in text
    # counted on receipt, so the upload that was no image too
    assert 'gateway_images_total{source="upload"} 2.0' in text
    # the rejected upload was timed in preprocessing too, but never reached the model
    assert 'gateway_stage_duration_seconds_count{stage="preprocess"} 2.0' in text
    assert 'gateway_stage_duration_seconds_count{stage="inference"} 1.0' in text
    assert 'gateway_request_duration_seconds_bucket{endpoint="/predict",le="+Inf"} 2.0' in text


def test_images_are_counted_on_receipt(
    make_client: ClientFactory, image_host: ImageHost, tmp_path: Path
) -> None:
    """gateway_images_total is the model's demand, which TF Serving's autoscaler reads:
    every image a request asks for once its key and body passed, whatever comes next, and
    nothing of a request refused before."""
    key = "observability-" + "k" * 30
    keys = tmp_path / "keys"
    keys.write_text(f"ci {digest(key)}\n")
    client = make_client(API_KEYS_FILE=str(keys), MAX_IMAGE_BYTES="1000")
    auth = {"X-API-Key": key}
    refused = [
        client.post("/predict", json={"url": image_host.url("/images/hat.jpg")}),
        client.post("/predict", data=b"{", content_type="application/json", headers=auth),
        client.post("/predict", data=b"x" * 200_000, content_type="image/jpeg", headers=auth),
        client.post("/predict", data=b"x", content_type="text/plain", headers=auth),
        client.post(
            "/predict", data={"other": "x"}, content_type="multipart/form-data", headers=auth
        ),
    ]
    assert [r.status_code for r in refused] == [401, 400, 413, 415, 400]
    # nothing counted, but both series there from the start, at 0 (rate() needs a sample
    # before the first image)
    before = client.get("/metrics").text
    assert 'gateway_images_total{source="url"} 0.0' in before
    assert 'gateway_images_total{source="upload"} 0.0' in before

    urls = [image_host.url("/images/hat.jpg"), image_host.url("/status?code=404"), "ftp://x"]
    asked = [
        client.post("/predict", json={"urls": urls}, headers=auth),
        client.post("/predict", data=b"nope", content_type="image/jpeg", headers=auth),
        client.post(
            "/predict",
            data={"image": (io.BytesIO(b"nope"), "x.jpg")},
            content_type="multipart/form-data",
            headers=auth,
        ),
    ]
    assert [r.status_code for r in asked] == [413, 415, 415]  # the first URL's image is >1000 B
    text = client.get("/metrics").text
    assert 'gateway_images_total{source="url"} 3.0' in text
    assert 'gateway_images_total{source="upload"} 2.0' in text


def test_request_id_is_echoed_and_logged(client: FlaskClient) -> None:
    [handler] = [
        h for h in logging.getLogger("gateway").handlers if getattr(h, "_gateway_json", False)
    ]
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        _exercise_request_ids(client)
    finally:
        handler.setStream(previous)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    mine = [r for r in records if r.get("request_id") == "abc-123"]
    assert mine and mine[-1]["status"] == 415 and mine[-1]["error_code"] == "unsupported_media_type"
    assert mine[-1]["level"] == "INFO" and mine[-1]["path"] == "/predict"
    assert all(len(r["request_id"]) in (7, 32) for r in records)


def _exercise_request_ids(client: FlaskClient) -> None:
    response = client.post(
        "/predict", data=b"nope", content_type="image/jpeg", headers={"X-Request-ID": "abc-123"}
    )
    assert response.headers["X-Request-ID"] == "abc-123"
    generated = client.get("/readyz", headers={"X-Request-ID": "bad id; drop table"})
    assert len(generated.headers["X-Request-ID"]) == 32


def test_openapi_document_is_valid_and_matches_routes(client: FlaskClient) -> None:
    document = openapi_document()
    validate(document)
    assert client.get("/openapi.json").json == document
    routes = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in client.application.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == documented


def test_error_docs_come_from_the_registry() -> None:
    """The README's table and the OpenAPI document list exactly the registry's codes."""
    from pathlib import Path

    from gateway.errors import ERRORS, markdown_table

    readme = (
        Path(__file__).resolve().parents[2] / "services" / "gateway" / "README.md"
    ).read_text()
    section = readme.split("<!-- errors:start -->\n", 1)[1].split("\n<!-- errors:end -->", 1)[0]
    assert section == markdown_table(), "regenerate with `python -m gateway.errors`"
    document = openapi_document()
    error = document["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["properties"]["code"]["enum"] == sorted(ERRORS)
    described = {
        status
        for path in document["paths"].values()
        for operation in path.values()
        for status in operation["responses"]
        if int(status) >= 400
    }
    assert {str(kind.status) for code, kind in ERRORS.items()} - {"404", "405"} <= described


def test_pillows_warnings_about_client_images_are_not_logged() -> None:
    """A warning per hostile image would be a log line per request at the client's rate."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        configure_logging()
        warnings.warn_explicit(
            "Tag data larger than file", UserWarning, "TiffImagePlugin.py", 1,
            module="PIL.TiffImagePlugin",
        )  # fmt: skip
        warnings.warn_explicit(
            "Image size exceeds limit", RuntimeWarning, "Image.py", 1, module="PIL.Image"
        )
        warnings.warn_explicit("ours", UserWarning, "gateway.py", 1, module="gateway.app")
    assert [str(w.message) for w in seen] == ["ours"]
