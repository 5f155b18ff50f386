"""Kubernetes workloads: TF Serving on GPU nodes, the gateway on CPU nodes behind an NLB.

Everything lives in one namespace that enforces the ``restricted`` Pod Security Standard.
The gateway reaches TF Serving through a headless Service (one gRPC sub-channel per pod,
``round_robin`` per request); a ClusterIP Service exists for everything else. The pieces
are in their own modules: ``workloads`` (Deployments), ``pod_scaling`` (autoscalers and
disruption budgets), ``network_policy``, ``exposure`` (the load balancer, TLS, DNS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.config import ScalingConfig
from infra.exposure import PublicEndpoint, dns_record, gateway_service, ingress_hostname
from infra.network_policy import network_policies
from infra.pod_scaling import autoscaler, disruption_budget
from infra.workloads import (
    API_KEYS_FILE,
    GATEWAY,
    GATEWAY_TIMEOUT_S,
    GRPC_PORT,
    REST_PORT,
    TF_SERVING,
    TF_SERVING_TIMEOUT_S,
    App,
    GatewayAccess,
    Placement,
    deployment,
    gateway_pod,
    tf_serving_pod,
)

NAMESPACE = "clothing"
meta = k8s.meta.v1
core = k8s.core.v1


@dataclass(frozen=True)
class Scraping:
    """The monitoring stack's side of the workloads: who may scrape them, and the load
    metric TF Serving scales on (a custom metric and its per-pod target; None: CPU)."""

    namespace: str
    tf_serving_metric: tuple[str, int] | None


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
        endpoint: PublicEndpoint,
        api_key_file: str | None,
        monitoring: Scraping | None,
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

        # Digests only (infra.api_keys), still a secret to Pulumi: never shown in plain text.
        self.api_keys = (
            core.Secret(
                f"{name}-api-keys",
                metadata=self._meta("gateway-api-keys", GATEWAY),
                type="Opaque",
                string_data={API_KEYS_FILE: pulumi.Output.secret(api_key_file)},
                opts=self._opts,
            )
            if api_key_file
            else None
        )
        access = GatewayAccess(
            api_keys_secret=self.api_keys.metadata.name if self.api_keys else None,
            behind_tls=endpoint.tls,
        )

        # The gateway is ready only once TF Serving is: start waiting for it after that.
        after_model = pulumi.ResourceOptions.merge(
            self._opts, pulumi.ResourceOptions(depends_on=[self.tf_serving])
        )
        self.gateway = deployment(
            GATEWAY,
            self.ns,
            gateway_pod(
                gateway_image,
                proxy_image,
                self.model_target,
                model_name,
                gateway,
                placement,
                access,
            ),
            placement,
            GATEWAY_TIMEOUT_S,
            after_model,
        )
        self.gateway_service = gateway_service(f"{name}-gateway-svc", self.ns, endpoint, self._opts)

        # A parked stack runs no pods, so nothing to autoscale (an HPA cannot go to zero).
        scaled = pulumi.ResourceOptions.merge(
            self._opts, pulumi.ResourceOptions(depends_on=[self.gateway, self.tf_serving])
        )
        self.autoscalers = (
            []
            if placement.parked
            else [
                autoscaler(
                    TF_SERVING,
                    self.ns,
                    tf_serving,
                    scaled,
                    monitoring.tf_serving_metric if monitoring else None,
                ),
                autoscaler(GATEWAY, self.ns, gateway, scaled),
            ]
        )
        self.disruption_budgets = [
            disruption_budget(TF_SERVING, self.ns, self._opts),
            disruption_budget(GATEWAY, self.ns, self._opts),
        ]
        self.network_policies = network_policies(
            self.ns,
            endpoint.redirect_port,
            monitoring.namespace if monitoring else None,
            self._opts,
        )

        self.gateway_hostname = self.gateway_service.status.apply(ingress_hostname)
        self.dns_record = dns_record(
            f"{name}-dns",
            endpoint,
            self.gateway_hostname,
            pulumi.ResourceOptions(parent=self),  # an AWS resource: the default provider
        )
        self.register_outputs(
            {"gateway_hostname": self.gateway_hostname, "model_target": self.model_target}
        )

    def _meta(
        self, name: str, app: App, annotations: dict[str, str] | None = None
    ) -> meta.ObjectMetaArgs:
        return meta.ObjectMetaArgs(
            name=name, namespace=self.ns, labels=app.labels, annotations=annotations
        )
