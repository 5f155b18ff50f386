"""``python -m model_tools export|inspect|serve``: package a Keras model for TF Serving,
show what an export holds, try it without TF Serving."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from pathlib import Path

from model_tools.errors import ExportError
from model_tools.preprocessing import AUTO
from model_tools.serving_config import newest_version
from serving_contract.model import DEFAULT_MODEL_NAME, PREPROCESSING_MODES
from serving_contract.ports import GRPC_PORT

# The course's clothing model: its 10 outputs in order.
CLOTHING_CLASSES = (
    "dress", "hat", "longsleeve", "outwear", "pants",
    "shirt", "shoes", "shorts", "skirt", "t-shirt",
)  # fmt: skip


def _labels(args: argparse.Namespace) -> list[str]:
    if args.labels_file:
        try:
            text = Path(args.labels_file).read_text()
        except OSError as exc:
            raise ExportError(f"cannot read labels file: {exc}") from exc
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        labels = [item.strip() for item in args.labels.split(",")]
    if not labels or any(not label for label in labels):
        raise ExportError("class labels must be non-empty")
    return labels


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not sizes or any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError("batch sizes must be positive")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="model-tools", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="Keras model -> <out>/<name>/<version>/ SavedModel")
    exp.add_argument("model", type=Path, help=".keras / .h5 file or SavedModel directory")
    exp.add_argument("--out", type=Path, default=Path("services/tf-serving/models"))
    exp.add_argument("--name", default=DEFAULT_MODEL_NAME)
    exp.add_argument("--version", type=int, default=1)
    exp.add_argument(
        "--labels", default=",".join(CLOTHING_CLASSES), help="comma-separated, output order"
    )
    exp.add_argument("--labels-file", help="one label per line (overrides --labels)")
    exp.add_argument(
        "--outputs",
        choices=("auto", "logits", "probabilities"),
        default="auto",
        help="what the last layer returns (auto: softmax activation means probabilities)",
    )
    exp.add_argument(
        "--preprocessing",
        choices=(AUTO, *PREPROCESSING_MODES),
        default=AUTO,
        help="the keras.applications preprocess_input mode the model was trained with, "
        "applied inside the served graph (auto: from a recognised keras.applications base; "
        "none: the model normalises inside, e.g. EfficientNet)",
    )
    exp.add_argument("--warmup-batch-sizes", type=_batch_sizes, default=(1, 2, 4, 8, 16, 32))
    exp.add_argument("--overwrite", action="store_true", help="replace an existing version")
    ins = sub.add_parser("inspect", help="print a version's signatures and manifest")
    ins.add_argument(
        "path",
        type=Path,
        help="a version directory, or an export (--out) to show --name's newest version",
    )
    ins.add_argument("--name", default=DEFAULT_MODEL_NAME)
    srv = sub.add_parser(
        "serve",
        help="serve an export's newest version over TF Serving's gRPC API, with TensorFlow "
        "in Python: for trying a model, not for serving",
    )
    srv.add_argument("export_dir", type=Path, help="what `export` wrote (its --out)")
    srv.add_argument("--name", default=DEFAULT_MODEL_NAME)
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=GRPC_PORT, help="0: any free port")
    srv.add_argument(
        "--enable_serialization_as_tensor_content",
        action="store_true",
        help="answer with tensor_content, as TF Serving does with this flag",
    )
    return parser


NO_TENSORFLOW = (
    "TensorFlow is not installed here: it has no wheel for this platform (Intel Macs have "
    "none since TensorFlow 2.17). Run the model tooling in a Linux container instead: "
    "`make model` does, or `tools/in-linux.sh python -m model_tools ...`"
)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TensorFlow gives its Python logger a handler of its own when the root logger has
    # none; the first absl line (saving a model logs some) then configures the root too,
    # and every later TensorFlow line printed twice. A root handler from the start, before
    # TensorFlow is imported: each line once, in the same format.
    logging.basicConfig()
    args = build_parser().parse_args(argv)
    if importlib.util.find_spec("tensorflow") is None:
        print(f"error: {NO_TENSORFLOW}", file=sys.stderr)
        return 2
    try:
        if args.command == "export":
            from model_tools.export import ExportRequest, export

            version_dir = export(
                ExportRequest(
                    model_path=args.model,
                    out_dir=args.out,
                    model_name=args.name,
                    version=args.version,
                    class_labels=_labels(args),
                    outputs=args.outputs,
                    preprocessing=args.preprocessing,
                    warmup_batch_sizes=args.warmup_batch_sizes,
                    overwrite=args.overwrite,
                )
            )
            print(f"exported {version_dir}")
        elif args.command == "inspect":
            from model_tools.inspect_model import describe

            path = args.path
            if not (path / "saved_model.pb").is_file() and path.is_dir():
                path = newest_version(path, args.name)
            print(describe(path))
        else:
            from model_tools.dev_server import serve

            return serve(
                args.export_dir,
                args.name,
                args.host,
                args.port,
                tensor_content=args.enable_serialization_as_tensor_content,
            )
    except (ExportError, OSError) as exc:  # OSError: a path that cannot be read or written
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C while a model loads
        return 130
    return 0
