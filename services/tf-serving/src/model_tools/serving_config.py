"""``<out>/models.config``: TF Serving's model list, written from what was exported.

The TF Serving image reads it (``--model_config_file``), so the names it serves are the
exported directories' names and nothing else has to repeat them. Each model serves its
newest version only; an image with a higher version rolls it out.
"""

from __future__ import annotations

from pathlib import Path

from model_tools.errors import ExportError

FILENAME = "models.config"
MOUNT = "/models"  # where the TF Serving image puts the export directory


def exported_models(out_dir: Path) -> list[str]:
    """Names of the models under ``out_dir`` with at least one complete version."""
    return sorted(
        model.name
        for model in out_dir.iterdir()
        if model.is_dir()
        and any(v.name.isdigit() and (v / "saved_model.pb").is_file() for v in model.iterdir())
    )


def newest_version(out_dir: Path, name: str) -> Path:
    """The version directory of ``name`` that TF Serving serves from ``out_dir``: the
    highest-numbered complete one."""
    versions = [
        v
        for v in (out_dir / name).glob("*")
        if v.name.isdigit() and (v / "saved_model.pb").is_file()
    ]
    if not versions:
        exported = ", ".join(exported_models(out_dir)) if out_dir.is_dir() else "none"
        raise ExportError(
            f"no exported model {name!r} in {out_dir} (exported: {exported or 'none'}); "
            "`make model` exports one"
        )
    return max(versions, key=lambda v: int(v.name))


def write_model_config(out_dir: Path) -> Path:
    entries = "".join(
        "  config {\n"
        f'    name: "{name}"\n'
        f'    base_path: "{MOUNT}/{name}"\n'
        '    model_platform: "tensorflow"\n'
        "    model_version_policy { latest { num_versions: 1 } }\n"
        "  }\n"
        for name in exported_models(out_dir)
    )
    path = out_dir / FILENAME
    staging = path.with_suffix(".tmp")
    staging.write_text(
        "# Written by `model_tools export`: every exported model, newest version only.\n"
        f"model_config_list {{\n{entries}}}\n"
    )
    staging.replace(path)
    return path
