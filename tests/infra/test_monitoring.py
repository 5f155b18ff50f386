"""Monitoring: what is collected, shown and alerted on, and what TF Serving scales on.

Every PromQL expression (the dashboard's, the alert rules', KEDA's triggers') is parsed, and
every metric it names must exist: in the gateway's real ``/metrics`` output, or in what
TF Serving, NVIDIA's DCGM exporter and kube-state-metrics are documented to export
(sources cited below, at the releases this project pins)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.settings import Settings
from infra.capacity import MONITORING_PODS, NOTHING, Resources
from infra.cluster import CPU_NODES, GPU_NODES
from infra.keda import keda_values
from infra.kube import TF_SERVING
from infra.monitoring import (
    DASHBOARD,
    NAMESPACE,
    MonitoringArgs,
    stack_values,
)
from infra.serving import NAMESPACE as SERVING_NAMESPACE
from serving_contract.api_keys import digest
from serving_contract.ports import METRICS_PORT, REST_PORT
from tests.gateway.conftest import TEST_ENV
from tests.infra import crd_validation
from tests.infra.conftest import with_export
from tests.infra.harness import StackRun, run_stack
from tests.support.fake_model_server import FakeModel
from tests.support.image_host import ImageHost

# TF Serving, tensorflow/serving at 9d981c5c2708d23c5407c7c1e30309e6f9798874:
# tensorflow_serving/util/prometheus_exporter.cc (GetPrometheusMetricName) turns every
# character of a metric's name outside [a-zA-Z0-9_] into ':' and exports a Sampler as a
# histogram (_bucket, _sum, _count). The metrics: servables/tensorflow/util.cc
# (request_count, request_latency, runtime_latency: microseconds),
# batching/batching_session.cc (queuing_latency), batching/batching_util.h
# (input_batch_size, processed_batch_size, under BatchingSessionTask::Name(),
# "batching_session" in batching/batching_session.h).
TF_SERVING_COUNTERS = {":tensorflow:serving:request_count"}
TF_SERVING_HISTOGRAMS = {
    ":tensorflow:serving:request_latency",
    ":tensorflow:serving:runtime_latency",
    ":tensorflow:serving:batching_session:queuing_latency",
    ":tensorflow:serving:batching_session:input_batch_size",
    ":tensorflow:serving:batching_session:processed_batch_size",
}
# NVIDIA/dcgm-exporter 4.8.2: the device counters of its etc/default-counters.csv (the
# chart's deployment/templates/metrics-configmap.yaml lists the same, which
# infra.monitoring.DCGM_COUNTERS replaces by a subset), with the labels its
# internal/pkg/transformation/const.go adds when it maps GPUs to pods (pod, namespace,
# container) beside its own (gpu, UUID, device, modelName, Hostname).
DCGM = {
    "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL", "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_XID_ERRORS",
}  # fmt: skip
DCGM_LABELS = {"gpu", "UUID", "device", "modelName", "Hostname", "pod", "namespace", "container"}
# kube-state-metrics, docs/metrics/workload/deployment-metrics.md (both STABLE), labelled
# namespace and deployment, and docs/metrics/workload/daemonset-metrics.md (STABLE),
# labelled namespace and daemonset.
KUBE_STATE_LABELS = {
    "kube_deployment_status_replicas_available": {"namespace", "deployment"},
    "kube_deployment_spec_replicas": {"namespace", "deployment"},
    "kube_daemonset_status_number_unavailable": {"namespace", "daemonset"},
}
KUBE_STATE_METRICS = set(KUBE_STATE_LABELS)
# The labels of TF Serving's series (util.cc and batching_session.cc, above).
TF_SERVING_LABELS = {
    ":tensorflow:serving:request_count": {"model_name", "status"},
    ":tensorflow:serving:request_latency": {"model_name", "API", "entrypoint"},
    ":tensorflow:serving:runtime_latency": {"model_name", "API", "runtime"},
    ":tensorflow:serving:batching_session:queuing_latency": {"thread_pool_name"},
    ":tensorflow:serving:batching_session:input_batch_size": set(),
    ":tensorflow:serving:batching_session:processed_batch_size": set(),
}
# What Prometheus adds to every series it scrapes through a PodMonitor (the operator's
# relabelling: job, instance, namespace, pod, container, endpoint = the port's name).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "endpoint"}
DOCUMENTED = (
    TF_SERVING_COUNTERS
    | {f"{h}{suffix}" for h in TF_SERVING_HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
    | DCGM
    | KUBE_STATE_METRICS
)


def documented_labels(name: str) -> set[str]:
    """The labels a documented series carries once scraped."""
    if name in DCGM:
        return DCGM_LABELS | TARGET_LABELS
    if name in KUBE_STATE_METRICS:
        return KUBE_STATE_LABELS[name] | TARGET_LABELS
    base = re.sub(r"_(bucket|sum|count)$", "", name) if name not in TF_SERVING_COUNTERS else name
    labels = TF_SERVING_LABELS[base] | TARGET_LABELS
    return labels | {"le"} if name.endswith("_bucket") else labels


KEY = "monitoring-test-key-" + "m" * 20


@pytest.fixture
def gateway_exposition(
    fake_model: tuple[FakeModel, int], image_host: ImageHost, tmp_path: Path
) -> dict[str, set[str]]:
    """The gateway's real /metrics after real traffic: sample name -> its label names."""
    keys = tmp_path / "keys"
    keys.write_text(f"ci {digest(KEY)}\n")
    env = {**TEST_ENV, "TF_SERVING_HOST": f"127.0.0.1:{fake_model[1]}", "API_KEYS_FILE": str(keys)}
    app = create_app(Settings.from_env(env))
    client: FlaskClient = app.test_client()
    url = image_host.url("/images/hat.jpg")
    assert client.post("/predict", json={"url": url}, headers={"X-API-Key": KEY}).status_code == 200
    assert (
        client.post("/predict", json={"url": "ftp://x"}, headers={"X-API-Key": KEY}).status_code
        == 400
    )
    client.get("/readyz")
    text = client.get("/metrics").text
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


