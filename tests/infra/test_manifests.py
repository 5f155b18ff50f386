"""Every Kubernetes object the program declares, as the manifest Pulumi would apply:
built-in kinds validated against the Kubernetes OpenAPI schema of the cluster's version,
custom resources (Karpenter's) against their CRD schemas (``crd_validation``), and all of
them scanned with checkov (as are the Dockerfiles). Zero failed checks; every skip is
justified."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.infra import crd_validation
from tests.infra.harness import ROOT, StackRun

CHECKOV_TIMEOUT_S = 300


def manifests(run: StackRun) -> list[dict[str, Any]]:
    objects = []
    for resource in run.kubernetes_objects():
        manifest = dict(resource.inputs)
        assert manifest.get("apiVersion") and manifest.get("kind"), resource.typ
        assert manifest["metadata"].get("name"), (
            f"{resource.typ} {resource.name} has no explicit name"
        )
        objects.append(manifest)
    return objects


def test_every_object_is_valid_for_the_cluster_version(run: StackRun) -> None:
    version = run.config["clothing-serving:clusterVersion"]
    objects = [m for m in manifests(run) if not crd_validation.is_custom(m)]
    kinds = {m["kind"] for m in objects}
    assert kinds >= {
        "Namespace", "ServiceAccount", "Deployment", "Service", "HorizontalPodAutoscaler",
        "PodDisruptionBudget", "NetworkPolicy", "DaemonSet",
    }  # fmt: skip
    for manifest in objects:
        try:
            kubernetes_validate.validate(manifest, f"{version}.0", strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{manifest['kind']}/{manifest['metadata']['name']}: {exc.message} at {list(exc.path)}"
            )


def _crd_problems(objects: list[dict[str, Any]]) -> list[str]:
    try:
        return crd_validation.validate(objects)
    except crd_validation.SchemaToolsMissing as exc:
        pytest.fail(str(exc))


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_custom_resources_match_their_crd_schemas(stacks: dict[str, StackRun], stack: str) -> None:
    custom = [m for m in manifests(stacks[stack]) if crd_validation.is_custom(m)]
    assert {(m["kind"], m["metadata"]["name"]) for m in custom} == {
        ("NodePool", "cpu"), ("NodePool", "gpu"), ("EC2NodeClass", "cpu"), ("EC2NodeClass", "gpu"),
        ("PodMonitor", "gateway"), ("PodMonitor", "tf-serving"),
        ("PrometheusRule", "clothing-serving"), ("ScaledObject", "tf-serving"),
    }  # fmt: skip
    assert _crd_problems(custom) == []


def test_an_invalid_custom_resource_is_caught(stacks: dict[str, StackRun]) -> None:
    """The CRD check itself can fail: an unknown field, and a value outside an enum."""
    [pool] = [
        m
        for m in manifests(stacks["dev"])
        if m["kind"] == "NodePool" and m["metadata"]["name"] == "gpu"
    ]
    typo = json.loads(json.dumps(pool))
    typo["spec"]["template"]["spec"]["tains"] = typo["spec"]["template"]["spec"].pop("taints")
    wrong = json.loads(json.dumps(pool))
    wrong["metadata"]["name"] = "wrong"
    wrong["spec"]["disruption"]["consolidationPolicy"] = "WhenUnderutilized"  # Karpenter v0.x
    [monitor] = [
        m
        for m in manifests(stacks["dev"])
        if m["kind"] == "PodMonitor" and m["metadata"]["name"] == "gateway"
    ]
    misnamed = json.loads(json.dumps(monitor))
    misnamed["spec"]["podMetricEndpoints"] = misnamed["spec"].pop("podMetricsEndpoints")
    problems = _crd_problems([typo, wrong, misnamed])
    assert any("NodePool/gpu" in p and "tains" in p for p in problems), problems
    assert any("NodePool/wrong" in p and "consolidationPolicy" in p for p in problems), problems
    assert any("PodMonitor/gateway" in p and "podMetricEndpoints" in p for p in problems), problems


def test_an_invalid_manifest_is_caught() -> None:
    # The validator itself must be able to fail: an unknown field, in strict mode.
    bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"portz": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.34.0", strict=True)


def checkov_binary() -> str:
    candidates = [
        os.environ.get("CHECKOV_BIN"),
        str(ROOT / ".tools" / "bin" / "checkov"),
        shutil.which("checkov"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("checkov is not installed: `make setup` installs it into .tools/bin")


def run_checkov(args: list[str]) -> dict[str, Any]:
    result = subprocess.run(
        [checkov_binary(), *args, "--skip-download", "--output", "json", "--compact"],
        capture_output=True,
        text=True,
        timeout=CHECKOV_TIMEOUT_S,
        check=False,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_NO_OUTPUT_PROGRESS": "1"},
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov gave no JSON (exit {result.returncode}): {result.stderr[-2000:]}")
    reports = report if isinstance(report, list) else [report]
    merged: dict[str, Any] = {"passed": 0, "failed": [], "skipped": []}
    for rep in reports:
        merged["passed"] += rep["summary"]["passed"]
        merged["failed"] += rep["results"]["failed_checks"]
        merged["skipped"] += rep["results"]["skipped_checks"]
    return merged


def _describe(checks: list[dict[str, Any]]) -> str:
    return "\n".join(f"{c['check_id']} {c['check_name']} -- {c['resource']}" for c in checks)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_checkov_kubernetes(stacks: dict[str, StackRun], stack: str, tmp_path: Path) -> None:
    for i, manifest in enumerate(manifests(stacks[stack])):
        name = f"{i:02d}-{manifest['kind']}-{manifest['metadata']['name']}.yaml"
        (tmp_path / name).write_text(yaml.safe_dump(manifest, sort_keys=False))
    report = run_checkov(["--directory", str(tmp_path), "--framework", "kubernetes"])
    assert not report["failed"], _describe(report["failed"])
    assert report["passed"] > 100  # the scan really ran over the objects
    for skipped in report["skipped"]:
        assert skipped["check_result"]["suppress_comment"], f"{skipped['check_id']} has no reason"


def test_checkov_dockerfiles() -> None:
    dockerfiles = sorted((ROOT / "services").rglob("Dockerfile"))
    assert len(dockerfiles) == 3  # gateway, its proxy, TF Serving
    report = run_checkov(
        [*(arg for f in dockerfiles for arg in ("--file", str(f))), "--framework", "dockerfile"]
    )
    assert not report["failed"], _describe(report["failed"])
    assert report["passed"] > 10
    for skipped in report["skipped"]:
        assert skipped["check_result"]["suppress_comment"], f"{skipped['check_id']} has no reason"
