"""The export tool: which Keras loads a file, the served contract (signatures, labels,
in-graph preprocessing), manifest, warmup, TF Serving config, inspect, and clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from model_tools.cli import main
from model_tools.errors import ExportError
from model_tools.export import ExportRequest, export
from model_tools.inspect_model import describe
from model_tools.keras_loader import keras_version_of, load_model
from model_tools.preprocessing import choose_mode, detect_mode, normalise
from model_tools.serving_config import FILENAME as MODELS_CONFIG
from model_tools.warmup import DEFAULT_BATCH_SIZES, WARMUP_FILE
from tests.model.conftest import LABELS, tiny_classifier
from tests.support.image_host import FIXTURES
from tests.support.reference import keras_pixels

pytestmark = pytest.mark.tensorflow


def _signatures(version_dir: Path) -> dict[str, object]:
    import tensorflow as tf

    return dict(tf.saved_model.load(str(version_dir)).signatures)


def test_serving_signature_takes_pixels_and_returns_scores_and_labels(exported: Path) -> None:
    import tensorflow as tf

    signature = _signatures(exported)["serving_default"]
    _, inputs = signature.structured_input_signature  # type: ignore[attr-defined]
    assert list(inputs) == ["image"]  # not the Keras layer's "input_8"
    assert inputs["image"].dtype == tf.uint8
    assert inputs["image"].shape.as_list() == [None, 299, 299, 3]
    outputs = signature.structured_outputs  # type: ignore[attr-defined]
    assert set(outputs) == {"logits", "classes"}
    assert outputs["classes"].dtype == tf.string
    pixels = np.zeros((3, 299, 299, 3), np.uint8)
    classes = signature(image=tf.constant(pixels))["classes"].numpy()  # type: ignore[operator]
    assert classes.shape == (3, 10)  # one row per image: TF Serving's batching splits it
    assert [label.decode() for label in classes[2]] == LABELS


def test_preprocessed_signature_keeps_the_keras_names(exported: Path) -> None:
    signature = _signatures(exported)["preprocessed"]
    _, inputs = signature.structured_input_signature  # type: ignore[attr-defined]
    assert list(inputs) == ["input_8"]
    assert list(signature.structured_outputs) == ["dense_7"]  # type: ignore[attr-defined]


def test_saved_model_computes_what_keras_computes(exported: Path, keras_model_file: Path) -> None:
    import keras
    import tensorflow as tf
    from keras.applications import xception

    model = keras.models.load_model(keras_model_file)
    pixels = np.concatenate([keras_pixels(FIXTURES / f"{n}.jpg") for n in ("hat", "shoes")])
    keras_input = xception.preprocess_input(pixels.astype(np.float32))
    expected = model.predict(keras_input, verbose=0)
    signatures = _signatures(exported)
    served = signatures["serving_default"](image=tf.constant(pixels))  # type: ignore[operator]
    np.testing.assert_allclose(served["logits"].numpy(), expected, rtol=1e-5, atol=1e-6)
    direct = signatures["preprocessed"](input_8=tf.constant(keras_input))  # type: ignore[operator]
    np.testing.assert_allclose(direct["dense_7"].numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["tf", "torch", "caffe", "none"])
def test_in_graph_normalisation_is_keras_preprocess_input(mode: str) -> None:
    import tensorflow as tf
    from keras.applications import imagenet_utils

    pixels = keras_pixels(FIXTURES / "dress.jpg")
    graph = normalise(tf.constant(pixels), mode).numpy()
    x = pixels.astype(np.float32)
    keras_x = x if mode == "none" else imagenet_utils.preprocess_input(x.copy(), mode=mode)
    np.testing.assert_array_equal(graph, keras_x)


def test_manifest_describes_the_export(exported: Path) -> None:
    data = json.loads((exported / "manifest.json").read_text())
    assert data["format"] == 2
    assert (data["model_name"], data["version"]) == ("clothing-model", 1)
    assert data["signatures"]["serving_default"] == {
        "inputs": {"image": {"dtype": "uint8", "shape": [None, 299, 299, 3]}},
        "outputs": {
            "logits": {"dtype": "float32", "shape": [None, 10]},
            "classes": {"dtype": "string", "shape": [None, 10]},
        },
    }
    assert list(data["signatures"]["preprocessed"]["inputs"]) == ["input_8"]
    assert data["class_labels"] == LABELS
    assert data["outputs_are_logits"] is True
    assert data["preprocessing"] == "tf"
    assert data["loaded_with"].startswith("keras 3.")
    assert data["exported_with"].startswith("tensorflow 2.")


def test_warmup_records_cover_every_served_shape(exported: Path) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    signatures = _signatures(exported)
    seen = []
    for raw in tf.data.TFRecordDataset(str(exported / WARMUP_FILE)).as_numpy_iterator():
        request = prediction_log_pb2.PredictionLog.FromString(raw).predict_log.request
        assert request.model_spec.name == "clothing-model"
        [(name, tensor)] = request.inputs.items()
        array = tf.make_ndarray(tensor)  # one value, repeated over the shape
        assert array.shape[1:] == (299, 299, 3)
        out = signatures[request.model_spec.signature_name](**{name: tf.constant(array)})  # type: ignore[operator]
        assert all(value.shape[0] == array.shape[0] for value in out.values())
        seen.append((request.model_spec.signature_name, array.dtype.name, array.shape[0]))
    expected = [
        (sig, dtype, size)
        for sig, dtype in (("serving_default", "uint8"), ("preprocessed", "float32"))
        for size in DEFAULT_BATCH_SIZES
    ]
    assert seen == expected
    assert (exported / WARMUP_FILE).stat().st_size < 8192


def test_models_config_lists_the_exports_for_tf_serving(exported: Path) -> None:
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse(
        (exported.parents[1] / MODELS_CONFIG).read_text(),
        model_server_config_pb2.ModelServerConfig(),
    )
    [model] = config.model_config_list.config
    assert model.name == "clothing-model"
    assert model.base_path == "/models/clothing-model"
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.latest.num_versions == 1


def test_inspect_prints_the_signatures(exported: Path) -> None:
    text = describe(exported)
    assert "signature_def['serving_default']:" in text
    assert "inputs['image'] tensor_info:" in text
    assert "dtype: DT_UINT8" in text
    assert "shape: (-1, 299, 299, 3)" in text
    assert "outputs['classes'] tensor_info:" in text
    assert "signature_def['preprocessed']:" in text
    assert '"class_labels"' in text


def test_inspect_of_an_export_shows_the_version_tf_serving_serves(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make inspect` passes the export directory: the newest version, by number."""
    out = tmp_path / "models"
    for version in ("2", "10"):
        shutil.copytree(exported, out / "clothing-model" / version)
        manifest = out / "clothing-model" / version / "manifest.json"
        manifest.write_text(manifest.read_text().replace("tiny.keras", f"v{version}.keras"))
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "signature_def['serving_default']:" in text
    assert "v10.keras" in text and "v2.keras" not in text


