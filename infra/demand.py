"""What TF Serving scales on where it runs on GPUs: the images per second the gateway is
asked to classify, per TF Serving replica, against what one replica serves; and going to
zero replicas when nobody asks (KEDA's ScaledObject, with a Prometheus trigger).

Why not GPU utilisation: measured on a GPU with TF Serving's batching semantics
(docs/operations.md, "Scaling by load", has the table), utilisation is the share of time
any kernel runs, not the share of capacity used: 63% at a fifth of a GPU's capacity, 85% at
40%, then flat at 86-90% from half load to overload. A utilisation target scales out far
too early and cannot tell half load from overload. The image rate is the load itself:
linear in it up to and past saturation (it is what is asked, not what is served), so the
autoscaler's proportional rule (replicas x current / target) lands on the right count in
one step, and the same counter says when a sleeping TF Serving must wake (KEDA's
activation: any image asked for in the rate's window).

The gateway counts the images of every /predict that passed the key check and parsing,
before it calls the model (``serving_contract.metrics.IMAGES_COUNTER``), so requests made
while TF Serving is at zero count too: that is what wakes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pulumi
import pulumi_command.local as local
import pulumi_kubernetes as k8s

from infra.kube import App, Component, Replicas, cluster_command
from serving_contract.metrics import IMAGES_COUNTER

# The measured knee (docs/operations.md): p99 held (<= 23 ms) up to 80% of a replica's
# ceiling and broke (256 ms) at 90%.
KNEE = 0.8
# The HPA acts only once the ratio of current to target leaves 1 +- 0.1
# (kube-controller-manager's --horizontal-pod-autoscaler-tolerance, 0.1 by default), so
# the target is the knee divided by 1.1: scale-out starts at the knee at the latest.
HPA_TOLERANCE = 0.1
TARGET_SHARE = KNEE / (1 + HPA_TOLERANCE)
# What one TF Serving replica on a GPU serves at its ceiling (images/s) unless
# tfServing.imagesPerSecond says. NOT MEASURED on the stacks' GPUs (T4, L4, A10G): an
# estimate for the slowest, a T4, from three figures that agree within 20%: the ceiling
# measured on an H200 (3,120 images/s, ../shared/notes) scaled by memory bandwidth (T4
# 320 GB/s, H200 4,800 GB/s: 208); Keras's published Xception time on an A100 (8.1 ms
# per batch of 32: 3,950 images/s) scaled by FP32 throughput (T4 8.1 TFLOPS, A100 TF32
# 156: 205); and Xception's 16.8 GFLOP per image at 8.1 TFLOPS and 40-50% of the peak
# (190-240). bench.scaling_calibration measures it on a live stack.
DEFAULT_GPU_CEILING = 200.0
# Prometheus scrapes the gateway every 15 s; a rate over 2 minutes holds 8 scrapes, and
# stays above zero for 2 minutes after the last image: the quiet period starts then.
RATE_WINDOW = "2m"
POLLING_S = 15  # while asleep, KEDA asks Prometheus this often whether to wake
# The query failing this many times in a row while TF Serving runs: KEDA holds the
# fallback replicas.
FAILURES_BEFORE_FALLBACK = 4
# How long a wake takes, until the gateway has measured one (it tells clients how long to
# wait): the estimates TF Serving's rollout limit is built from (infra.tf_serving): a cold
# GPU node (3-5 minutes), the multi-GB image pulled onto it (5-10 minutes) and the model's
# load and warmup. None of them measured here.
WAKE_ESTIMATE_S = 10 * 60


def demand_query(namespace: str, window: str = RATE_WINDOW) -> str:
    """The images per second asked of the whole service, over ``window`` (KEDA divides
    it by TF Serving's replicas)."""
    return f'sum(rate({IMAGES_COUNTER}_total{{namespace="{namespace}"}}[{window}]))'


@dataclass(frozen=True)
class Demand:
    """TF Serving scaled on the images asked for: ``ceiling`` images/s per replica,
    ``sleep_after_s`` without any before it goes to zero (None: never), read from the
    Prometheus at ``prometheus_url``, the gateway's series in ``namespace``."""

    ceiling: float
    sleep_after_s: int | None
    prometheus_url: str
    namespace: str

    @property
    def target(self) -> float:
        """Images/s per replica the autoscaler holds each replica at."""
        return math.floor(self.ceiling * TARGET_SHARE * 100) / 100

    @property
    def query(self) -> str:
        """The images per second asked of the whole service (KEDA divides by replicas)."""
        return f'sum(rate({IMAGES_COUNTER}_total{{namespace="{self.namespace}"}}[{RATE_WINDOW}]))'


def scaled_object(
    app: App,
    replicas: Replicas,
    demand: Demand,
    at: Component,
    *depends_on: pulumi.Resource,
) -> k8s.apiextensions.CustomResource:
    """KEDA scales ``app`` between ``replicas`` on ``demand`` (through an HPA of its own,
    ``keda-hpa-<name>``); with ``sleep_after_s``, to zero after that long with no image
    asked (``idleReplicaCount``), and back to the minimum on the first. Scale-down stays
    as slow as the CPU autoscalers'. ``depends_on``: the Deployment, KEDA's chart and
    ``handover``."""
    spec: dict[str, object] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app.name},
        "minReplicaCount": replicas.minimum,
        "maxReplicaCount": replicas.maximum,
        "fallback": {
            "failureThreshold": FAILURES_BEFORE_FALLBACK,
            "replicas": replicas.minimum,
        },
        "advanced": {
            "horizontalPodAutoscalerConfig": {
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
            }
        },
        "triggers": [
            {
                "type": "prometheus",
                "name": "images-per-second",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": demand.prometheus_url,
                    "query": demand.query,
                    "threshold": f"{demand.target:g}",
                    # any image asked for in the rate's window wakes a sleeping TF Serving
                    "activationThreshold": "0",
                    # no series is an error (the gateway not scraped, the counter renamed),
                    # not zero: KEDA's fallback then holds the minimum, and it shows
                    "ignoreNullValues": "false",
                },
            }
        ],
    }
    if demand.sleep_after_s is not None:
        spec |= {
            # how often KEDA itself asks (its HPA asks every 15 s once awake): it only
            # decides asleep or awake, and KEDA warns when it is set for nothing else
            "pollingInterval": POLLING_S,
            "idleReplicaCount": 0,
            "cooldownPeriod": demand.sleep_after_s,
            # a new ScaledObject with no activity yet would go to zero at once (KEDA's
            # default is 0 s): a fresh deploy serves for the quiet period first
            "initialCooldownPeriod": demand.sleep_after_s,
        }
    return k8s.apiextensions.CustomResource(
        f"{app.name}-scaler",
        api_version="keda.sh/v1alpha1",
        kind="ScaledObject",
        metadata=at.metadata(app.name, app),
        spec=spec,
        opts=at.options(*depends_on),
    )


def handover(app: App, kubeconfig: pulumi.Input[str], at: Component) -> local.Command:
    """Delete the HPA an earlier version of the program made for ``app``, once, before the
    ScaledObject exists (``python -m infra.hpa_handover``, which says why)."""
    arguments = pulumi.Output.from_input(at.namespace).apply(
        lambda namespace: [f"{namespace}/{app.name}"]
    )
    return cluster_command(
        f"{app.name}-hpa-handover", "infra.hpa_handover", arguments, kubeconfig, at
    )
