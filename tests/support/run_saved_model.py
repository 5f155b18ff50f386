"""Run a SavedModel's signatures the way TF Serving's loader does, in whatever TensorFlow
runs this script (tests only; it imports nothing from the project).

    python run_saved_model.py VERSION_DIR INPUTS.npz OUTPUTS.npz

INPUTS.npz holds arrays named ``<signature>/<input alias>``; OUTPUTS.npz gets
``<signature>/<output alias>`` (strings as bytes). The model is loaded into a session with
``tf.compat.v1.saved_model.loader.load`` and run on the signature's tensor names: the same
graph, kernels and variable restore that ``tensorflow_model_server`` uses.
"""

from __future__ import annotations

import os
import sys
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf


def main(version_dir: str, inputs_path: str, outputs_path: str) -> None:
    tf.compat.v1.disable_eager_execution()
    inputs = np.load(inputs_path)
    by_signature: dict[str, dict[str, np.ndarray]] = {}
    for key in inputs.files:
        signature, alias = key.split("/", 1)
        by_signature.setdefault(signature, {})[alias] = inputs[key]
    results: dict[str, Any] = {}
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], version_dir)
        for name, feeds in by_signature.items():
            signature = meta_graph.signature_def[name]
            fetches = {alias: info.name for alias, info in signature.outputs.items()}
            feed_dict = {signature.inputs[alias].name: value for alias, value in feeds.items()}
            for alias, value in session.run(fetches, feed_dict).items():
                array = np.asarray(value)
                # strings come back as objects: store them as bytes (no pickles)
                results[f"{name}/{alias}"] = array.astype(bytes) if array.dtype == object else array
    np.savez(outputs_path, **results)
    print(f"TensorFlow {tf.__version__} ran {sorted(by_signature)}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
