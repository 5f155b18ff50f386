"""The export tool: signature, manifest, warmup, inspect, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_tools.cli import main
from model_tools.errors import ExportError
from model_tools.export import ExportRequest, export
from model_tools.inspect_model import describe
from model_tools.warmup import WARMUP_FILE
from tests.model.conftest import LABELS, tiny_classifier

pytestmark = pytest.mark.tensorflow


def test_signature_names_are_stable(exported: Path) -> None:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(exported))
    signature = loaded.signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    assert list(inputs) == ["image"]  # not the Keras layer's "input_8"
    assert inputs["image"].shape.as_list() == [None, 299, 299, 3]
    assert list(signature.structured_outputs) == ["logits"]  # not "dense_7" or "output_0"


def test_manifest_describes_the_export_and_the_gateway_reads_it(exported: Path) -> None:
    from gateway.manifest import load_manifest

    data = json.loads((exported / "manifest.json").read_text())
    assert data["format"] == 1
    assert data["version"] == 1
    assert data["input"] == {"name": "image", "shape": [None, 299, 299, 3], "dtype": "float32"}
    assert data["output"] == {"name": "logits", "shape": [None, 10], "dtype": "float32"}
    assert data["class_labels"] == LABELS
    assert data["outputs_are_logits"] is True
    manifest = load_manifest(exported / "manifest.json")
    assert (manifest.input_name, manifest.output_name) == ("image", "logits")
    assert manifest.input_size == (299, 299)


def test_saved_model_computes_what_keras_computes(exported: Path, keras_model_file: Path) -> None:
    import keras
    import tensorflow as tf

    model = keras.models.load_model(keras_model_file)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 299, 299, 3)).astype(np.float32)
    served = tf.saved_model.load(str(exported)).signatures["serving_default"](image=tf.constant(x))
    np.testing.assert_allclose(
        served["logits"].numpy(), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_warmup_records_parse_and_match_the_signature(exported: Path) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    loaded = tf.saved_model.load(str(exported)).signatures["serving_default"]
    records = list(tf.data.TFRecordDataset(str(exported / WARMUP_FILE)).as_numpy_iterator())
    batch_sizes = []
    for raw in records:
        log = prediction_log_pb2.PredictionLog.FromString(raw)
        request = log.predict_log.request
        assert request.model_spec.name == "clothing-model"
        assert request.model_spec.signature_name == "serving_default"
        assert list(request.inputs) == ["image"]
        array = tf.make_ndarray(request.inputs["image"])
        assert array.shape[1:] == (299, 299, 3)
        batch_sizes.append(array.shape[0])
        out = loaded(image=tf.constant(array))["logits"]
        assert out.shape == (array.shape[0], 10)
    assert batch_sizes == [1, 2, 4, 8, 16, 32]
    assert (exported / WARMUP_FILE).stat().st_size < 4096


def test_inspect_prints_the_signature(exported: Path) -> None:
    text = describe(exported)
    assert "signature_def['serving_default']:" in text
    assert "inputs['image'] tensor_info:" in text
    assert "shape: (-1, 299, 299, 3)" in text
    assert "outputs['logits'] tensor_info:" in text
    assert "Method name is: tensorflow/serving/predict" in text
    assert '"class_labels"' in text


def test_h5_and_saved_model_inputs_and_softmax_detection(tmp_path: Path, exported: Path) -> None:
    h5 = tmp_path / "probs.h5"
    tiny_classifier(softmax=True).save(h5)
    version = export(ExportRequest(h5, tmp_path / "out", "m", 3, LABELS))
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["outputs_are_logits"] is False
    assert manifest["output"]["name"] == "probabilities"
    # A SavedModel as input: re-export; logits vs probabilities must then be stated.
    with pytest.raises(ExportError, match="--outputs"):
        export(ExportRequest(exported, tmp_path / "out2", "m", 1, LABELS))
    again = export(ExportRequest(exported, tmp_path / "out2", "m", 1, LABELS, outputs="logits"))
    assert json.loads((again / "manifest.json").read_text())["output"]["name"] == "logits"


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
        (["inspect", "{out}"], "not a SavedModel directory"),
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


def test_existing_version_is_not_overwritten(tmp_path: Path, keras_model_file: Path) -> None:
    first = export(ExportRequest(keras_model_file, tmp_path, "m", 1, LABELS))
    marker = first / "marker"
    marker.write_text("keep")
    with pytest.raises(ExportError, match="exists"):
        export(ExportRequest(keras_model_file, tmp_path, "m", 1, LABELS))
    assert marker.read_text() == "keep"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1"]  # no staging left behind
