from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.settings import CLOTHING_CLASSES, Settings, SettingsError


def test_defaults_serve_the_clothing_model() -> None:
    s = Settings.from_env({})
    assert s.class_labels == CLOTHING_CLASSES
    assert (s.image_size, s.resize_filter, s.preprocessing) == ((299, 299), "nearest", "tf")
    assert s.output_activation == "softmax"
    assert s.input_name is None and s.output_name is None  # learned from the model
    assert s.fetch_policy.allowed_networks == () and not s.fetch_policy.allowed_hosts


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"MAX_URLS": "zero"}, "MAX_URLS: 'zero' is not an integer"),
        ({"MAX_URLS": "0"}, "MAX_URLS: must be > 0"),
        ({"MODEL_TIMEOUT_S": "-1"}, "MODEL_TIMEOUT_S"),
        ({"MODEL_TIMEOUT_S": "inf"}, "MODEL_TIMEOUT_S"),
        (
            {"GRPC_LB_POLICY": "random"},
            "GRPC_LB_POLICY: 'random' is not one of round_robin, pick_first",
        ),
        ({"PREPROCESSING": "xception"}, "PREPROCESSING"),
        ({"RESIZE_FILTER": "cubic"}, "RESIZE_FILTER"),
        ({"OUTPUT_ACTIVATION": "sigmoid"}, "OUTPUT_ACTIVATION"),
        ({"IMAGE_SIZE": "299x"}, "IMAGE_SIZE"),
        ({"IMAGE_SIZE": "0"}, "IMAGE_SIZE"),
        ({"EXIF_TRANSPOSE": "maybe"}, "EXIF_TRANSPOSE"),
        ({"CLASS_LABELS": "a,,b"}, "CLASS_LABELS: empty item"),
        ({"CLASS_LABELS": "a,b,a"}, "CLASS_LABELS: labels must be unique"),
        ({"FETCH_ALLOW": "10.0.0.0/8,not a host!"}, "FETCH_ALLOW"),
        ({"MODEL_VERSION": "-3"}, "MODEL_VERSION"),
        ({"MODEL_MANIFEST": "/nonexistent/manifest.json"}, "MODEL_MANIFEST: cannot read"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert fragment in str(info.value)


def test_manifest_supplies_model_description(tmp_path: Path) -> None:
    manifest = {
        "format": 1,
        "model_name": "shoes",
        "version": 3,
        "signature_name": "serving_default",
        "input": {"name": "pixels", "shape": [None, 224, 224, 3], "dtype": "float32"},
        "output": {"name": "probs", "shape": [None, 2], "dtype": "float32"},
        "class_labels": ["boot", "sandal"],
        "outputs_are_logits": False,
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    s = Settings.from_env({"MODEL_MANIFEST": str(path)})
    assert (s.model_name, s.input_name, s.output_name) == ("shoes", "pixels", "probs")
    assert s.class_labels == ("boot", "sandal")
    assert s.image_size == (224, 224)
    assert s.output_activation == "none"
    # explicit variables still win
    assert Settings.from_env({"MODEL_MANIFEST": str(path), "MODEL_NAME": "x"}).model_name == "x"
    path.write_text(json.dumps({**manifest, "class_labels": []}))
    with pytest.raises(SettingsError, match="class_labels"):
        Settings.from_env({"MODEL_MANIFEST": str(path)})
