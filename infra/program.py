"""The whole stack, wired from its components. ``main()`` is what ``pulumi up`` runs."""

from __future__ import annotations

from typing import Any

import pulumi

from infra.cluster import Cluster
from infra.config import load_config
from infra.images import ImageRegistry
from infra.model_export import find_export
from infra.network import Network
from infra.serving import Serving


def main() -> dict[str, pulumi.Output[Any]]:
    """Declare every resource and return the stack outputs."""
    cfg = load_config()  # raises ConfigError before anything is declared
    export = find_export(cfg.model)
    cluster_name = f"clothing-{cfg.stack}"

    network = Network("network", cfg, cluster_name)
    cluster = Cluster("cluster", cfg, cluster_name, network)
    images = ImageRegistry("images", cfg, cluster_name, export)
    serving = Serving("serving", cfg, export, images, cluster)

    return {
        "gateway_url": pulumi.Output.concat("http://", serving.gateway_hostname),
        "kubeconfig": pulumi.Output.secret(cluster.kubeconfig_json),
        "cluster_name": pulumi.Output.from_input(cluster_name),
        "gateway_repository_url": images.gateway_repo.repository_url,
        "model_repository_url": images.model_repo.repository_url,
        "gateway_image": images.gateway_ref,
        "model_image": images.model_ref,
        "model_version": pulumi.Output.from_input(export.version),
    }