def _grafana(expr: str) -> str:
    """An expression as Grafana sends it: its interval variable filled in."""
    return expr.replace("$__rate_interval", "5m")


def _selectors(node: Any) -> Iterator[Any]:
    """Every vector selector in a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node
    elif isinstance(node, promql_parser.MatrixSelector):
        yield node.vector_selector
    elif isinstance(node, promql_parser.Call):
        for arg in node.args:
            yield from _selectors(arg)
    elif isinstance(node, promql_parser.BinaryExpr):
        yield from _selectors(node.lhs)
        yield from _selectors(node.rhs)
    elif isinstance(
        node,
        promql_parser.AggregateExpr
        | promql_parser.ParenExpr
        | promql_parser.UnaryExpr
        | promql_parser.SubqueryExpr,
    ):
        yield from _selectors(node.expr)


def metric_names(expr: str) -> set[str]:
    names = {s.name for s in _selectors(promql_parser.parse(expr))}
    assert None not in names and names, f"no metric named in {expr!r}"
    return names


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def dashboard_exprs() -> list[str]:
    return [
        _grafana(target["expr"])
        for panel in _dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def rule_exprs(run: StackRun) -> list[str]:
    rule = run.one("kubernetes:monitoring.coreos.com/v1:PrometheusRule", "clothing-serving")
    return [r["expr"] for group in rule.inputs["spec"]["groups"] for r in group["rules"]]


def scaler_exprs(run: StackRun) -> list[str]:
    """The queries KEDA's triggers run against Prometheus."""
    return [
        trigger["metadata"]["query"]
        for scaler in run.of_type("kubernetes:keda.sh/v1alpha1:ScaledObject")
        for trigger in scaler.inputs["spec"]["triggers"]
    ]


def test_every_expression_parses_and_names_metrics_that_exist(
    stacks: dict[str, StackRun], gateway_exposition: dict[str, set[str]]
) -> None:
    known = set(gateway_exposition) | DOCUMENTED
    used: set[str] = set()
    for expr in dashboard_exprs() + rule_exprs(stacks["prod"]) + scaler_exprs(stacks["dev"]):
        names = metric_names(expr)
        assert names <= known, f"{sorted(names - known)} in {expr!r}"
        used |= names
    # the gateway's own metrics that the dashboard and the rules read
    assert {n for n in used if n.startswith("gateway_")} == {
        "gateway_requests_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_stage_duration_seconds_bucket",
        "gateway_errors_total",
        "gateway_api_key_requests_total",
        "gateway_images_total",
    }


def _labels_used(node: Any) -> Iterator[tuple[set[str], set[str]]]:
    """(labels an expression reads, the metrics they must be on): each selector's matchers
    on its metric, and each aggregation's grouping on the metrics under it."""
    if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
        yield set(node.modifier.labels), {s.name for s in _selectors(node.expr)}
    if isinstance(node, promql_parser.VectorSelector | promql_parser.MatrixSelector):
        selector = node if isinstance(node, promql_parser.VectorSelector) else node.vector_selector
        yield {m.name for m in selector.matchers.matchers}, {str(selector.name)}
        return
    for child in ("expr", "lhs", "rhs"):
        if hasattr(node, child):
            yield from _labels_used(getattr(node, child))
    for arg in getattr(node, "args", None) or []:
        yield from _labels_used(arg)


