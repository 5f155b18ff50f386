"""Remove the HPA an earlier version of the program made for a Deployment, before KEDA's
ScaledObject takes the Deployment over: ``python -m infra.hpa_handover <namespace>/<name>``,
the kubeconfig (JSON) on standard input. ``pulumi up`` runs it once, before it creates the
ScaledObject (``infra.demand.handover``).

Why a command: KEDA's admission webhook refuses a ScaledObject for a Deployment that
another HPA already scales, and Pulumi deletes what left the program only after it has
created what is new, so the old HPA would still be there. KEDA can adopt an HPA by name
(``scaledobject.keda.sh/transfer-hpa-ownership``), but Pulumi would then delete the adopted
HPA at the end of the update; KEDA recreates it at once, and pulumi-kubernetes' delete,
which waits for a Deleted event of that name from a watch it starts after the request,
can miss it and hang for its whole timeout. Deleting the old HPA here leaves Pulumi's own
delete a 404, which it takes as done. KEDA's HPA has another name (``keda-hpa-<name>``),
which this never touches; without an old HPA this does nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import IO, Any

from infra.kube_api import UNREACHABLE, KubeApi


def hand_over(kubeconfig: dict[str, Any], namespace: str, name: str) -> str:
    """Delete HPA ``name`` in ``namespace`` if it exists; what was done, in words."""
    path = f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{name}"
    status = KubeApi(kubeconfig).call("DELETE", path).status
    if status == 404:
        return f"no HPA {namespace}/{name}: nothing to hand over to KEDA"
    if not 200 <= status < 300:
        raise RuntimeError(f"DELETE {path}: {status}")
    return f"deleted HPA {namespace}/{name}: KEDA's ScaledObject scales the Deployment now"


def main(argv: Sequence[str] | None = None, stdin: IO[str] = sys.stdin) -> int:
    arguments = argparse.ArgumentParser(prog="python -m infra.hpa_handover", description=__doc__)
    arguments.add_argument("hpa", help="namespace/name")
    args = arguments.parse_args(argv)
    namespace, _, name = args.hpa.partition("/")
    try:
        print(hand_over(json.loads(stdin.read()), namespace, name), flush=True)
    except (RuntimeError, *UNREACHABLE) as error:
        print(f"error: {str(error).strip().splitlines()[0]}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
