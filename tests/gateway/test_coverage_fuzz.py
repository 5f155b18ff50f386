"""Coverage-guided fuzzing (atheris/libFuzzer) of the gateway's parsers of untrusted
bytes: images, URLs, request bodies and the model server's answers. Where the hypothesis
tests in test_hostile_input.py draw from shapes a person wrote down, libFuzzer follows
the code's branches (Pillow's plugins included) from real seed files.

Here each target runs a fixed number of inputs from a fixed seed (about 8 s each), so
the suite is repeatable; ``make fuzz`` runs them for longer from random seeds, which is
where new findings come from. The targets and their properties are in
tests/fuzz/targets.py. When one fails, the input that broke it is saved under the test's
temporary directory and its traceback shown; rerun it with
``python -m tests.fuzz TARGET crash-file``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.seeds import write_corpus
from tests.fuzz.targets import TARGETS

pytest.importorskip("atheris", reason="atheris has wheels for Linux x86_64 only")
ROOT = Path(__file__).resolve().parents[2]
# Inputs per target: about 8 s each on the CI machine (decode is ~30k inputs/s, the
# others ~150k/s).
RUNS = {"decode": 250_000, "url": 1_000_000, "body": 1_000_000, "predict_response": 1_000_000}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target_keeps_its_property(target: str, tmp_path: Path) -> None:
    corpus = write_corpus(target, tmp_path / "corpus")
    flags = [
        "-seed=1",
        f"-runs={RUNS[target]}",
        "-timeout=5",  # one input taking 5 s is a denial of service: a failure
        "-rss_limit_mb=2048",
        f"-artifact_prefix={tmp_path}/",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "tests.fuzz", target, *flags, str(corpus)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    log = result.stderr
    assert result.returncode == 0, log[-6000:]
    assert "Done " in log and " runs in " in log, log[-2000:]  # it fuzzed, and finished