def test_every_label_read_exists_on_its_metrics(
    stacks: dict[str, StackRun], gateway_exposition: dict[str, set[str]]
) -> None:
    def labels_of(name: str) -> set[str]:
        if name in gateway_exposition:  # honorLabels: the gateway's own win over the target's
            return gateway_exposition[name] | TARGET_LABELS
        return documented_labels(name)

    checked = 0
    for expr in dashboard_exprs() + rule_exprs(stacks["prod"]) + scaler_exprs(stacks["dev"]):
        for labels, metrics in _labels_used(promql_parser.parse(expr)):
            for metric in metrics:
                assert labels <= labels_of(metric) | {"le"}, (expr, metric, labels)
                checked += len(labels)
    assert checked > 30
    # and the check can fail
    [(labels, _)] = [
        used for used in _labels_used(promql_parser.parse('DCGM_FI_DEV_GPU_UTIL{exported_pod="x"}'))
    ]
    assert not labels <= documented_labels("DCGM_FI_DEV_GPU_UTIL")


def test_the_gateways_labels_leave_the_targets_alone(
    gateway_exposition: dict[str, set[str]],
) -> None:
    """The gateway PodMonitor honours the series' labels, for its `endpoint`; no other
    label of the gateway may then stand in for the target's pod, namespace or job."""
    mine = set().union(*gateway_exposition.values())
    assert mine & TARGET_LABELS == {"endpoint"}


def test_a_misnamed_metric_or_a_broken_expression_is_caught(
    gateway_exposition: dict[str, set[str]],
) -> None:
    known = set(gateway_exposition) | DOCUMENTED
    for typo in (
        "sum(rate(gateway_request_total[5m]))",
        "DCGM_FI_DEV_GPU_UTILIZATION",
        "rate(:tensorflow:serving:request_latency[5m])",  # a histogram has no plain series
    ):
        assert not metric_names(typo) <= known, typo
    with pytest.raises(ValueError, match="unclosed left parenthesis"):
        promql_parser.parse("sum(rate(gateway_requests_total[5m])")


def test_the_dashboard_matches_grafanas_schema() -> None:
    try:
        assert crd_validation.validate_dashboard(_dashboard()) == []
        broken = _dashboard()
        broken["panels"][1]["titel"] = broken["panels"][1].pop("title")
        assert any("titel" in p for p in crd_validation.validate_dashboard(broken))
    except crd_validation.SchemaToolsMissing as exc:
        pytest.fail(str(exc))


def test_the_dashboard_shows_what_operators_need() -> None:
    used = set().union(*(metric_names(e) for e in dashboard_exprs()))
    assert used >= {
        "gateway_requests_total",  # requests/s by endpoint
        "gateway_request_duration_seconds_bucket",  # p50/p99 by endpoint
        "gateway_errors_total",  # errors by code
        "gateway_stage_duration_seconds_bucket",  # download, preprocess, inference
        ":tensorflow:serving:request_latency_bucket",
        ":tensorflow:serving:batching_session:processed_batch_size_bucket",
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_USED",
        "kube_deployment_status_replicas_available",  # pods per tier
    }
    text = DASHBOARD.read_text()
    assert f'namespace=\\"{SERVING_NAMESPACE}\\"' in text


def test_alerts_cover_errors_latency_readiness_and_gpu_memory(stacks: dict[str, StackRun]) -> None:
    rule = stacks["prod"].one(
        "kubernetes:monitoring.coreos.com/v1:PrometheusRule", "clothing-serving"
    )
    alerts = {r["alert"] for g in rule.inputs["spec"]["groups"] for r in g["rules"]}
    assert alerts == {
        "GatewayErrors", "GatewayLatencyHigh", "TFServingNotReady", "GPUMemoryNearlyFull",
        "GPUDevicePluginDown", "ScalingSignalMissing",
    }  # fmt: skip
    runbook = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    for alert in alerts:
        assert f"#### {alert}\n" in runbook, alert


