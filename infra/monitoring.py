"""Metrics collection, dashboards and alerts.

kube-prometheus-stack (Prometheus, its operator, Alertmanager, Grafana, kube-state-metrics,
node exporter), chosen over Amazon Managed Prometheus/Grafana: it lives and dies with the
cluster (``pulumi destroy`` leaves nothing billing), costs one small node instead of
per-sample ingestion and per-user Grafana fees, and needs no IAM Identity Center. Why,
and its limits: docs/operations.md, "Monitoring".

Scraped: the gateway pods' proxy metrics port (every gunicorn worker aggregated), TF
Serving's ``/monitoring/prometheus/metrics`` on its REST port, and NVIDIA's DCGM exporter
on every GPU node. The dashboard (``infra/dashboards``) and the alert rules
(``infra/alerts.py``) are provisioned here. What TF Serving scales on is read from this
Prometheus by KEDA (``infra.demand``, ``infra.keda``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.alerts import alert_rules
from infra.capacity import DCGM_EXPORTER, MONITORING_PODS, NODE_EXPORTER, NOTHING, Resources
from infra.kube import GATEWAY, TF_SERVING, App, Nodes
from infra.project import PROJECT
from infra.tf_serving import METRICS_PATH as TF_SERVING_METRICS_PATH

NAMESPACE = "monitoring"
RELEASE = "kps"  # kube-prometheus-stack's release name (its objects are named after it)
PROMETHEUS_URL = f"http://{RELEASE}-prometheus.{NAMESPACE}.svc"
PROMETHEUS_PORT = 9090
PROMETHEUS_CHARTS = "https://prometheus-community.github.io/helm-charts"


@dataclass(frozen=True)
class Chart:
    name: str
    version: str
    repo: str


KUBE_PROMETHEUS_STACK = Chart("kube-prometheus-stack", "88.5.3", PROMETHEUS_CHARTS)
DCGM_EXPORTER_CHART = Chart(
    "dcgm-exporter", "4.8.2", "https://nvidia.github.io/dcgm-exporter/helm-charts"
)
DASHBOARD = Path(__file__).resolve().parent / "dashboards" / f"{PROJECT}.json"
# Prometheus's history, on its node's disk (cpuNodes.diskSizeGb, 50 GB by default)
PROMETHEUS_RETENTION_SIZE = "12GB"
PROMETHEUS_DISK = "16Gi"
# Prometheus's pod keeps its history on its node (emptyDir): Karpenter must not move it to
# consolidate nodes.
DO_NOT_DISRUPT = {"karpenter.sh/do-not-disrupt": "true"}
meta = k8s.meta.v1
core = k8s.core.v1


@dataclass(frozen=True)
class MonitoringArgs:
    retention_days: int
    gpus: bool  # TF Serving runs on GPU nodes: DCGM exporter and the GPU metric
    cpu_nodes: Nodes  # where the monitoring pods run
    gpu_nodes: Nodes  # where DCGM's exporter runs (one per GPU node)
    # the device plugin's DaemonSet (namespace, name) the stack runs, for its alert
    device_plugin: tuple[str, str] | None = None
    # install the stack (AWS); else use the Prometheus operator running in ``namespace``
    install: bool = True
    namespace: str = NAMESPACE
    on_demand: bool = False  # TF Serving scales on the gateway's image count (KEDA)
    sleeps: bool = False  # TF Serving goes to zero when idle (its alerts allow for wakes)


def resources(requests: Resources, memory_limit_mib: int) -> dict[str, Any]:
    return {
        "requests": {"cpu": f"{requests.cpu_m}m", "memory": f"{requests.memory_mib}Mi"},
        "limits": {"memory": f"{memory_limit_mib}Mi"},
    }


_PODS = {pod.name: pod for pod in MONITORING_PODS}


def pod_resources(name: str, sidecar: Resources = NOTHING) -> dict[str, Any]:
    """Resources of a monitoring pod's main container (its sidecar's share set apart)."""
    pod = _PODS[name]
    main = Resources(
        pod.requests.cpu_m - sidecar.cpu_m, pod.requests.memory_mib - sidecar.memory_mib
    )
    return resources(main, pod.memory_limit_mib)


# What the operator gives each config-reloader sidecar (Prometheus and Alertmanager pods).
CONFIG_RELOADER = Resources(10, 50)


def stack_values(spec: MonitoringArgs, grafana_password: pulumi.Input[str]) -> dict[str, Any]:
    """kube-prometheus-stack's values: everything on the CPU pool; no scraping of the
    control plane EKS runs for us (it exposes none of it); our monitors and rules are
    picked up whatever their labels."""
    on_cpu = {"nodeSelector": spec.cpu_nodes.labels}
    return {
        "fullnameOverride": RELEASE,
        "kubeControllerManager": {"enabled": False},
        "kubeScheduler": {"enabled": False},
        "kubeEtcd": {"enabled": False},
        "kubeProxy": {"enabled": False},  # binds its metrics to the node's loopback
        "defaultRules": {
            "rules": {
                "etcd": False,
                "kubeControllerManager": False,
                "kubeSchedulerAlerting": False,
                "kubeSchedulerRecording": False,
                "kubeProxy": False,
            }
        },
        "prometheus": {
            "prometheusSpec": {
                **on_cpu,
                "retention": f"{spec.retention_days}d",
                # within the node's disk, whatever the retention: oldest blocks go first
                "retentionSize": PROMETHEUS_RETENTION_SIZE,
                "storageSpec": {"emptyDir": {"sizeLimit": PROMETHEUS_DISK}},
                "resources": pod_resources("prometheus", CONFIG_RELOADER),
                "podMetadata": {"annotations": DO_NOT_DISRUPT},
                "podMonitorSelectorNilUsesHelmValues": False,
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
            }
        },
        "alertmanager": {
            "alertmanagerSpec": {
                **on_cpu,
                "resources": pod_resources("alertmanager", CONFIG_RELOADER),
            }
        },
        "prometheusOperator": {
            **on_cpu,
            "resources": pod_resources("prometheus-operator"),
            "prometheusConfigReloader": {
                "resources": resources(CONFIG_RELOADER, 128),
            },
        },
        "kube-state-metrics": {**on_cpu, "resources": pod_resources("kube-state-metrics")},
        "prometheus-node-exporter": {"resources": resources(NODE_EXPORTER.requests, 128)},
        "grafana": {
            **on_cpu,
            "fullnameOverride": "grafana",
            "adminPassword": grafana_password,
            "resources": pod_resources("grafana"),
            # Dashboards from ConfigMaps labelled grafana_dashboard=1, in any namespace.
            "sidecar": {"dashboards": {"enabled": True, "label": "grafana_dashboard"}},
        },
    }


# What dcgm-exporter collects (its chart mounts this over its default-counters.csv): the
# device counters the dashboard and the alerts read, and a few for
# diagnosis. None of the DCGM_FI_PROF_* profiling counters the chart's own list adds:
# they need SYS_ADMIN, and without it the exporter may exit instead of skipping them.
DCGM_COUNTERS = """\
# DCGM field, Prometheus type, help
DCGM_FI_DEV_GPU_UTIL, gauge, GPU utilization (in %).
DCGM_FI_DEV_MEM_COPY_UTIL, gauge, Memory utilization (in %).
DCGM_FI_DEV_FB_FREE, gauge, Framebuffer memory free (in MiB).
DCGM_FI_DEV_FB_USED, gauge, Framebuffer memory used (in MiB).
DCGM_FI_DEV_GPU_TEMP, gauge, GPU temperature (in C).
DCGM_FI_DEV_POWER_USAGE, gauge, Power draw (in W).
DCGM_FI_DEV_XID_ERRORS, gauge, Value of the last XID error encountered.
"""


def dcgm_values(nodes: Nodes) -> dict[str, Any]:
    """NVIDIA's DCGM exporter on the GPU nodes, with ``DCGM_COUNTERS`` (no profiling
    counters, so no SYS_ADMIN)."""
    return {
        "customMetrics": DCGM_COUNTERS,
        "nodeSelector": nodes.labels,
        "tolerations": [nodes.taint.toleration()] if nodes.taint else [],
        "resources": resources(DCGM_EXPORTER.requests, 512),
        # Root, as the chart has it, to read the kubelet's pod-resources socket (which pod
        # holds which GPU); but without the SYS_ADMIN the chart adds for profiling counters
        # (Helm merges maps, so the list is replaced, not left out).
        "securityContext": {
            "runAsNonRoot": False,
            "runAsUser": 0,
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": [], "drop": ["ALL"]},
        },
        # Keep the GPU's own pod and namespace labels (the TF Serving pod using it), not
        # the exporter pod's: the dashboard shows each TF Serving pod's GPU.
        "serviceMonitor": {"enabled": True, "honorLabels": True},
    }


def _pod_monitor(
    resource_name: str,
    app: App,
    port: str,
    path: str,
    namespace: str,
    serving_namespace: str,
    opts: pulumi.ResourceOptions,
) -> k8s.apiextensions.CustomResource:
    """Prometheus scrapes ``app``'s pods in ``serving_namespace`` on their ``port`` (the
    monitor lives in ``namespace``, Prometheus's). The series keep
    their own labels where a target label has the same name: the operator labels every
    target with ``endpoint`` (the port's name), and the gateway's metrics have an
    ``endpoint`` label of their own, the route (which would become ``exported_endpoint``)."""
    return k8s.apiextensions.CustomResource(
        resource_name,
        api_version="monitoring.coreos.com/v1",
        kind="PodMonitor",
        metadata=meta.ObjectMetaArgs(name=app.name, namespace=namespace, labels=app.labels),
        spec={
            "selector": {"matchLabels": app.labels},
            "namespaceSelector": {"matchNames": [serving_namespace]},
            "podMetricsEndpoints": [
                {"port": port, "path": path, "interval": "15s", "honorLabels": True}
            ],
        },
        opts=opts,
    )


def _release(
    resource_name: str,
    release_name: str,
    chart: Chart,
    values: dict[str, Any],
    opts: pulumi.ResourceOptions,
    timeout_s: int | None = None,
) -> k8s.helm.v3.Release:
    """``chart`` installed in the monitoring namespace as ``release_name`` (``timeout_s``:
    how long to wait for its resources; Helm's own 300 s when None)."""
    return k8s.helm.v3.Release(
        resource_name,
        name=release_name,
        namespace=NAMESPACE,
        chart=chart.name,
        version=chart.version,
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=chart.repo),
        values=values,
        timeout=timeout_s,
        opts=opts,
    )


class Monitoring(pulumi.ComponentResource):
    """With ``spec.install``, the monitoring stack in its own namespace; without, the
    project's monitors, rules and dashboard for a Prometheus operator the cluster already
    runs in ``spec.namespace``."""

    def __init__(
        self,
        name: str,
        *,
        spec: MonitoringArgs,
        serving_namespace: str,
        provider: k8s.Provider,
        depends_on: Sequence[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clothing:infra:Monitoring", name, None, opts)
        self._opts = pulumi.ResourceOptions(
            parent=self, provider=provider, depends_on=list(depends_on)
        )
        in_namespace, after_stack = self._opts, self._opts
        self.grafana_password: random.RandomPassword | None = None
        if spec.install:
            in_namespace, after_stack = self._install(name, spec)
        self.monitors = [
            _pod_monitor(
                f"{name}-{app.name}-monitor",
                app,
                port,
                path,
                spec.namespace,
                serving_namespace,
                after_stack,
            )
            for app, port, path in (
                (GATEWAY, "metrics", "/metrics"),
                (TF_SERVING, "http", TF_SERVING_METRICS_PATH),
            )
        ]
        self.rules = k8s.apiextensions.CustomResource(
            f"{name}-rules",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata=meta.ObjectMetaArgs(name=PROJECT, namespace=spec.namespace),
            spec={
                "groups": alert_rules(
                    serving_namespace,
                    spec.gpus,
                    spec.device_plugin,
                    on_demand=spec.on_demand,
                    sleeps=spec.sleeps,
                )
            },
            opts=after_stack,
        )
        self.dashboard = core.ConfigMap(
            f"{name}-dashboard",
            metadata=meta.ObjectMetaArgs(
                name=f"{PROJECT}-dashboard",
                namespace=spec.namespace,
                labels={"grafana_dashboard": "1"},
            ),
            data={DASHBOARD.name: json.dumps(json.loads(DASHBOARD.read_text()))},
            opts=in_namespace,
        )
        self.register_outputs({})

    def _install(
        self, name: str, spec: MonitoringArgs
    ) -> tuple[pulumi.ResourceOptions, pulumi.ResourceOptions]:
        """The namespace, kube-prometheus-stack and, for GPUs, DCGM's exporter; the
        options of what goes into the namespace, and of what needs the stack."""
        # node exporter and DCGM exporter read the host (its /proc, the kubelet's socket)
        self.namespace = core.Namespace(
            f"{name}-ns",
            metadata=meta.ObjectMetaArgs(
                name=NAMESPACE,
                labels={
                    "pod-security.kubernetes.io/enforce": "privileged",
                    "pod-security.kubernetes.io/warn": "baseline",
                },
            ),
            opts=self._opts,
        )
        in_namespace = pulumi.ResourceOptions.merge(
            self._opts, pulumi.ResourceOptions(depends_on=[self.namespace])
        )
        self.grafana_password = random.RandomPassword(
            f"{name}-grafana-password",
            length=24,
            special=False,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.stack = _release(
            f"{name}-stack",
            RELEASE,
            KUBE_PROMETHEUS_STACK,
            stack_values(spec, self.grafana_password.result),
            in_namespace,
            timeout_s=900,
        )
        after_stack = pulumi.ResourceOptions.merge(
            in_namespace, pulumi.ResourceOptions(depends_on=[self.stack])
        )
        self.releases = [self.stack]
        if spec.gpus:
            # after the stack: its ServiceMonitor needs the stack's CRDs
            self.releases.append(
                _release(
                    f"{name}-dcgm-exporter",
                    "dcgm-exporter",
                    DCGM_EXPORTER_CHART,
                    dcgm_values(spec.gpu_nodes),
                    after_stack,
                )
            )
        return in_namespace, after_stack
