"""POST /predict end to end: real HTTP image host, real gRPC model server, both on loopback."""

from __future__ import annotations

import io

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image

from gateway.settings import CLOTHING_CLASSES
from tests.gateway.conftest import ClientFactory
from tests.support.fake_model_server import FIXED_LOGITS, FakeModel
from tests.support.image_host import FIXTURES, ImageHost
from tests.support.reference import keras_xception_input, softmax

CLASSES = [p.stem for p in sorted(FIXTURES.glob("*.jpg"))]


def _expected_probabilities() -> dict[str, float]:
    return dict(zip(CLOTHING_CLASSES, softmax(FIXED_LOGITS).tolist(), strict=True))


@pytest.mark.parametrize("name", CLASSES)
def test_sent_tensor_equals_keras_reference(
    name: str, client: FlaskClient, image_host: ImageHost, fake_model: tuple[FakeModel, int]
) -> None:
    model, _ = fake_model
    response = client.post("/predict", json={"url": image_host.url(f"/images/{name}.jpg")})
    assert response.status_code == 200, response.json
    [request] = model.requests
    tensor = request.inputs[model.input_name]
    assert tensor.tensor_content, "the image must travel as tensor_content bytes"
    assert not tensor.float_val
    [sent] = model.received_batches()
    reference = keras_xception_input(FIXTURES / f"{name}.jpg")
    assert sent.dtype == np.float32
    assert sent.shape == reference.shape == (1, 299, 299, 3)
    np.testing.assert_array_equal(sent, reference)


def test_single_url_response(client: FlaskClient, image_host: ImageHost) -> None:
    response = client.post("/predict", json={"url": image_host.url("/images/pants.jpg")})
    body = response.json
    assert response.status_code == 200
    assert body["model"] == {"name": "clothing-model", "version": 1, "signature": "serving_default"}
    expected = _expected_probabilities()
    assert list(body["probabilities"]) == list(CLOTHING_CLASSES)
    for label, p in body["probabilities"].items():
        assert p == pytest.approx(expected[label], abs=1e-9)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0)
    top = max(expected, key=lambda k: expected[k])
    assert body["top_class"] == top
    assert body["top_probability"] == pytest.approx(expected[top])


def test_batch_of_urls_is_one_grpc_call(
    client: FlaskClient, image_host: ImageHost, fake_model: tuple[FakeModel, int]
) -> None:
    model, _ = fake_model
    urls = [image_host.url(f"/images/{name}.jpg") for name in ("hat", "dress", "shoes")]
    response = client.post("/predict", json={"urls": urls})
    assert response.status_code == 200, response.json
    assert len(response.json["predictions"]) == 3
    [batch] = model.received_batches()
    assert batch.shape == (3, 299, 299, 3)
    for i, name in enumerate(("hat", "dress", "shoes")):
        np.testing.assert_array_equal(batch[i], keras_xception_input(FIXTURES / f"{name}.jpg")[0])


def test_multipart_upload_and_raw_body(
    client: FlaskClient, fake_model: tuple[FakeModel, int]
) -> None:
    model, _ = fake_model
    data = (FIXTURES / "skirt.jpg").read_bytes()
    response = client.post(
        "/predict",
        data={"image": (io.BytesIO(data), "skirt.jpg")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 200, response.json
    raw = client.post("/predict", data=data, content_type="image/jpeg")
    assert raw.status_code == 200, raw.json
    first, second = model.received_batches()
    reference = keras_xception_input(FIXTURES / "skirt.jpg")
    np.testing.assert_array_equal(first, reference)
    np.testing.assert_array_equal(second, reference)


def test_tensor_names_come_from_model_metadata(
    client: FlaskClient, image_host: ImageHost, fake_model: tuple[FakeModel, int]
) -> None:
    model, _ = fake_model
    model.input_name, model.output_name = "pixels", "class_scores"
    response = client.post("/predict", json={"url": image_host.url("/images/hat.jpg")})
    assert response.status_code == 200, response.json
    assert list(model.requests[-1].inputs) == ["pixels"]
    assert list(model.requests[-1].output_filter) == ["class_scores"]


def test_probabilities_pass_through_when_model_outputs_them(
    make_client: ClientFactory, image_host: ImageHost, fake_model: tuple[FakeModel, int]
) -> None:
    model, _ = fake_model
    model.logits = softmax(FIXED_LOGITS).astype(np.float32)
    client = make_client(OUTPUT_ACTIVATION="none")
    body = client.post("/predict", json={"url": image_host.url("/images/hat.jpg")}).json
    assert body["probabilities"]["dress"] == pytest.approx(float(model.logits[0]), rel=1e-6)


def test_other_model_shapes_are_configurable(
    make_client: ClientFactory, image_host: ImageHost, fake_model: tuple[FakeModel, int]
) -> None:
    model, _ = fake_model
    model.input_shape, model.num_classes = (-1, 224, 224, 3), 3
    model.logits = np.array([0.0, 1.0, 2.0], dtype=np.float32)
    client = make_client(IMAGE_SIZE="224", CLASS_LABELS="a,b,c", RESIZE_FILTER="bilinear")
    response = client.post("/predict", json={"url": image_host.url("/images/hat.jpg")})
    assert response.status_code == 200, response.json
    assert response.json["top_class"] == "c"
    assert model.received_batches()[0].shape == (1, 224, 224, 3)


def test_label_count_mismatch_is_a_clear_error(
    make_client: ClientFactory, image_host: ImageHost
) -> None:
    client = make_client(CLASS_LABELS="a,b,c")
    response = client.post("/predict", json={"url": image_host.url("/images/hat.jpg")})
    assert response.status_code == 502
    assert response.json["error"]["code"] == "model_misconfigured"
    assert "10 classes but 3 class labels" in response.json["error"]["message"]
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "CLASS_LABELS" in ready.json["error"]["message"]


def test_exif_orientation_is_applied(
    client: FlaskClient, fake_model: tuple[FakeModel, int]
) -> None:
    model, _ = fake_model
    upright = Image.open(FIXTURES / "longsleeve.jpg")
    rotated = upright.transpose(Image.Transpose.ROTATE_90)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with "rotate 90 CW to display" in EXIF
    stored = io.BytesIO()
    rotated.save(stored, "PNG", exif=exif.tobytes())
    plain = io.BytesIO()
    upright.save(plain, "PNG")
    assert (
        client.post("/predict", data=stored.getvalue(), content_type="image/png").status_code == 200
    )
    assert (
        client.post("/predict", data=plain.getvalue(), content_type="image/png").status_code == 200
    )
    from_exif, from_upright = model.received_batches()
    np.testing.assert_array_equal(from_exif, from_upright)