def test_prometheus_reaches_exactly_the_metrics_ports(stacks: dict[str, StackRun]) -> None:
    run = stacks["prod"]
    policy = run.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "metrics-from-monitoring")
    [rule] = policy.inputs["spec"]["ingress"]
    [source] = rule["from"]
    assert source["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": NAMESPACE}
    assert {p["port"] for p in rule["ports"]} == {METRICS_PORT, REST_PORT}
    monitors = {
        m.inputs["metadata"]["name"]: m.inputs["spec"]
        for m in run.of_type("kubernetes:monitoring.coreos.com/v1:PodMonitor")
    }
    assert monitors["gateway"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert monitors["tf-serving"]["podMetricsEndpoints"][0] == {
        "port": "http", "path": "/monitoring/prometheus/metrics", "interval": "15s",
        "honorLabels": True,
    }  # fmt: skip
    # the operator labels each target `endpoint` (the port's name); the gateway's series
    # have their own `endpoint` (the route), which the dashboard and rules group by
    assert monitors["gateway"]["podMetricsEndpoints"][0]["honorLabels"] is True
    for spec in monitors.values():
        assert spec["namespaceSelector"] == {"matchNames": [SERVING_NAMESPACE]}


def test_the_charts_are_pinned_and_placed_on_the_cpu_pool(stacks: dict[str, StackRun]) -> None:
    releases = {
        r.inputs["name"]: r.inputs for r in stacks["prod"].of_type("kubernetes:helm.sh/v3:Release")
    }
    assert releases["kps"]["chart"] == "kube-prometheus-stack"
    assert releases["kps"]["version"] == "88.5.3"
    assert releases["dcgm-exporter"]["version"] == "4.8.2"
    assert "prometheus-adapter" not in releases  # KEDA reads Prometheus itself
    values = releases["kps"]["values"]
    spec = values["prometheus"]["prometheusSpec"]
    assert spec["podMonitorSelectorNilUsesHelmValues"] is False
    assert spec["ruleSelectorNilUsesHelmValues"] is False
    assert spec["podMetadata"]["annotations"] == {"karpenter.sh/do-not-disrupt": "true"}
    assert releases["dcgm-exporter"]["values"]["serviceMonitor"]["honorLabels"] is True
    # Helm merges maps: the chart's SYS_ADMIN goes only if the list is given, empty
    capabilities = releases["dcgm-exporter"]["values"]["securityContext"]["capabilities"]
    assert capabilities == {"add": [], "drop": ["ALL"]}
    counters = releases["dcgm-exporter"]["values"]["customMetrics"]
    named = {line.split(",")[0] for line in counters.splitlines() if not line.startswith("#")}
    assert named <= DCGM and "DCGM_FI_PROF" not in counters
    assert spec["retentionSize"] == "12GB"
    assert spec["storageSpec"] == {"emptyDir": {"sizeLimit": "16Gi"}}


def test_tensorflow_takes_gpu_memory_as_it_needs_it(stacks: dict[str, StackRun]) -> None:
    """Otherwise it holds nearly all of it from the start, and the GPU memory alert would
    always fire."""
    pod = stacks["prod"].one("kubernetes:apps/v1:Deployment", TF_SERVING.name).inputs
    [container] = pod["spec"]["template"]["spec"]["containers"]
    assert {"name": "TF_FORCE_GPU_ALLOW_GROWTH", "value": "true"} in container["env"]


def test_the_charts_request_what_the_capacity_check_counts() -> None:
    """infra.capacity sizes the CPU pool for MONITORING_PODS: the values ask for exactly
    that (each pod's main container plus its config reloader, where it has one)."""
    values = stack_values(
        MonitoringArgs(retention_days=7, gpus=True, cpu_nodes=CPU_NODES, gpu_nodes=GPU_NODES),
        "password",
    )

    def requests(resources: dict[str, Any], sidecars: Resources = NOTHING) -> Resources:
        cpu = int(resources["requests"]["cpu"].removesuffix("m"))
        memory = int(resources["requests"]["memory"].removesuffix("Mi"))
        return Resources(cpu + sidecars.cpu_m, memory + sidecars.memory_mib)

    reloader = requests(values["prometheusOperator"]["prometheusConfigReloader"]["resources"])
    asked = {
        "prometheus": requests(values["prometheus"]["prometheusSpec"]["resources"], reloader),
        "alertmanager": requests(values["alertmanager"]["alertmanagerSpec"]["resources"], reloader),
        "grafana": requests(values["grafana"]["resources"]),
        "prometheus-operator": requests(values["prometheusOperator"]["resources"]),
        "kube-state-metrics": requests(values["kube-state-metrics"]["resources"]),
        **{
            f"keda-{name}": requests(keda_values(CPU_NODES)["resources"][key])
            for name, key in (
                ("operator", "operator"),
                ("metrics-apiserver", "metricServer"),
                ("admission-webhooks", "webhooks"),
            )
        },
    }
    assert asked == {pod.name: pod.requests for pod in MONITORING_PODS}


def test_monitoring_can_be_switched_off(export_dir: Path) -> None:
    config = with_export("dev", export_dir)
    config["clothing-serving:monitoring"] = {"enabled": False}
    run = run_stack("dev", config)
    assert not run.of_type("kubernetes:helm.sh/v3:Release") or all(
        r.inputs["name"] != "kps" for r in run.of_type("kubernetes:helm.sh/v3:Release")
    )
    assert not run.of_type("kubernetes:monitoring.coreos.com/v1:PodMonitor")
    tf = run.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", TF_SERVING.name)
    [metric] = tf.inputs["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"  # the fallback: CPU
    policies = {
        p.inputs["metadata"]["name"]
        for p in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    }
    assert "metrics-from-monitoring" not in policies
