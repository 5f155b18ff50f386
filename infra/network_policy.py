"""Who may connect to what in the namespace: nothing by default, the load balancer to the
gateway, and only the gateway to TF Serving (enforced by the VPC CNI)."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from infra.workloads import (
    APP_LABEL,
    GATEWAY,
    GATEWAY_PORT,
    GRPC_PORT,
    METRICS_PORT,
    REST_PORT,
    TF_SERVING,
    App,
)

net = k8s.networking.v1
meta = k8s.meta.v1


def _selecting(app: App) -> meta.LabelSelectorArgs:
    return meta.LabelSelectorArgs(match_labels=app.labels)


def _allow_ingress(
    name: str,
    namespace: pulumi.Input[str],
    pods: meta.LabelSelectorArgs,
    ports: list[int],
    peers: list[net.NetworkPolicyPeerArgs] | None,
    opts: pulumi.ResourceOptions,
    labels: dict[str, str] | None = None,
) -> k8s.networking.v1.NetworkPolicy:
    """Let traffic reach ``pods`` on ``ports``: from ``peers``, or from anywhere."""
    return net.NetworkPolicy(
        name,
        metadata=meta.ObjectMetaArgs(name=name, namespace=namespace, labels=labels),
        spec=net.NetworkPolicySpecArgs(
            pod_selector=pods,
            policy_types=["Ingress"],
            ingress=[
                net.NetworkPolicyIngressRuleArgs(
                    from_=peers,
                    ports=[net.NetworkPolicyPortArgs(port=p, protocol="TCP") for p in ports],
                )
            ],
        ),
        opts=opts,
    )


def _allow_scrapes(
    namespace: pulumi.Input[str], monitoring: str, opts: pulumi.ResourceOptions
) -> k8s.networking.v1.NetworkPolicy:
    """Prometheus (any pod of the ``monitoring`` namespace) may read the gateway's metrics
    port and TF Serving's REST port (its metrics path)."""
    both = meta.LabelSelectorArgs(
        match_expressions=[
            meta.LabelSelectorRequirementArgs(
                key=APP_LABEL, operator="In", values=[GATEWAY.name, TF_SERVING.name]
            )
        ]
    )
    prometheus = net.NetworkPolicyPeerArgs(
        namespace_selector=meta.LabelSelectorArgs(
            match_labels={"kubernetes.io/metadata.name": monitoring}
        )
    )
    return _allow_ingress(
        "metrics-from-monitoring", namespace, both, [METRICS_PORT, REST_PORT], [prometheus], opts
    )


def network_policies(
    namespace: pulumi.Input[str],
    redirect_port: int,
    scraped_from: str | None,
    opts: pulumi.ResourceOptions,
) -> list[k8s.networking.v1.NetworkPolicy]:
    """``redirect_port``: the pod port plain HTTP reaches (the proxy's redirect server with
    TLS, else the gateway's own). ``scraped_from``: the monitoring namespace, the only one
    that reaches the metrics ports (none: nobody does)."""
    deny_all = net.NetworkPolicy(
        "default-deny-ingress",
        metadata=meta.ObjectMetaArgs(name="default-deny-ingress", namespace=namespace),
        spec=net.NetworkPolicySpecArgs(
            pod_selector=meta.LabelSelectorArgs(), policy_types=["Ingress"]
        ),
        opts=opts,
    )
    scrapes = [_allow_scrapes(namespace, scraped_from, opts)] if scraped_from else []
    return [
        *scrapes,
        deny_all,
        _allow_ingress(
            "tf-serving-from-gateway",
            namespace,
            _selecting(TF_SERVING),
            [GRPC_PORT, REST_PORT],
            [net.NetworkPolicyPeerArgs(pod_selector=_selecting(GATEWAY))],
            opts,
            labels=TF_SERVING.labels,
        ),
        _allow_ingress(
            "gateway-from-load-balancer",
            namespace,
            _selecting(GATEWAY),
            sorted({GATEWAY_PORT, redirect_port}),
            None,
            opts,
            labels=GATEWAY.labels,
        ),
    ]
