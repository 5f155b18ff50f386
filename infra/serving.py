"""The serving namespace and its two workloads, TF Serving and the gateway, on any
Kubernetes cluster.

The namespace enforces the ``restricted`` Pod Security Standard and denies all ingress
but what each workload opens (``infra.gateway``, ``infra.tf_serving``) and, with
monitoring, the metrics ports to the monitoring namespace. This component takes a
Kubernetes provider and the kubeconfig it is made from, image references and an
``Exposure`` for the gateway's Service: nothing of AWS, so another cluster is another
wiring in ``infra.program``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.gateway import Exposure, Gateway, GatewayArgs
from infra.kube import (
    APP_LABEL,
    GATEWAY,
    TF_SERVING,
    Component,
    allow_ingress,
    from_namespace,
)
from infra.tf_serving import TfServing, TfServingArgs
from serving_contract.ports import METRICS_PORT, REST_PORT

NAMESPACE = "clothing"
meta = k8s.meta.v1
core = k8s.core.v1
net = k8s.networking.v1


@dataclass(frozen=True)
class Images:
    """What the three containers run, as references a node can pull."""

    model: pulumi.Input[str]
    gateway: pulumi.Input[str]
    proxy: pulumi.Input[str]


def ingress_hostname(status: object) -> str:
    """The load balancer's address from a Service status (Pulumi waits for it)."""
    ingress = getattr(getattr(status, "load_balancer", None), "ingress", None) or []
    for item in ingress:
        name = getattr(item, "hostname", None) or getattr(item, "ip", None)
        if name:
            return str(name)
    raise ValueError("the gateway Service has no load balancer address")


class Serving(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        gateway: GatewayArgs,
        tf_serving: TfServingArgs,
        images: Images,
        exposure: Exposure,
        scraped_from: str | None,
        provider: k8s.Provider,
        kubeconfig: pulumi.Input[str],
        depends_on: Sequence[pulumi.Resource],
        scaler_after: Sequence[pulumi.Resource] = (),
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``scaler_after``: what TF Serving's KEDA ScaledObject needs first, when it has
        one. ``scraped_from``: the monitoring namespace, the only one that reaches the
        metrics ports (None: nobody does). ``kubeconfig``: the cluster's, which ``provider``
        is made from, for the waits for the rollouts (``infra.kube.rollout``)."""
        super().__init__("clothing:infra:Serving", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=provider, depends_on=list(depends_on))
        self.namespace = core.Namespace(
            f"{name}-ns",
            metadata=meta.ObjectMetaArgs(
                name=NAMESPACE,
                labels={
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            ),
            opts=child,
        )
        here = Component(self.namespace.metadata.name, child)
        # The workloads' objects were this component's own children before each workload
        # had a component: the alias keeps their URNs.
        within = Component(here.namespace, child, [pulumi.Alias(parent=self)])
        net.NetworkPolicy(
            "default-deny-ingress",
            metadata=here.metadata("default-deny-ingress"),
            spec=net.NetworkPolicySpecArgs(
                pod_selector=meta.LabelSelectorArgs(), policy_types=["Ingress"]
            ),
            opts=here.options(),
        )
        if scraped_from:
            # Prometheus may read the gateway's metrics port and TF Serving's REST port
            # (its metrics path).
            both = meta.LabelSelectorArgs(
                match_expressions=[
                    meta.LabelSelectorRequirementArgs(
                        key=APP_LABEL, operator="In", values=[GATEWAY.name, TF_SERVING.name]
                    )
                ]
            )
            allow_ingress(
                "metrics-from-monitoring",
                both,
                [METRICS_PORT, REST_PORT],
                [from_namespace(scraped_from)],
                here,
            )
        self.tf_serving = TfServing(
            f"{name}-tf-serving",
            tf_serving,
            prefix=name,
            image=images.model,
            kubeconfig=kubeconfig,
            within=within,
            scaler_after=scaler_after,
        )
        self.gateway = Gateway(
            f"{name}-gateway",
            gateway,
            prefix=name,
            image=images.gateway,
            proxy_image=images.proxy,
            model_target=self.tf_serving.target,
            exposure=exposure,
            kubeconfig=kubeconfig,
            within=within,
            after=self.tf_serving.rollout,
        )
        # The load balancer's address, once it has one (None: a ClusterIP Service).
        self.gateway_hostname = (
            self.gateway.service.status.apply(ingress_hostname)
            if exposure.service_type == "LoadBalancer"
            else None
        )
        self.register_outputs({"model_target": self.tf_serving.target})
