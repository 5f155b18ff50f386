"""Kubernetes workloads: TF Serving on GPU nodes, the gateway on CPU nodes behind an NLB.

Everything lives in one namespace that enforces the ``restricted`` Pod Security Standard.
The gateway reaches TF Serving through a headless Service (one gRPC sub-channel per pod,
``round_robin`` per request); a ClusterIP Service exists for everything else. The pieces
are in their own modules: ``workloads`` (Deployments), ``pod_scaling`` (autoscalers and
disruption budgets), ``network_policy``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_kubernetes as k8s

from infra.config import ScalingConfig
from infra.network_policy import network_policies
from infra.pod_scaling import autoscaler, disruption_budget
from infra.workloads import (
    GATEWAY,
    GATEWAY_TIMEOUT_S,
    GRPC_PORT,
    REST_PORT,
    TF_SERVING,
    TF_SERVING_TIMEOUT_S,
    App,
    Placement,
    deployment,
    gateway_pod,
    tf_serving_pod,
)

NAMESPACE = "clothing"
LB_ANNOTATION = "service.beta.kubernetes.io/aws-load-balancer"
meta = k8s.meta.v1
core = k8s.core.v1


class Serving(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        model_name: str,
        model_image: pulumi.Input[str],
        gateway_image: pulumi.Input[str],
        proxy_image: pulumi.Input[str],
        model_on_gpu: bool,
        gateway: ScalingConfig,
        tf_serving: ScalingConfig,
        placement: Placement,
        provider: k8s.Provider,
        depends_on: Sequence[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clothing:infra:Serving", name, None, opts)
        self._opts = pulumi.ResourceOptions(
            parent=self, provider=provider, depends_on=list(depends_on)
        )
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
            opts=self._opts,
        )
        self.ns = self.namespace.metadata.name
        for app in (TF_SERVING, GATEWAY):
            # Neither workload talks to the Kubernetes API.
            core.ServiceAccount(
                f"{app.name}-sa",
                metadata=self._meta(app.name, app),
                automount_service_account_token=False,
                opts=self._opts,
            )

        self.tf_serving = deployment(
            TF_SERVING,
            self.ns,
            tf_serving_pod(model_image, model_name, tf_serving, model_on_gpu, placement),
            placement,
            TF_SERVING_TIMEOUT_S,
            self._opts,
        )
        tf_ports = [
            core.ServicePortArgs(
                name="grpc", port=GRPC_PORT, target_port="grpc", app_protocol="grpc"
            ),
            core.ServicePortArgs(name="http", port=REST_PORT, target_port="http"),
        ]
        self.tf_serving_service = core.Service(
            f"{name}-tf-serving-svc",
            metadata=self._meta(TF_SERVING.name, TF_SERVING),
            spec=core.ServiceSpecArgs(type="ClusterIP", selector=TF_SERVING.labels, ports=tf_ports),
            opts=self._opts,
        )
        # Headless: DNS returns every ready pod, so the gateway's round_robin policy keeps a
        # connection to each and balances per request (a ClusterIP pins one connection).
        self.tf_serving_headless = core.Service(
            f"{name}-tf-serving-headless",
            metadata=self._meta(f"{TF_SERVING.name}-headless", TF_SERVING),
            spec=core.ServiceSpecArgs(
                cluster_ip="None", selector=TF_SERVING.labels, ports=tf_ports
            ),
            opts=self._opts,
        )
        self.model_target = pulumi.Output.concat(
            "dns:///",
            self.tf_serving_headless.metadata.name,
            ".",
            self.tf_serving_headless.metadata.namespace,
            f".svc.cluster.local:{GRPC_PORT}",
        )

        # The gateway is ready only once TF Serving is: start waiting for it after that.
        after_model = pulumi.ResourceOptions.merge(
            self._opts, pulumi.ResourceOptions(depends_on=[self.tf_serving])
        )
        self.gateway = deployment(
            GATEWAY,
            self.ns,
            gateway_pod(
                gateway_image, proxy_image, self.model_target, model_name, gateway, placement
            ),
            placement,
            GATEWAY_TIMEOUT_S,
            after_model,
        )
        self.gateway_service = core.Service(
            f"{name}-gateway-svc",
            metadata=self._meta(
                GATEWAY.name,
                GATEWAY,
                annotations={
                    f"{LB_ANNOTATION}-type": "nlb",
                    f"{LB_ANNOTATION}-cross-zone-load-balancing-enabled": "true",
                },
            ),
            spec=core.ServiceSpecArgs(
                type="LoadBalancer",
                selector=GATEWAY.labels,
                ports=[core.ServicePortArgs(name="http", port=80, target_port="http")],
            ),
            opts=self._opts,
        )

        # A parked stack runs no pods, so nothing to autoscale (an HPA cannot go to zero).
        scaled = pulumi.ResourceOptions.merge(
            self._opts, pulumi.ResourceOptions(depends_on=[self.gateway, self.tf_serving])
        )
        self.autoscalers = (
            []
            if placement.parked
            else [
                autoscaler(TF_SERVING, self.ns, tf_serving, scaled),
                autoscaler(GATEWAY, self.ns, gateway, scaled),
            ]
        )
        self.disruption_budgets = [
            disruption_budget(TF_SERVING, self.ns, self._opts),
            disruption_budget(GATEWAY, self.ns, self._opts),
        ]
        self.network_policies = network_policies(self.ns, self._opts)

        self.gateway_hostname = self.gateway_service.status.apply(_ingress_hostname)
        self.register_outputs(
            {"gateway_hostname": self.gateway_hostname, "model_target": self.model_target}
        )

    def _meta(
        self, name: str, app: App, annotations: dict[str, str] | None = None
    ) -> meta.ObjectMetaArgs:
        return meta.ObjectMetaArgs(
            name=name, namespace=self.ns, labels=app.labels, annotations=annotations
        )


def _ingress_hostname(status: object) -> str:
    """The load balancer's DNS name from a Service status (Pulumi waits for it)."""
    ingress = getattr(getattr(status, "load_balancer", None), "ingress", None) or []
    for item in ingress:
        name = getattr(item, "hostname", None) or getattr(item, "ip", None)
        if name:
            return str(name)
    raise ValueError("the gateway Service has no load balancer address")
