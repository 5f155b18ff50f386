"""A Kubernetes cluster the stack does not make: a local one (kind, k3d, minikube, Docker
Desktop) or one you already run (GKE, AKS, on-prem, an EKS made elsewhere).

What this target gives the serving components is what the AWS one gives: a Kubernetes
provider (your kubeconfig and context), image references, the gateway Service's
``Exposure``, and nothing to wait for. No cloud resource is created, so ``pulumi destroy``
removes only the stack's own objects and images' tags stay in your registry.

**Images reach the cluster through a registry**, built by your local Docker
(pulumi-docker-build) and pushed by content: the tag is ``v-<content>-<release>``, as on
AWS, and pods pull by digest, so a rebuild after a change reaches the pods and an unchanged
rebuild changes nothing. For kind that registry is the one its guide runs next to the
cluster (``localhost:5001``, which the nodes' containerd maps to the registry container),
rather than ``kind load docker-image``: a load needs a command around Pulumi, cannot be
addressed by digest, and is repeated by hand after every rebuild; a registry is the same
path every other target takes. Any other cluster names its registry (``registry``), which
the local Docker must be logged in to.

**The gateway is reached** through a LoadBalancer Service where the cluster has load
balancers (cloud-provider-kind or MetalLB on kind, k3d's built-in one, ``minikube
tunnel``, Docker Desktop, any cloud), or a ClusterIP Service and a port-forward
(``gatewayService: ClusterIP``); ``gateway_url`` says which.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pulumi
import pulumi_kubernetes as k8s
import yaml

from infra.config import config_error
from infra.gateway import Exposure
from infra.images import ImageBuild, gateway_build, model_build, proxy_build, pushed_image
from infra.kube import GATEWAY
from infra.model_export import ModelExport
from infra.serving import NAMESPACE, Images
from serving_contract.ports import GATEWAY_PORT

HTTP_PORT = 80


def kubeconfig_json(path: str | None, context: str | None) -> str:
    """The kubeconfig the stack uses (``path``, else the first file of ``KUBECONFIG``, else
    ``~/.kube/config``) as JSON, with ``context`` as its current one (None: as it is)."""
    if path is None:
        path = (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0] or "~/.kube/config"
    file = Path(path).expanduser()
    try:
        kubeconfig = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise config_error(f"kubernetes.kubeconfig: cannot read {file} ({exc})") from None
    contexts = [c.get("name") for c in kubeconfig.get("contexts") or []]
    if context is not None:
        if context not in contexts:
            raise config_error(
                f"kubernetes.context: {context!r} is not in {file} (it has: {', '.join(contexts)})"
            )
        kubeconfig["current-context"] = context
    return json.dumps(kubeconfig)


@dataclass(frozen=True)
class OwnClusterArgs:
    local: bool  # a cluster on this machine (kind, k3d, minikube, Docker Desktop)
    name: str  # what the images are called in the registry: <registry>/<name>-gateway...
    kubeconfig: str | None  # a file (None: KUBECONFIG, else ~/.kube/config)
    context: str | None  # None: the kubeconfig's current context
    registry: str
    gateway_service: Literal["LoadBalancer", "ClusterIP"]
    allowed_client_cidrs: list[str]
    model_on_gpu: bool  # which TF Serving image to build


class OwnCluster(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        args: OwnClusterArgs,
        export: ModelExport,
        kubeconfig: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """``kubeconfig``: ``kubeconfig_json``'s, read before anything is declared."""
        super().__init__("clothing:infra:OwnCluster", name, None, opts)
        self.args = args
        # The rollout waits (infra.kube.rollout) read the cluster with the same credentials.
        self.kubeconfig = pulumi.Output.secret(kubeconfig)
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=args.kubeconfig,
            context=args.context,
            enable_server_side_apply=True,
            # A changed Secret (the API keys) is updated in place (see infra.cluster).
            enable_secret_mutable=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        refs = {
            image: self._push(image, build)
            for image, build in (
                ("gateway", gateway_build()),
                ("proxy", proxy_build()),
                ("model", model_build(export, args.model_on_gpu)),
            )
        }
        self.images = Images(model=refs["model"], gateway=refs["gateway"], proxy=refs["proxy"])
        load_balancer = args.gateway_service == "LoadBalancer"
        self.exposure = Exposure(
            service_type=args.gateway_service,
            ports={"http": (HTTP_PORT, "http")},
            source_ranges=args.allowed_client_cidrs if load_balancer else None,
        )
        # Nothing to wait for: the cluster's nodes are there already.
        self.ready: list[pulumi.Resource] = []
        self.register_outputs({})

    def _push(self, image: str, build: ImageBuild) -> pulumi.Output[str]:
        repository = f"{self.args.registry}/{self.args.name}-{image}"
        # a local registry has no use for a build cache: the local Docker keeps its own
        pushed = pushed_image(image, repository, build, self, cache=not self.args.local)
        # by digest: what was pushed, never a moving tag
        return pulumi.Output.concat(repository, "@", pushed.digest)

    def url(self, lb_address: pulumi.Output[str] | None) -> pulumi.Output[str]:
        """Where clients reach the gateway: the load balancer's address, or how to
        port-forward to it."""
        if lb_address is not None:
            return pulumi.Output.concat("http://", lb_address)
        return pulumi.Output.from_input(
            f"http://localhost:{GATEWAY_PORT} (after: kubectl -n {NAMESPACE} port-forward "
            f"svc/{GATEWAY.name} {GATEWAY_PORT}:{HTTP_PORT})"
        )
