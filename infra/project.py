"""The project's name (Pulumi.yaml's ``name``: the stack config's namespace, and the
``part-of`` of everything it runs) and where its checkout is."""

from __future__ import annotations

from pathlib import Path

PROJECT = "clothing-serving"
REPO_ROOT = Path(__file__).resolve().parents[1]
