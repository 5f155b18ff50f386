"""One program, three targets: AWS (dev, prod), a local cluster (Pulumi.local.yaml: kind
and the like) and a cluster you already run. The serving components are the same on all;
a local or existing cluster gets no AWS resource, makes no AWS call, and refuses the keys
that configure AWS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from infra.config import LOCAL_REGISTRY
from tests.infra import crd_validation
from tests.infra.conftest import SECRET_KEYS, fake_export
from tests.infra.harness import RecordingMocks, StackRun, run_stack, stack_config
from tests.infra.test_manifests import manifests

PREFIX = "clothing-serving:"
# The Kubernetes kind installs by default: kind v0.32.0's default node image is
# kindest/node:v1.36.1 (kubernetes-sigs/kind pkg/apis/config/defaults/image.go at v0.32.0);
# a v0.33.0 release note names v1.37.0, so both are checked.
KIND_DEFAULT_KUBERNETES = ("1.36", "1.37")
AWS = ("aws:", "awsx:", "eks:")


def _kubeconfig(directory: Path) -> Path:
    """A kubeconfig as kind writes one, with a second cluster's context beside it."""
    file = directory / "kubeconfig"
    if not file.exists():
        clusters = [
            {"name": name, "cluster": {"server": f"https://{name}.example:6443"}}
            for name in ("kind-kind", "prod-gke")
        ]
        contexts = [
            {"name": name, "context": {"cluster": name, "user": name}}
            for name in ("kind-kind", "prod-gke")
        ]
        users = [{"name": name, "user": {"token": "t"}} for name in ("kind-kind", "prod-gke")]
        file.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": clusters,
                    "contexts": contexts,
                    "users": users,
                    "current-context": "kind-kind",
                }
            )
        )
    return file


def _config(export_dir: Path, **values: Any) -> dict[str, Any]:
    config = stack_config("local")
    values["model"] = {"exportDir": str(export_dir), **values.get("model", {})}
    values["kubernetes"] = {
        "kubeconfig": str(_kubeconfig(export_dir)),
        **values.get("kubernetes", {}),
    }
    config.update({f"{PREFIX}{key}": value for key, value in values.items()})
    return config


def _run(export_dir: Path, **values: Any) -> tuple[StackRun, RecordingMocks]:
    mocks = RecordingMocks()
    stack = "cluster" if values.get("target") == "cluster" else "local"
    run = run_stack(stack, _config(export_dir, **values), SECRET_KEYS, mocks)
    return run, mocks


@pytest.fixture(scope="module")
def export_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_export(tmp_path_factory.mktemp("local"))


@pytest.fixture(scope="module")
def local(export_path: Path) -> tuple[StackRun, RecordingMocks]:
    return _run(export_path)


