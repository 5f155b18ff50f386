"""Any Keras image classifier, end to end: four keras.applications architectures with
different input sizes and normalisations, each exported with the real CLI (preprocessing
recognised from the model), served like TF Serving, and called through the gateway
configured exactly as docker-compose configures it: no per-model settings anywhere."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from model_tools.cli import main
from tests.model.conftest import IMAGES, LABELS
from tests.support.classifiers import calibrate_batchnorm, fit_head
from tests.support.compose import compose_gateway_env, compose_services
from tests.support.e2e import check_gateway_matches_keras
from tests.support.gateway_process import gunicorn_gateway
from tests.support.image_host import ImageHost
from tests.support.reference import keras_input, softmax
from tests.support.tf_server_process import tf_server

pytestmark = pytest.mark.tensorflow

# architecture, keras.applications module, input size, the mode export must pick
ARCHITECTURES = [
    ("Xception", "xception", 299, "tf"),
    ("MobileNetV2", "mobilenet_v2", 224, "tf"),
    ("ResNet50", "resnet50", 224, "caffe"),
    ("EfficientNetB0", "efficientnet", 224, "none"),
]
MODEL_SETTINGS = {
    "IMAGE_SIZE", "PREPROCESSING", "CLASS_LABELS", "OUTPUT_ACTIVATION",
    "MODEL_INPUT_NAME", "MODEL_OUTPUT_NAME", "MODEL_MANIFEST",
}  # fmt: skip


def test_compose_gives_the_gateway_no_per_model_settings() -> None:
    env = compose_services()["gateway"]["environment"]
    assert not MODEL_SETTINGS & set(env)


@pytest.mark.parametrize(
    ("architecture", "family_name", "size", "mode"),
    ARCHITECTURES,
    ids=[a[0] for a in ARCHITECTURES],
)
def test_keras_classifier_end_to_end(
    architecture: str,
    family_name: str,
    size: int,
    mode: str,
    tmp_path: Path,
    image_host: ImageHost,
) -> None:
    import keras

    family: ModuleType = getattr(keras.applications, family_name)
    keras.utils.set_random_seed(3)
    model = getattr(keras.applications, architecture)(
        weights=None, include_top=True, classes=len(LABELS), classifier_activation=None,
        input_shape=(size, size, 3),
    )  # fmt: skip
    # The reference: Keras's own load_img + <family>.preprocess_input, as the user trained.
    x = np.concatenate([keras_input(path, (size, size), family) for path in IMAGES])
    assert calibrate_batchnorm(model, x, keras) > 0
    fit_head(model, x, list(range(len(LABELS))), keras)
    expected = softmax(model.predict(x, verbose=0))
    model_file = tmp_path / f"{architecture}.keras"
    model.save(model_file)

    out = tmp_path / "models"
    assert main(["export", str(model_file), "--out", str(out), "--warmup-batch-sizes", "1,2"]) == 0
    manifest = (out / "clothing-model" / "1" / "manifest.json").read_text()
    assert f'"preprocessing": "{mode}"' in manifest  # recognised, not asked for

    # MobileNetV2 is served with tensor_content answers, the others with typed fields:
    # the gateway must read both forms TF Serving can use.
    with (
        tf_server(out / "clothing-model", tensor_content=architecture == "MobileNetV2") as port,
        gunicorn_gateway(compose_gateway_env(port), workers=1, threads=4) as (base, _),
    ):
        check_gateway_matches_keras(base, image_host, IMAGES, expected, LABELS)
