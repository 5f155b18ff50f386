"""The first command someone types: a bare `make` lists what there is to make."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _phony_targets() -> set[str]:
    """The targets the Makefile declares .PHONY, less its internal FORCE."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    [names] = re.findall(r"^\.PHONY:(.*)$", text, re.MULTILINE)
    return set(names.split()) - {"FORCE"}


def _listed() -> dict[str, str]:
    """What a bare `make` prints: target -> its line."""
    result = subprocess.run(
        ["make", "--no-print-directory"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    assert lines[0].startswith("make TARGET"), result.stdout
    rows = [line.split(None, 1) for line in lines[1:]]
    return {row[0]: row[1] for row in rows if len(row) == 2}


def test_a_bare_make_lists_every_target_with_what_it_does() -> None:
    listed = _listed()
    assert set(listed) == _phony_targets()
    assert all(len(line) > 10 for line in listed.values())
