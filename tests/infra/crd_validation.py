"""Validate custom resources (Karpenter's NodePool and EC2NodeClass, the Prometheus
operator's PodMonitor and PrometheusRule, KEDA's ScaledObject) against their real schemas, offline, with
nothing third-party copied into the repository.

The schemas come from npm packages that ``make setup`` installs into ``tests/crds``
(``npm ci`` from its lock file): ``@kubernetes-models/karpenter`` is generated from
Karpenter's Go API types, the same types its CRDs are generated from
(karpenter-provider-aws and kubernetes-sigs/karpenter ``pkg/apis/v1``), and
``@kubernetes-models/prometheus-operator`` from the operator's CRDs, and
``@kubernetes-models/keda`` from KEDA's Go API types (kedacore/keda ``apis/keda/v1alpha1``).
Each object is checked twice:

- TypeScript (``tsc --strict``) compiles it as an object literal of the CRD's type, which
  rejects unknown fields (a typo'd key) and wrong types;
- the package's schema validator (the CRD's OpenAPI schema, compiled with ajv) checks
  required fields, enums and patterns at run time.

What neither checks: the CRDs' CEL rules (``x-kubernetes-validations``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "tests" / "crds"
# (apiVersion, kind) -> (module, class) in the schema packages
MODELS = {
    ("karpenter.sh/v1", "NodePool"): (
        "@kubernetes-models/karpenter/karpenter.sh/v1/NodePool",
        "NodePool",
    ),
    ("karpenter.k8s.aws/v1", "EC2NodeClass"): (
        "@kubernetes-models/karpenter/karpenter.k8s.aws/v1/EC2NodeClass",
        "EC2NodeClass",
    ),
    ("monitoring.coreos.com/v1", "PodMonitor"): (
        "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor",
        "PodMonitor",
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): (
        "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule",
        "PrometheusRule",
    ),
    ("keda.sh/v1alpha1", "ScaledObject"): (
        "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject",
        "ScaledObject",
    ),
}


class SchemaToolsMissing(RuntimeError):
    pass


def is_custom(manifest: dict[str, Any]) -> bool:
    return (manifest["apiVersion"], manifest["kind"]) in MODELS


def validate(manifests: list[dict[str, Any]]) -> list[str]:
    """One message per problem, naming the object; [] when every object is valid."""
    tsc = CRD_DIR / "node_modules" / ".bin" / "tsc"
    node = shutil.which("node")
    if node is None or not tsc.is_file():
        raise SchemaToolsMissing("node and tests/crds/node_modules are needed: run `make setup`")
    unknown = [m for m in manifests if not is_custom(m)]
    if unknown:
        return [f"{m['apiVersion']} {m['kind']}: no schema package for this kind" for m in unknown]
    imports, checks = set(), []
    for manifest in manifests:
        module, cls = MODELS[(manifest["apiVersion"], manifest["kind"])]
        imports.add(f'import {{ {cls} }} from "{module}";')
        body = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
        label = f"{manifest['kind']}/{manifest['metadata']['name']}"
        checks.append(f"  [{json.dumps(label)}, () => new {cls}({json.dumps(body)}).validate()],")
    header = [*sorted(imports), "const checks: Array<[string, () => void]> = ["]
    # tsc reports line numbers: each check is one line, so a line names its object
    labels = {
        len(header) + i + 1: json.loads(line.split(", () =>")[0].strip()[1:])
        for i, line in enumerate(checks)
    }
    source = "\n".join(
        [
            *header,
            *checks,
            "];",
            "for (const [name, check] of checks) {",
            "  try { check(); } catch (e) { console.log(`${name}: ${String(e)}`); }",
            "}",
        ]
    )
    CRD_DIR.joinpath(".checks").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CRD_DIR / ".checks") as work:
        (Path(work) / "check.ts").write_text(source + "\n")
        compiled = subprocess.run(
            [str(tsc), "--strict", "--skipLibCheck", "--module", "nodenext", "--moduleResolution",
             "nodenext", "--target", "es2022", "--outDir", work, str(Path(work) / "check.ts")],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        problems = []
        for line in compiled.stdout.splitlines():
            if "error TS" in line:
                number = int(line.split("(", 1)[1].split(",", 1)[0])
                problems.append(f"{labels.get(number, 'check.ts')}: {line.split(': ', 1)[1]}")
        ran = subprocess.run(
            [node, str(Path(work) / "check.js")],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if ran.returncode:
            problems.append(f"the validator did not run: {ran.stderr[-2000:]}")
        problems += [line for line in ran.stdout.splitlines() if line.strip()]
    return problems


def validate_dashboard(dashboard: dict[str, Any]) -> list[str]:
    """TypeScript problems of a Grafana dashboard as ``@grafana/schema``'s ``Dashboard``
    (Grafana's own published types: unknown keys and wrong types are errors)."""
    tsc = CRD_DIR / "node_modules" / ".bin" / "tsc"
    if shutil.which("node") is None or not tsc.is_file():
        raise SchemaToolsMissing("node and tests/crds/node_modules are needed: run `make setup`")
    source = (
        'import type { Dashboard } from "@grafana/schema";\n'
        f"export const dashboard: Dashboard = {json.dumps(dashboard)};\n"
    )
    CRD_DIR.joinpath(".checks").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CRD_DIR / ".checks") as work:
        (Path(work) / "dashboard.ts").write_text(source)
        compiled = subprocess.run(
            [str(tsc), "--strict", "--skipLibCheck", "--noEmit", "--module", "nodenext",
             "--moduleResolution", "nodenext", "--target", "es2022",
             str(Path(work) / "dashboard.ts")],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    return [line.split(": ", 1)[-1] for line in compiled.stdout.splitlines() if "error TS" in line]
