"""Run one fuzz target under atheris: ``python -m tests.fuzz TARGET [libFuzzer flags]
[corpus dirs]``, e.g. ``python -m tests.fuzz decode -max_total_time=600 corpus/``.
A crash prints the input and its traceback and exits non-zero (libFuzzer writes the
input to ``crash-<sha1>`` in the working directory)."""

from __future__ import annotations

import sys

import atheris

# Coverage comes from the gateway's Python and Pillow's (its image plugins are Python).
with atheris.instrument_imports(include=["gateway", "PIL"]):
    from tests.fuzz.targets import TARGETS


def main() -> None:
    name, *flags = sys.argv[1:]
    target = TARGETS[name]
    atheris.Setup([sys.argv[0], *flags], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
