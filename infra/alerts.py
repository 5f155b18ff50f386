"""The alert rules (a PrometheusRule): what pages someone, and at what threshold.

docs/operations.md, "Alerts", says what to do for each. The thresholds:

- ``GatewayErrors``: more than 5% of /predict's answers are 5xx for 10 minutes, at 0.1
  req/s or more. A 5xx is the model, the gateway or an image host failing; refusals of
  bad input are 4xx and never count, and neither do the probes, nor ``model_waking``
  (a sleeping TF Serving waking up, as it was set to: nothing to fix).
- ``GatewayLatencyHigh``: /predict's p99 above ``P99_OBJECTIVE_S`` for 10 minutes. The
  objective: `make load` measured a p99 of 373 ms at saturation (64 clients, 20 ms per
  download and 10 ms per Predict added, docs/operations.md); real downloads from the
  internet add up to a second, so 2.5 s is where users notice and the system is not
  merely busy.
- ``TFServingNotReady``: fewer TF Serving pods available than the Deployment wants for
  25 minutes (longer than a scale-up takes: a cold GPU node, the image pull and the
  model's load and warmup, which its startup probe allows 15 minutes), or none at all for 2
  unless TF Serving sleeps (``sleeps``): then none for minutes is every wake-up, and only
  the 25-minute rule holds.
- ``ScalingSignalMissing``: where TF Serving scales on the gateway's image count, that
  series absent for 10 minutes: KEDA then holds TF Serving at its minimum while it runs
  and cannot wake it while it sleeps.
- ``GPUMemoryNearlyFull``: a GPU's memory over 90% used for 10 minutes. TF Serving's
  TensorFlow grows its memory as needed (``TF_FORCE_GPU_ALLOW_GROWTH``, infra/tf_serving.py)
  instead of taking nearly all of it up front, so this is what the model and its
  batches really hold.
"""

from __future__ import annotations

from typing import Any

from infra.kube import TF_SERVING
from infra.project import PROJECT
from serving_contract.metrics import IMAGES_COUNTER

P99_OBJECTIVE_S = 2.5
ERROR_RATIO = 0.05
MIN_RATE = 0.1  # req/s: below this, a ratio of a few requests says nothing
NOT_READY_FOR = "25m"
GPU_MEMORY_RATIO = 0.9


def _alert(name: str, expr: str, wait: str, severity: str, summary: str) -> dict[str, Any]:
    """A rule whose runbook is its section of docs/operations.md ("#### <name>")."""
    return {
        "alert": name,
        "expr": expr,
        "for": wait,
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "runbook": f"docs/operations.md#{name.lower()}",
        },
    }


def alert_rules(
    namespace: str,
    gpus: bool,
    device_plugin: tuple[str, str] | None = None,
    *,
    on_demand: bool = False,
    sleeps: bool = False,
) -> list[dict[str, Any]]:
    """``namespace``: the serving workloads'; ``gpus``: TF Serving runs on GPU nodes;
    ``device_plugin``: the namespace and name of the NVIDIA device plugin's DaemonSet the
    stack runs (None: the nodes' AMI brings its own); ``on_demand``: TF Serving scales on
    the gateway's image count (KEDA); ``sleeps``: TF Serving goes to zero when idle."""
    tf = f'namespace="{namespace}",deployment="{TF_SERVING.name}"'
    predict = 'gateway_requests_total{endpoint="/predict"}'
    rules = [
        _alert(
            "GatewayErrors",
            '(sum(rate(gateway_requests_total{endpoint="/predict",status=~"5.."}[5m]))'
            ' - (sum(rate(gateway_errors_total{code="model_waking"}[5m])) or vector(0)))'
            f" / sum(rate({predict}[5m])) > {ERROR_RATIO}"
            f" and sum(rate({predict}[5m])) > {MIN_RATE}",
            "10m",
            "critical",
            "More than 5% of the gateway's answers are 5xx",
        ),
        _alert(
            "GatewayLatencyHigh",
            "histogram_quantile(0.99, sum by (le) (rate("
            'gateway_request_duration_seconds_bucket{endpoint="/predict"}[5m])))'
            f" > {P99_OBJECTIVE_S}",
            "10m",
            "warning",
            f"/predict p99 above {P99_OBJECTIVE_S} s",
        ),
        _alert(
            "TFServingNotReady",
            f"kube_deployment_status_replicas_available{{{tf}}}"
            f" < kube_deployment_spec_replicas{{{tf}}}",
            NOT_READY_FOR,
            "warning",
            "TF Serving has fewer ready pods than it wants",
        ),
    ]
    if not sleeps:
        rules.append(
            _alert(
                "TFServingNotReady",
                f"kube_deployment_status_replicas_available{{{tf}}} == 0"
                f" and kube_deployment_spec_replicas{{{tf}}} > 0",
                "2m",
                "critical",
                "No TF Serving pod is ready: every /predict fails",
            )
        )
    if on_demand:
        rules.append(
            _alert(
                "ScalingSignalMissing",
                f'absent({IMAGES_COUNTER}_total{{namespace="{namespace}"}})',
                "10m",
                "warning",
                "No gateway image count in Prometheus: TF Serving cannot scale on load, nor wake",
            )
        )
    if gpus and device_plugin:
        plugin = f'namespace="{device_plugin[0]}",daemonset="{device_plugin[1]}"'
        rules.append(
            _alert(
                "GPUDevicePluginDown",
                f"kube_daemonset_status_number_unavailable{{{plugin}}} > 0",
                "10m",
                "critical",
                "A GPU node's device plugin is not running: its GPU is unusable",
            )
        )
    if gpus:
        rules.append(
            _alert(
                "GPUMemoryNearlyFull",
                "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)"
                f" > {GPU_MEMORY_RATIO}",
                "10m",
                "warning",
                "A GPU's memory is over 90% used",
            )
        )
    return [{"name": PROJECT, "rules": rules}]
