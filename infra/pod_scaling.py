"""How many pods each tier runs, and how many may be disrupted at once."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from infra.config import ScalingConfig
from infra.workloads import App

hpa = k8s.autoscaling.v2


def _cpu(scaling: ScalingConfig) -> hpa.MetricSpecArgs:
    return hpa.MetricSpecArgs(
        type="Resource",
        resource=hpa.ResourceMetricSourceArgs(
            name="cpu",
            target=hpa.MetricTargetArgs(
                type="Utilization", average_utilization=scaling.target_cpu_percent
            ),
        ),
    )


def _pods_metric(metric: str, average: int) -> hpa.MetricSpecArgs:
    """A custom metric per pod (prometheus-adapter serves it), averaged over the pods."""
    return hpa.MetricSpecArgs(
        type="Pods",
        pods=hpa.PodsMetricSourceArgs(
            metric=hpa.MetricIdentifierArgs(name=metric),
            target=hpa.MetricTargetArgs(type="AverageValue", average_value=str(average)),
        ),
    )


def autoscaler(
    app: App,
    namespace: pulumi.Input[str],
    scaling: ScalingConfig,
    opts: pulumi.ResourceOptions,
    load_metric: tuple[str, int] | None = None,
) -> k8s.autoscaling.v2.HorizontalPodAutoscaler:
    """Scale between the stack's minimum and maximum on ``load_metric`` (a per-pod custom
    metric and its target average), else on CPU; scale down slowly."""
    metric = _pods_metric(*load_metric) if load_metric else _cpu(scaling)
    return hpa.HorizontalPodAutoscaler(
        f"{app.name}-hpa",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=app.name, namespace=namespace, labels=app.labels),
        spec=hpa.HorizontalPodAutoscalerSpecArgs(
            scale_target_ref=hpa.CrossVersionObjectReferenceArgs(
                api_version="apps/v1", kind="Deployment", name=app.name
            ),
            min_replicas=scaling.min_replicas,
            max_replicas=scaling.max_replicas,
            metrics=[metric],
            behavior=hpa.HorizontalPodAutoscalerBehaviorArgs(
                scale_down=hpa.HPAScalingRulesArgs(stabilization_window_seconds=300)
            ),
        ),
        opts=opts,
    )


def disruption_budget(
    app: App, namespace: pulumi.Input[str], opts: pulumi.ResourceOptions
) -> k8s.policy.v1.PodDisruptionBudget:
    """One pod at a time may be evicted (node drains, Karpenter consolidation and drift):
    with two or more replicas the last ready one is never evicted, since an eviction is
    refused while another pod is already unavailable."""
    return k8s.policy.v1.PodDisruptionBudget(
        f"{app.name}-pdb",
        metadata=k8s.meta.v1.ObjectMetaArgs(name=app.name, namespace=namespace, labels=app.labels),
        spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
            max_unavailable=1,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=app.labels),
        ),
        opts=opts,
    )