def _pod(run: StackRun, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = run.one("kubernetes:apps/v1:Deployment", name).inputs["spec"]
    return spec["template"]["spec"]  # type: ignore[no-any-return]


def test_local_declares_nothing_of_aws_and_no_gpu(local: tuple[StackRun, RecordingMocks]) -> None:
    run, mocks = local
    clouds = {r.typ for r in run.resources if r.typ.startswith(AWS)}
    assert clouds == set()
    assert [call for call in mocks.calls if call.startswith("aws:")] == []
    assert "nvidia.com/gpu" not in str([r.inputs for r in run.resources])
    for name in ("gateway", "tf-serving"):
        pod = _pod(run, name)
        assert "nodeSelector" not in pod and "tolerations" not in pod
    assert not run.of_type("kubernetes:helm.sh/v3:Release")  # no monitoring stack


def test_local_serves_the_same_workloads(
    local: tuple[StackRun, RecordingMocks], stacks: dict[str, StackRun]
) -> None:
    """The same objects as an AWS stack's serving namespace, but for the cloud's."""
    run, _ = local

    def serving(r: StackRun) -> set[tuple[str, str]]:
        return {
            (m["kind"], m["metadata"]["name"])
            for m in manifests(r)
            if m["metadata"].get("namespace") == "clothing" or m["kind"] == "Namespace"
        }

    aws_only = {("Namespace", "monitoring"), ("Namespace", "karpenter")}
    assert serving(run) == serving(stacks["dev"]) - aws_only - {
        ("NetworkPolicy", "metrics-from-monitoring"),  # no monitoring on a laptop
        ("ScaledObject", "tf-serving"),  # nor KEDA: TF Serving scales on CPU, an HPA
    } | {("HorizontalPodAutoscaler", "tf-serving")}
    tf = _pod(run, "tf-serving")["containers"][0]["resources"]
    assert tf["requests"] == {"cpu": "1", "memory": "2Gi"}  # a laptop's


def test_local_images_go_through_kinds_registry_by_digest(
    local: tuple[StackRun, RecordingMocks], export_path: Path
) -> None:
    run, _ = local
    builds = {r.name: r.inputs for r in run.of_type("docker-build:index:Image")}
    assert sorted(builds) == ["gateway-image", "model-image", "proxy-image"]
    for name, build in builds.items():
        [tag] = build["tags"]
        assert tag.startswith(f"{LOCAL_REGISTRY}/clothing-local-{name.removesuffix('-image')}:v-")
        assert build["push"] is True and "cacheTo" not in build  # the local Docker caches
        assert "registries" not in build  # no login for the local registry
        assert build["buildArgs"] == ({"VARIANT": ""} if name == "model-image" else {})
    images = {c["name"]: c["image"] for c in _pod(run, "gateway")["containers"]}
    assert images["gateway"].startswith(f"{LOCAL_REGISTRY}/clothing-local-gateway@sha256:")
    # a second run with nothing changed pushes the same tags (nothing to rebuild)
    again, _ = _run(export_path)
    assert {r.name: r.inputs["tags"] for r in again.of_type("docker-build:index:Image")} == {
        name: build["tags"] for name, build in builds.items()
    }
    assert run.outputs["gateway_url"] == "http://gw-123.elb.us-east-1.amazonaws.com"


@pytest.mark.parametrize("version", KIND_DEFAULT_KUBERNETES)
def test_every_local_object_is_valid_for_kinds_kubernetes(
    local: tuple[StackRun, RecordingMocks], version: str
) -> None:
    run, _ = local
    for manifest in manifests(run):
        assert not crd_validation.is_custom(manifest)
        try:
            kubernetes_validate.validate(manifest, f"{version}.0", strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{manifest['kind']}/{manifest['metadata']['name']}: {exc.message}")


def test_without_a_load_balancer_the_url_says_how_to_port_forward(export_path: Path) -> None:
    run, _ = _run(export_path, gatewayService="ClusterIP")
    assert run.one("kubernetes:core/v1:Service", "gateway").inputs["spec"]["type"] == "ClusterIP"
    assert "kubectl -n clothing port-forward svc/gateway 9696:80" in run.outputs["gateway_url"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"natGateways": "single"}, "target local does not use natGateways: remove it"),
        (
            {"cpuNodes": {"instanceTypes": ["t3.large"], "capacityTypes": ["spot"]}},
            "target local does not use cpuNodes",
        ),
        ({"gpuPlacement": {"nodeSelector": {"gpu": "yes"}}}, "does not use gpuPlacement"),
        ({"model": {"onGpu": True}}, "model.onGpu: a local cluster serves from CPU"),
        ({"target": "cluster"}, "target cluster needs registry"),
        (
            {"target": "cluster", "registry": "ghcr.io/x", "kubernetes": {"context": "nope"}},
            "kubernetes.context: 'nope' is not in",
        ),
        (
            {"monitoring": {"enabled": True}},
            "monitoring.prometheusNamespace: required with monitoring.enabled outside AWS",
        ),
    ],
)
def test_keys_of_another_target_are_refused(
    tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    mocks = RecordingMocks()
    config = _config(fake_export(tmp_path), **values)
    with pytest.raises(Exception, match=message):
        run_stack("local", config, SECRET_KEYS, mocks)
    assert mocks.resources == []


def test_an_aws_stack_refuses_a_local_key(tmp_path: Path) -> None:
    from tests.infra.conftest import with_export

    config = with_export("dev", fake_export(tmp_path))
    config[f"{PREFIX}registry"] = "localhost:5001"
    with pytest.raises(Exception, match="target aws does not use registry"):
        run_stack("dev", config, SECRET_KEYS)


EXISTING = {
    "target": "cluster",
    "registry": "ghcr.io/example",
    "kubernetes": {"context": "prod-gke"},
}


def test_an_existing_cluster_without_gpus(export_path: Path) -> None:
    run, mocks = _run(export_path, **EXISTING)
    assert [call for call in mocks.calls if call.startswith("aws:")] == []
    [provider] = run.of_type("pulumi:providers:kubernetes")
    assert provider.inputs["context"] == "prod-gke"
    # the rollout waits read the same cluster, through the context the stack names
    for wait in run.of_type("command:local:Command"):
        assert json.loads(wait.inputs["stdin"])["current-context"] == "prod-gke"
        assert "stdin" in wait.secret_inputs
    tf = _pod(run, "tf-serving")
    assert "tolerations" not in tf and "nodeSelector" not in tf
    assert tf["containers"][0]["resources"]["requests"] == {"cpu": "1", "memory": "6Gi"}
    images = {c["name"]: c["image"] for c in _pod(run, "gateway")["containers"]}
    assert images["proxy"].startswith("ghcr.io/example/clothing-cluster-proxy@sha256:")


def test_an_existing_cluster_with_gpus_where_its_config_says(export_path: Path) -> None:
    run, _ = _run(
        export_path,
        **EXISTING,
        model={"onGpu": True},
        gpuPlacement={
            "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present"}],
        },
        monitoring={"enabled": True, "prometheusNamespace": "observability"},
    )
    tf = _pod(run, "tf-serving")
    assert tf["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert tf["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present"}]
    assert tf["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    model = next(r for r in run.of_type("docker-build:index:Image") if r.name == "model-image")
    assert model.inputs["buildArgs"] == {"VARIANT": "-gpu"}
    # monitoring: the project's monitors for the Prometheus already there, nothing installed
    assert not run.of_type("kubernetes:helm.sh/v3:Release")
    monitors = run.of_type("kubernetes:monitoring.coreos.com/v1:PodMonitor")
    assert {m.inputs["metadata"]["namespace"] for m in monitors} == {"observability"}
    scrapes = run.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "metrics-from-monitoring")
    [peer] = scrapes.inputs["spec"]["ingress"][0]["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "observability"
    }
    # without the stack's own Prometheus and KEDA, TF Serving scales on CPU
    hpa = run.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "tf-serving")
    assert hpa.inputs["spec"]["metrics"][0]["type"] == "Resource"
