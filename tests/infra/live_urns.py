"""The URNs of every resource the committed stacks hold once deployed (``live_urns.json``),
which a change to the program must keep: Pulumi replaces a resource whose URN changes
(a new parent, a new name) unless an alias names the old one.

``python -m tests.infra.live_urns`` rewrites the file from the program as it is now: do it
only when resources were added, or removed on purpose.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tests.infra.conftest import SECRET_KEYS, fake_export, with_export
from tests.infra.harness import run_stack

FILE = Path(__file__).with_name("live_urns.json")
STACKS = ("dev", "prod")


def own_urns(stack: str, export_dir: Path) -> list[str]:
    """The URN each resource of ``stack`` has now (not the ones its aliases name)."""
    run = run_stack(stack, with_export(stack, export_dir), SECRET_KEYS)
    return sorted(run.own_urns())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        export_dir = fake_export(Path(tmp))
        FILE.write_text(json.dumps({s: own_urns(s, export_dir) for s in STACKS}, indent=1) + "\n")


if __name__ == "__main__":
    main()
