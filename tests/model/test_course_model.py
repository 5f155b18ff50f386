"""The course's own model, the way a new user meets it: a Keras 2 `.h5` (nested Xception,
saved by ModelCheckpoint) exported by `make model`, served like TF Serving serves it, and
classified through the real gateway by URL, URL batch and upload."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from model_tools.keras_loader import keras_version_of
from tests.model.conftest import IMAGES, LABELS, course_inputs
from tests.support.compose import compose_gateway_env
from tests.support.e2e import check_gateway_matches_keras
from tests.support.gateway_process import gunicorn_gateway
from tests.support.image_host import ImageHost
from tests.support.reference import softmax
from tests.support.tf_server_process import tf_server

pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def course_server(course_export: Path) -> Iterator[int]:
    """The export served like TF Serving serves it by default: typed float_val/string_val
    answers."""
    with tf_server(course_export / "clothing-model") as port:
        yield port


def test_keras_3_cannot_read_the_course_file_but_the_export_does(
    course_h5: Path, course_export: Path
) -> None:
    import keras

    assert keras_version_of(course_h5).startswith("2.")
    with pytest.raises(Exception, match="SeparableConv2D"):
        keras.models.load_model(course_h5, compile=False)  # the failure users hit
    manifest = json.loads((course_export / "clothing-model" / "1" / "manifest.json").read_text())
    assert manifest["loaded_with"].startswith("tf_keras 2.")
    assert manifest["preprocessing"] == "tf"  # recognised from the nested `xception` base
    assert manifest["outputs_are_logits"] is True  # Dense(10) without activation
    assert manifest["class_labels"] == LABELS
    assert manifest["source"] == course_h5.name


def test_gateway_answers_what_the_course_model_answers(
    course_h5: Path, course_server: int, image_host: ImageHost
) -> None:
    import tf_keras

    model = tf_keras.models.load_model(course_h5, compile=False)
    expected = softmax(model.predict(course_inputs(tf_keras), verbose=0))
    env = compose_gateway_env(course_server)
    with gunicorn_gateway(env, workers=1, threads=4) as (base, _):
        check_gateway_matches_keras(base, image_host, IMAGES, expected, LABELS)


def test_course_notebook_client_gets_its_answer_from_the_preprocessed_signature(
    course_h5: Path, course_server: int
) -> None:
    """The course's notebook sends `input_8`-style float32 to TF Serving and reads the
    Dense layer's name: the `preprocessed` signature keeps those Keras names."""
    import grpc
    import tf_keras

    from gateway._proto.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    from gateway.tensors import fill_image_tensor, to_array
    from serving_contract.model import PREPROCESSED_SIGNATURE

    model = tf_keras.models.load_model(course_h5, compile=False)
    x = course_inputs(tf_keras)[:2]
    input_name = model.inputs[0].name.split(":")[0]
    output_name = model.layers[-1].name
    with grpc.insecure_channel(f"127.0.0.1:{course_server}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "clothing-model"
        request.model_spec.signature_name = PREPROCESSED_SIGNATURE
        fill_image_tensor(request.inputs[input_name], x)
        response = stub.Predict(request, timeout=60)
        np.testing.assert_allclose(
            np.asarray(to_array(response.outputs[output_name]), dtype=np.float64),
            model.predict(x, verbose=0),
            atol=1e-4,
        )
        # What an unchanged notebook (signature 'serving_default') gets: TF Serving's error.
        request.model_spec.signature_name = "serving_default"
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(request, timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Signature input alias: image" in info.value.details()
