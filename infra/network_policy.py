"""Who may connect to what in the namespace: nothing by default, the load balancer to the
gateway, and only the gateway to TF Serving (enforced by the VPC CNI)."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from infra.workloads import GATEWAY, GATEWAY_PORT, GRPC_PORT, REST_PORT, TF_SERVING, App

net = k8s.networking.v1
meta = k8s.meta.v1


def _allow_ingress(
    name: str,
    namespace: pulumi.Input[str],
    app: App,
    ports: list[int],
    source: App | None,
    opts: pulumi.ResourceOptions,
) -> k8s.networking.v1.NetworkPolicy:
    """Let traffic reach ``app`` on ``ports``: from ``source``'s pods, or from anywhere."""
    peers = (
        [net.NetworkPolicyPeerArgs(pod_selector=meta.LabelSelectorArgs(match_labels=source.labels))]
        if source
        else None
    )
    return net.NetworkPolicy(
        name,
        metadata=meta.ObjectMetaArgs(name=name, namespace=namespace, labels=app.labels),
        spec=net.NetworkPolicySpecArgs(
            pod_selector=meta.LabelSelectorArgs(match_labels=app.labels),
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


def network_policies(
    namespace: pulumi.Input[str], redirect_port: int, opts: pulumi.ResourceOptions
) -> list[k8s.networking.v1.NetworkPolicy]:
    """``redirect_port``: the pod port plain HTTP reaches (the proxy's redirect server with
    TLS, else the gateway's own). The metrics port is open to nobody here."""
    deny_all = net.NetworkPolicy(
        "default-deny-ingress",
        metadata=meta.ObjectMetaArgs(name="default-deny-ingress", namespace=namespace),
        spec=net.NetworkPolicySpecArgs(
            pod_selector=meta.LabelSelectorArgs(), policy_types=["Ingress"]
        ),
        opts=opts,
    )
    return [
        deny_all,
        _allow_ingress(
            "tf-serving-from-gateway", namespace, TF_SERVING, [GRPC_PORT, REST_PORT], GATEWAY, opts
        ),
        _allow_ingress(
            "gateway-from-load-balancer",
            namespace,
            GATEWAY,
            sorted({GATEWAY_PORT, redirect_port}),
            None,
            opts,
        ),
    ]
