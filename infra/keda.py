"""KEDA, which scales TF Serving on the images asked for and takes it to zero when idle
(``infra.demand`` declares what it scales and on what).

Chosen over prometheus-adapter plus an HPA because an HPA cannot go to zero replicas (nor
come back from zero on a metric), and over KEDA's HTTP add-on because the gateway, not TF
Serving, takes the requests: it stays up and counts them, and Prometheus already holds
that count. KEDA's chart installs its CRDs, the operator, its external-metrics API server
(which its HPAs read) and its admission webhook (which refuses a second autoscaler for
the same Deployment), all on the CPU pool, in its own namespace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.kube import Nodes
from infra.monitoring import Chart, pod_resources

KEDA = Chart("keda", "2.20.2", "https://kedacore.github.io/charts")
NAMESPACE = "keda"


def keda_values(nodes: Nodes) -> dict[str, Any]:
    """On ``nodes``, with the requests the capacity check counts (``MONITORING_PODS``)."""
    return {
        "nodeSelector": nodes.labels,
        "resources": {
            "operator": pod_resources("keda-operator"),
            "metricServer": pod_resources("keda-metrics-apiserver"),
            "webhooks": pod_resources("keda-admission-webhooks"),
        },
    }


class Keda(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        nodes: Nodes,
        provider: k8s.Provider,
        depends_on: Sequence[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("clothing:infra:Keda", name, None, opts)
        self.release = k8s.helm.v3.Release(
            name,
            name="keda",
            namespace=NAMESPACE,
            create_namespace=True,
            chart=KEDA.name,
            version=KEDA.version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=KEDA.repo),
            values=keda_values(nodes),
            opts=pulumi.ResourceOptions(
                parent=self, provider=provider, depends_on=list(depends_on)
            ),
        )
        self.register_outputs({})
