"""A change to the program replaces nothing a deployed stack holds: every URN in
``live_urns.json`` is still declared, as a resource's URN or one its aliases name (a
resource moved under a new component keeps its old URN through an alias)."""

from __future__ import annotations

import json

from tests.infra.harness import StackRun
from tests.infra.live_urns import FILE


def test_every_deployed_resource_is_still_declared(run: StackRun) -> None:
    live = set(json.loads(FILE.read_text())[run.stack])
    missing = live - run.urns()
    assert not missing, (
        "these resources would be replaced (or deleted): keep their URNs with aliases, or "
        f"run `python -m tests.infra.live_urns` if they go on purpose: {sorted(missing)}"
    )