@pytest.mark.parametrize(
    ("names", "mode"),
    [
        (["model", "xception", "dense"], "tf"),  # the course's nested base
        (["mobilenetv2_1.00_224"], "tf"),
        (["resnet50"], "caffe"),
        (["resnet50v2"], "tf"),
        (["vgg16"], "caffe"),
        (["densenet121"], "torch"),
        (["efficientnetb0"], "none"),
        (["efficientnetv2-b0"], "none"),
        (["MobileNetV3Small"], "none"),  # Keras 3's spelling
        (["MobilenetV3small"], "none"),  # tf_keras's
        (["NASNet"], "tf"),
        (["my_net", "dense"], None),
        (["resnet50", "xception"], None),  # two families disagree: ask
    ],
)
def test_preprocessing_is_recognised_from_keras_application_names(
    names: list[str], mode: str | None
) -> None:
    assert detect_mode(names) == mode


def test_unrecognised_model_needs_the_preprocessing_named() -> None:
    with pytest.raises(ExportError, match="pass --preprocessing"):
        choose_mode("auto", ["my_net"])
    assert choose_mode("torch", ["xception"]) == "torch"  # an explicit mode wins


def test_a_base_built_without_its_own_preprocessing_needs_the_mode_named(tmp_path: Path) -> None:
    """MobileNetV3 (like EfficientNetV2 and ConvNeXt) normalises inside only when built with
    include_preprocessing=True; without it, "none" would be silently wrong."""
    import keras

    def export_of(include_preprocessing: bool) -> Path:
        base = keras.applications.MobileNetV3Small(
            weights=None,
            include_top=False,
            input_shape=(96, 96, 3),
            include_preprocessing=include_preprocessing,
        )
        model = keras.Sequential(
            [base, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)]
        )
        path = tmp_path / f"m{int(include_preprocessing)}.keras"
        model.save(path)
        return export(
            ExportRequest(path, tmp_path / "out", path.stem, 1, ["a", "b"], warmup_batch_sizes=(1,))
        )

    manifest = json.loads((export_of(True) / "manifest.json").read_text())
    assert manifest["preprocessing"] == "none"
    with pytest.raises(ExportError, match="include_preprocessing=True"):
        export_of(False)


def test_keras_versions_are_read_from_the_files(tmp_path: Path) -> None:
    import tf_keras

    h5 = tmp_path / "k2.h5"
    tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)]).save(h5)
    assert keras_version_of(h5).startswith("2.")
    keras3 = tmp_path / "k3.keras"
    tiny_classifier(size=32).save(keras3)
    assert keras_version_of(keras3).startswith("3.")
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("config.json", "{}")
    with pytest.raises(ExportError, match="not a Keras archive"):
        keras_version_of(broken)


