"""Print a SavedModel's signatures the way ``saved_model_cli show --all`` does."""

from __future__ import annotations

import json
from pathlib import Path

from model_tools.errors import ExportError
from model_tools.manifest import FILENAME


def _shape(tensor_shape: object) -> str:
    if getattr(tensor_shape, "unknown_rank", False):
        return "unknown_rank"
    dims = [d.size for d in tensor_shape.dim]  # type: ignore[attr-defined]
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def describe(version_dir: Path) -> str:
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    pb = version_dir / "saved_model.pb"
    if not pb.is_file():
        raise ExportError(f"{version_dir} is not a SavedModel directory (no saved_model.pb)")
    saved = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    lines: list[str] = []
    for meta_graph in saved.meta_graphs:
        tags = ", ".join(meta_graph.meta_info_def.tags)
        lines.append(f"MetaGraphDef with tag-set: '{tags}' contains the following SignatureDefs:")
        for key in sorted(meta_graph.signature_def):
            sig = meta_graph.signature_def[key]
            lines.append("")
            lines.append(f"signature_def['{key}']:")
            for title, tensors in (("input", sig.inputs), ("output", sig.outputs)):
                lines.append(
                    f"  The given SavedModel SignatureDef contains the following {title}(s):"
                )
                for name in sorted(tensors):
                    info = tensors[name]
                    lines.append(f"    {title}s['{name}'] tensor_info:")
                    lines.append(f"        dtype: {types_pb2.DataType.Name(info.dtype)}")
                    lines.append(f"        shape: {_shape(info.tensor_shape)}")
                    lines.append(f"        name: {info.name}")
            lines.append(f"  Method name is: {sig.method_name}")
    manifest = version_dir / FILENAME
    if manifest.is_file():
        lines += ["", f"{FILENAME}:", json.dumps(json.loads(manifest.read_text()), indent=2)]
    return "\n".join(lines)
