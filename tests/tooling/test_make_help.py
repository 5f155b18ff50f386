"""The first commands someone types: a bare `make` lists what there is to make, and every
`make <target>` the docs show is one of those."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("services/*/README.md")]


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


def _shown_make_targets(text: str) -> set[str]:
    """The targets of the `make ...` commands a Markdown file shows in code."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))
    code = "\n".join(fenced + inline)
    return set(re.findall(r"(?:^|[\s;&(])make ([a-z][a-z-]*)", code, re.MULTILINE))


def test_every_make_command_in_the_docs_exists() -> None:
    targets = set(_listed())
    shown = {doc.relative_to(ROOT): _shown_make_targets(doc.read_text()) for doc in DOCS}
    assert {"run", "model"} <= set().union(*shown.values())  # the scan finds commands
    missing = {str(doc): sorted(names - targets) for doc, names in shown.items() if names - targets}
    assert not missing, missing


def test_the_docs_targets_are_read_from_code_only() -> None:
    text = "To make sure, run `make model`, then:\n\n```bash\nmake dev DEV_ARGS=x\n```\n"
    assert _shown_make_targets(text) == {"model", "dev"}