def test_keras_2_saved_model_directory_loads_with_tf_keras(tmp_path: Path) -> None:
    import tf_keras

    inputs = tf_keras.Input((32, 32, 3), name="pixels_in")
    x = tf_keras.layers.GlobalAveragePooling2D()(inputs)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(10, activation="softmax")(x))
    directory = tmp_path / "k2_saved_model"
    model.save(directory, save_format="tf")
    assert (directory / "keras_metadata.pb").is_file()
    loaded = load_model(directory)
    assert loaded.loaded_with.startswith("tf_keras 2.")
    assert loaded.ends_in_softmax is True
    assert loaded.input_name == "pixels_in"
    version = export(ExportRequest(directory, tmp_path / "out", "m", 1, LABELS, preprocessing="tf"))
    assert json.loads((version / "manifest.json").read_text())["outputs_are_logits"] is False


def test_h5_and_saved_model_inputs_and_softmax_detection(tmp_path: Path, exported: Path) -> None:
    h5 = tmp_path / "probs.h5"
    tiny_classifier(softmax=True).save(h5)
    version = export(ExportRequest(h5, tmp_path / "out", "m", 3, LABELS, preprocessing="tf"))
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["outputs_are_logits"] is False
    assert "probabilities" in manifest["signatures"]["serving_default"]["outputs"]
    # An earlier export as input: its manifest says what its `preprocessed` model takes
    # and returns, so nothing needs stating again.
    again = export(ExportRequest(exported, tmp_path / "out2", "m", 1, LABELS))
    manifest = json.loads((again / "manifest.json").read_text())
    assert manifest["preprocessing"] == "tf"
    assert manifest["outputs_are_logits"] is True
    # A plain SavedModel says neither: logits vs probabilities must be stated.
    plain = tmp_path / "plain"
    shutil.copytree(exported, plain)
    (plain / "manifest.json").unlink()
    with pytest.raises(ExportError, match="--outputs"):
        export(ExportRequest(plain, tmp_path / "out3", "m", 1, LABELS, preprocessing="tf"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "/nonexistent/model.keras"], "model not found"),
        (["export", "{txt}"], "expected a .keras or .h5 file"),
        (
            ["export", "{model}", "--labels", "a,b,c"],
            "3 class labels given but the model has 10 outputs",
        ),
        (["export", "{model}", "--labels", "a,a,b,c,d,e,f,g,h,i"], "unique"),
        (["export", "{model}", "--version", "0"], "positive integer"),
        (["export", "{gray}"], "expected [batch, height, width, 3]"),
        (["export", "{model}", "--labels-file", "/nonexistent"], "cannot read labels file"),
        (["export", "{model}"], "pass --preprocessing"),
        (["inspect", "{txt}"], "not a SavedModel directory"),
        (["inspect", "{out}"], "no exported model 'clothing-model' in"),
        (["serve", "{out}"], "no exported model 'clothing-model' in"),
    ],
)
def test_bad_input_gives_a_clear_error(
    args: list[str],
    message: str,
    tmp_path: Path,
    keras_model_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    txt = tmp_path / "model.txt"
    txt.write_text("x")
    gray = tmp_path / "gray.keras"
    import keras

    inp = keras.Input((64, 64, 1))
    keras.Model(inp, keras.layers.Dense(10)(keras.layers.Flatten()(inp))).save(gray)
    values = {
        "txt": str(txt),
        "model": str(keras_model_file),
        "gray": str(gray),
        "out": str(tmp_path),
    }
    argv = [a.format(**values) for a in args] + (
        ["--out", str(tmp_path / "o")] if args[0] == "export" else []
    )
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_without_tensorflow_the_cli_says_where_to_run(
    tmp_path: Path,
    keras_model_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An Intel Mac installs the tooling without TensorFlow (no wheel): one clear message."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name)
    )
    assert main(["export", str(keras_model_file), "--out", str(tmp_path / "o")]) == 2
    assert "tools/in-linux.sh python -m model_tools" in capsys.readouterr().err


# Inside the CLI, TensorFlow is imported, then logs through absl, then through its own logger,
# as saving a model does: the last line must print once.
_LOGS_AS_AN_EXPORT_DOES = """
import sys
from absl import logging as absl_logging
import model_tools.inspect_model
from model_tools.cli import main

def describe(path):
    import tensorflow as tf
    absl_logging.warning("absl line")
    tf.get_logger().warning("tensorflow line")
    return "described"

model_tools.inspect_model.describe = describe
sys.exit(main(["inspect", sys.argv[1]]))
"""


def test_the_cli_prints_each_tensorflow_log_line_once(exported: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _LOGS_AS_AN_EXPORT_DOES, str(exported)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("absl line") == 1, result.stderr
    assert result.stderr.count("tensorflow line") == 1, result.stderr


def test_an_unwritable_output_is_a_clear_error(
    tmp_path: Path, keras_model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    argv = ["export", str(keras_model_file), "--out", str(blocker / "out"), "--preprocessing", "tf"]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_existing_version_is_not_overwritten(tmp_path: Path, keras_model_file: Path) -> None:
    request = ExportRequest(keras_model_file, tmp_path, "m", 1, LABELS, preprocessing="tf")
    first = export(request)
    marker = first / "marker"
    marker.write_text("keep")
    with pytest.raises(ExportError, match="exists"):
        export(request)
    assert marker.read_text() == "keep"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1"]  # no staging left behind
