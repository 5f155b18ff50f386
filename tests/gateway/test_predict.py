"""POST /predict end to end: real HTTP image host, real gRPC model server, both on loopback.

The model server answers like TF Serving (typed output fields unless told otherwise) and
describes itself like a ``model_tools`` export: the gateway is given no per-model settings.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image

from model_tools.cli import CLOTHING_CLASSES
from serving_contract.model import PROBABILITIES_OUTPUT
from tests.gateway.conftest import ClientFactory
from tests.support.fake_model_server import FIXED_LOGITS, FakeModel
from tests.support.image_host import FIXTURES, ImageHost
from tests.support.reference import keras_input, keras_pixels, softmax

CLASSES = [p.stem for p in sorted(FIXTURES.glob("*.jpg"))]


def _expected_probabilities() -> dict[str, float]:
    return dict(zip(CLOTHING_CLASSES, softmax(FIXED_LOGITS).tolist(), strict=True))


@pytest.mark.parametrize("name", CLASSES)
def test_sent_pixels_equal_keras_load_img(
    name: str, client: FlaskClient, image_host: ImageHost, fake_model: tuple[FakeModel, int]
) -> None:
    model, _ = fake_model
    response = client.post("/predict", json={"url": image_host.url(f"/images/{name}.jpg")})
    assert response.status_code == 200, response.json
    [request] = model.requests
    tensor = request.inputs[model.input_name]
    assert tensor.tensor_content, "the image must travel as tensor_content bytes"
    assert len(tensor.tensor_content) == 299 * 299 * 3  # uint8: a quarter of float32
    [sent] = model.received_batches()
    reference = keras_pixels(FIXTURES / f"{name}.jpg")
    assert sent.dtype == np.uint8
    assert sent.shape == reference.shape == (1, 299, 299, 3)
    np.testing.assert_array_equal(sent, reference)


@pytest.mark.parametrize("tensor_content", [False, True], ids=["typed-fields", "tensor-content"])
def test_single_url_response(
    client: FlaskClient,
    image_host: ImageHost,
    fake_model: tuple[FakeModel, int],
    tensor_content: bool,
) -> None:
    model, _ = fake_model
    model.tensor_content = tensor_content  # both ways TF Serving can answer
    response = client.post("/predict", json={"url": image_host.url("/images/pants.jpg")})
    body = response.json
    assert response.status_code == 200, body
    assert body["model"] == {"name": "clothing-model", "version": 1, "signature": "serving_default"}
    expected = _expected_probabilities()
    assert list(body["probabilities"]) == list(CLOTHING_CLASSES)
    for label, p in body["probabilities"].items():
        assert p == pytest.approx(expected[label], abs=1e-9)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0)
    top = max(expected, key=lambda k: expected[k])
    assert body["top_class"] == top
    assert body["top_probability"] == pytest.approx(expected[top])


def test_labels_come_from_the_model(
    client: FlaskClient, image_host: ImageHost, fake_model: tuple[FakeModel, int]
) -> None:
    model, _ = fake_model
    model.labels = tuple(f"class {i}" for i in range(10))
    body = client.post("/predict", json={"url": image_host.url("/images/hat.jpg")}).json
    assert list(body["probabilities"]) == list(model.labels)
    assert body["top_class"] == "class 0"
    assert list(model.requests[-1].output_filter) == ["logits", "classes"]


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
        np.testing.assert_array_equal(batch[i], keras_pixels(FIXTURES / f"{name}.jpg")[0])


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
    reference = keras_pixels(FIXTURES / "skirt.jpg")
    np.testing.assert_array_equal(first, reference)
    np.testing.assert_array_equal(second, reference)


def test_tensor_names_come_from_model_metadata(
    client: FlaskClient, image_host: ImageHost, fake_model: tuple[FakeModel, int]
) -> None:
    model, _ = fake_model
    model.input_name = "pixels"
    response = client.post("/predict", json={"url": image_host.url("/images/hat.jpg")})
    assert response.status_code == 200, response.json
    assert list(model.requests[-1].inputs) == ["pixels"]


def test_probabilities_pass_through_when_the_model_outputs_them(
    client: FlaskClient, image_host: ImageHost, fake_model: tuple[FakeModel, int]
) -> None:
    model, _ = fake_model
    model.output_name = PROBABILITIES_OUTPUT  # the export's name for softmax outputs
    model.logits = softmax(FIXED_LOGITS).astype(np.float32)
    body = client.post("/predict", json={"url": image_host.url("/images/hat.jpg")}).json
    assert body["probabilities"]["dress"] == pytest.approx(float(model.logits[0]), rel=1e-6)


def test_another_model_needs_no_settings(
    client: FlaskClient, image_host: ImageHost, fake_model: tuple[FakeModel, int]
) -> None:
    model, _ = fake_model
    model.input_shape, model.labels = (-1, 224, 224, 3), ("a", "b", "c")
    model.logits = np.array([0.0, 1.0, 2.0], dtype=np.float32)
    response = client.post("/predict", json={"url": image_host.url("/images/hat.jpg")})
    assert response.status_code == 200, response.json
    assert response.json["top_class"] == "c"
    np.testing.assert_array_equal(
        model.received_batches()[0], keras_pixels(FIXTURES / "hat.jpg", (224, 224))
    )
    assert "uint8 224x224 input" in client.get("/readyz").json["detail"]


def test_float_model_gets_keras_preprocessing_when_told_the_mode(
    make_client: ClientFactory, image_host: ImageHost, fake_model: tuple[FakeModel, int]
) -> None:
    """A SavedModel that takes preprocessed float32 (not exported by model_tools)."""
    model, _ = fake_model
    model.input_dtype = "float32"
    unready = make_client().get("/readyz")
    assert unready.status_code == 503
    assert "set PREPROCESSING" in unready.json["error"]["message"]
    client = make_client(PREPROCESSING="tf")
    response = client.post("/predict", json={"url": image_host.url("/images/hat.jpg")})
    assert response.status_code == 200, response.json
    [sent] = model.received_batches()
    assert sent.dtype == np.float32
    np.testing.assert_array_equal(sent, keras_input(FIXTURES / "hat.jpg"))


@pytest.mark.parametrize(
    ("change", "env", "fragment"),
    [
        (
            {"classes_output": False},
            {"CLASS_LABELS": "a,b,c"},
            "10 classes but 3 class labels are configured",
        ),
        # the model says its labels and whether it returns logits: settings may not differ
        ({}, {"CLASS_LABELS": ",".join(reversed(CLOTHING_CLASSES))}, "carries its own class"),
        ({}, {"OUTPUT_ACTIVATION": "none"}, "OUTPUT_ACTIVATION=none contradicts the model"),
        (
            {"output_name": "probabilities"},
            {"OUTPUT_ACTIVATION": "softmax"},
            "'probabilities' holds probabilities",
        ),
        ({}, {"MODEL_OUTPUT_NAME": "classes"}, "is not a score output"),
        ({}, {"IMAGE_SIZE": "224"}, "is 299x299 but IMAGE_SIZE is 224x224"),
        ({}, {"PREPROCESSING": "tf"}, "would normalise them twice"),
        ({"classes_output": False}, {}, "no 'classes' output"),
        ({"output_name": "scores"}, {}, "set OUTPUT_ACTIVATION"),
        ({"input_shape": (-1, -1, -1, 3)}, {}, "set IMAGE_SIZE"),
        ({}, {"MODEL_SIGNATURE": "nope"}, "has no signature 'nope'"),
    ],
)
def test_a_model_that_does_not_fit_is_a_readiness_reason(
    make_client: ClientFactory,
    image_host: ImageHost,
    fake_model: tuple[FakeModel, int],
    change: dict[str, object],
    env: dict[str, str],
    fragment: str,
) -> None:
    model, _ = fake_model
    for key, value in change.items():
        setattr(model, key, value)
    client = make_client(**env)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert fragment in ready.json["error"]["message"]
    response = client.post("/predict", json={"url": image_host.url("/images/hat.jpg")})
    assert response.status_code == 502
    assert response.json["error"]["code"] == "model_misconfigured"
    assert model.predict_calls == 0  # never a silent wrong answer


def test_explicit_settings_override_the_model(
    make_client: ClientFactory, image_host: ImageHost, fake_model: tuple[FakeModel, int]
) -> None:
    model, _ = fake_model
    model.classes_output, model.output_name = False, "scores"
    labels = ",".join(f"l{i}" for i in range(10))
    client = make_client(CLASS_LABELS=labels, OUTPUT_ACTIVATION="none")
    body = client.post("/predict", json={"url": image_host.url("/images/hat.jpg")}).json
    assert list(body["probabilities"]) == labels.split(",")
    assert body["probabilities"]["l0"] == pytest.approx(float(FIXED_LOGITS[0]))  # not softmaxed


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
