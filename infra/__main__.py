"""Pulumi entry point (Pulumi.yaml: ``main: infra/``)."""

import sys
from pathlib import Path

import pulumi

# Pulumi runs this file with infra/ as the working directory's program; make `infra`
# importable as a package from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.config import ConfigError
from infra.program import main

try:
    outputs = main()
except ConfigError as error:
    # A clear message instead of a traceback; nothing has been declared yet.
    pulumi.log.error(str(error))
    raise SystemExit(1) from None

for key, value in outputs.items():
    pulumi.export(key, value)
