"""The whole program, run for both stack files under mocks: do the pieces fit together?"""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.harness import Recorded, StackRun

K8S_EFFECT = {
    "NO_SCHEDULE": "NoSchedule",
    "NO_EXECUTE": "NoExecute",
    "PREFER_NO_SCHEDULE": "PreferNoSchedule",
}


def _deployment(run: StackRun, name: str) -> dict[str, Any]:
    return run.one("kubernetes:apps/v1:Deployment", name).inputs


def _pod(run: StackRun, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = _deployment(run, name)["spec"]["template"]["spec"]
    return pod


def _node_group(run: StackRun, kind: str) -> Recorded:
    [group] = [
        g
        for g in run.of_type("aws:eks/nodeGroup:NodeGroup")
        if g.inputs["nodeGroupName"].endswith(kind)
    ]
    return group


def _env(run: StackRun, name: str) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _pod(run, name)["containers"][0]["env"]}


def test_gpu_taint_matches_tf_serving_toleration(run: StackRun) -> None:
    gpu = _node_group(run, "gpu").inputs
    assert gpu["amiType"] == "AL2023_x86_64_NVIDIA"
    [taint] = gpu["taints"]
    tolerations = _pod(run, "tf-serving")["tolerations"]
    assert any(
        t["key"] == taint["key"]
        and t["effect"] == K8S_EFFECT[taint["effect"]]
        and (t["operator"] == "Exists" or t.get("value") == taint["value"])
        for t in tolerations
    )
    assert "tolerations" not in _pod(run, "gateway")  # the gateway never lands on GPU nodes


def test_node_labels_match_node_selectors(run: StackRun) -> None:
    gpu_labels = _node_group(run, "gpu").inputs["labels"]
    cpu_labels = _node_group(run, "cpu").inputs["labels"]
    tf_selector = _pod(run, "tf-serving")["nodeSelector"]
    gw_selector = _pod(run, "gateway")["nodeSelector"]
    assert tf_selector.items() <= gpu_labels.items()
    assert gw_selector.items() <= cpu_labels.items()
    assert not gw_selector.items() <= gpu_labels.items()


def test_gpu_is_requested_and_device_plugin_runs_on_gpu_nodes(run: StackRun) -> None:
    limits = _pod(run, "tf-serving")["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    plugin = run.one("kubernetes:apps/v1:DaemonSet", "nvidia-device-plugin").inputs
    plugin_pod = plugin["spec"]["template"]["spec"]
    assert plugin_pod["nodeSelector"].items() <= _node_group(run, "gpu").inputs["labels"].items()
    assert any(t["key"] == "nvidia.com/gpu" for t in plugin_pod["tolerations"])


def test_services_select_their_pods_and_target_real_ports(run: StackRun) -> None:
    for service in run.of_type("kubernetes:core/v1:Service"):
        spec = service.inputs["spec"]
        [deployment] = [
            d.inputs
            for d in run.of_type("kubernetes:apps/v1:Deployment")
            if spec["selector"].items()
            <= d.inputs["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert spec["selector"] == deployment["spec"]["selector"]["matchLabels"]
        container_ports = {
            p["name"]: p["containerPort"]
            for c in deployment["spec"]["template"]["spec"]["containers"]
            for p in c["ports"]
        }
        for port in spec["ports"]:
            target = port["targetPort"]
            assert target in container_ports or target in container_ports.values(), (
                service.name,
                target,
            )


def test_service_types(run: StackRun) -> None:
    gateway = run.one("kubernetes:core/v1:Service", "gateway").inputs["spec"]
    assert gateway["type"] == "LoadBalancer"
    assert [p["port"] for p in gateway["ports"]] == [80]
    assert run.one("kubernetes:core/v1:Service", "tf-serving").inputs["spec"]["type"] == "ClusterIP"
    assert (
        run.one("kubernetes:core/v1:Service", "tf-serving-headless").inputs["spec"]["clusterIP"]
        == "None"
    )
    annotations = run.one("kubernetes:core/v1:Service", "gateway").inputs["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-type"] == "nlb"


def test_gateway_env_points_at_the_headless_service(run: StackRun) -> None:
    headless = run.one("kubernetes:core/v1:Service", "tf-serving-headless").inputs
    env = _env(run, "gateway")
    name, namespace = headless["metadata"]["name"], headless["metadata"]["namespace"]
    grpc_port = next(p["port"] for p in headless["spec"]["ports"] if p["name"] == "grpc")
    assert env["TF_SERVING_HOST"] == f"dns:///{name}.{namespace}.svc.cluster.local:{grpc_port}"
    assert env["GRPC_LB_POLICY"] == "round_robin"
    assert env["MODEL_NAME"] == "clothing-model"  # found in the export
    # Nothing about the model: its signature says what it takes and returns.
    per_model = {"CLASS_LABELS", "OUTPUT_ACTIVATION", "IMAGE_SIZE", "PREPROCESSING"}
    assert not per_model & set(env)


def test_images_are_the_pushed_digests(run: StackRun) -> None:
    repos = {
        r.inputs["name"]: r.outputs["repositoryUrl"]
        for r in run.of_type("aws:ecr/repository:Repository")
    }
    pushed = {}
    for image in run.of_type("docker-build:index:Image"):
        assert image.inputs["push"] is True
        assert image.inputs["platforms"] == ["linux/amd64"]
        [tag] = image.inputs["tags"]
        repo_url, version = tag.rsplit(":", 1)
        assert version.startswith("v-") and version != "latest"
        assert image.inputs["registries"][0]["address"] == repo_url
        assert image.inputs["cacheFrom"][0]["registry"]["ref"] == f"{repo_url}:buildcache"
        pushed[repo_url] = f"{repo_url}@{image.outputs['digest']}"
    for app, repo in (
        ("gateway", f"clothing-{run.stack}-gateway"),
        ("tf-serving", f"clothing-{run.stack}-model"),
    ):
        image = _pod(run, app)["containers"][0]["image"]
        assert image == pushed[repos[repo]]
        assert "@sha256:" in image
    assert run.outputs["gateway_image"] == pushed[repos[f"clothing-{run.stack}-gateway"]]
    assert run.outputs["model_image"] == pushed[repos[f"clothing-{run.stack}-model"]]


def test_ecr_repositories_are_safe_to_destroy(run: StackRun) -> None:
    for repo in run.of_type("aws:ecr/repository:Repository"):
        assert repo.inputs["forceDelete"] is True
        assert repo.inputs["imageScanningConfiguration"]["scanOnPush"] is True
        assert repo.inputs["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert len(run.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")) == 2


def test_hpas_target_existing_deployments(run: StackRun) -> None:
    deployments = {
        d.inputs["metadata"]["name"] for d in run.of_type("kubernetes:apps/v1:Deployment")
    }
    hpas = run.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    assert {h.inputs["spec"]["scaleTargetRef"]["name"] for h in hpas} == deployments
    for hpa in hpas:
        ref = hpa.inputs["spec"]["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
    addons = [a.inputs["addonName"] for a in run.of_type("aws:eks/addon:Addon")]
    assert "metrics-server" in addons


def test_only_the_gateway_reaches_tf_serving(run: StackRun) -> None:
    policy = run.one(
        "kubernetes:networking.k8s.io/v1:NetworkPolicy", "tf-serving-from-gateway"
    ).inputs["spec"]
    gateway_labels = _deployment(run, "gateway")["spec"]["template"]["metadata"]["labels"]
    [rule] = policy["ingress"]
    [peer] = rule["from"]
    assert peer["podSelector"]["matchLabels"].items() <= gateway_labels.items()
    deny = run.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "default-deny-ingress").inputs[
        "spec"
    ]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"]
    eks_cluster = run.of_type("eks:index:Cluster")[0].inputs
    assert eks_cluster["vpcCniOptions"]["enableNetworkPolicy"] is True


def test_namespace_is_restricted(run: StackRun) -> None:
    ns = run.one("kubernetes:core/v1:Namespace", "clothing").inputs["metadata"]["labels"]
    assert ns["pod-security.kubernetes.io/enforce"] == "restricted"


def test_cluster_hardening(run: StackRun) -> None:
    cluster = run.of_type("eks:index:Cluster")[0].inputs
    assert cluster["name"] == f"clothing-{run.stack}"
    assert cluster["authenticationMode"] == "API"
    assert cluster["createOidcProvider"] is True
    assert cluster["encryptionConfigKeyArn"].startswith("arn:aws:kms:")
    assert set(cluster["enabledClusterLogTypes"]) >= {"api", "audit", "authenticator"}
    assert cluster["nodeAssociatePublicIpAddress"] is False
    assert cluster["privateSubnetIds"] == [
        f"subnet-private-{i}" for i in range(len(cluster["privateSubnetIds"]))
    ]
    for template in run.of_type("aws:ec2/launchTemplate:LaunchTemplate"):
        assert template.inputs["metadataOptions"]["httpTokens"] == "required"
        assert template.inputs["blockDeviceMappings"][0]["ebs"]["encrypted"] == "true"
    for group in run.of_type("aws:eks/nodeGroup:NodeGroup"):
        assert group.inputs["subnetIds"] == cluster["privateSubnetIds"]  # nodes stay private


def test_subnets_are_tagged_for_load_balancers(run: StackRun) -> None:
    vpc = run.of_type("awsx:ec2:Vpc")[0].inputs
    tags = {spec["type"]: spec["tags"] for spec in vpc["subnetSpecs"]}
    assert tags["Public"]["kubernetes.io/role/elb"] == "1"
    assert tags["Private"]["kubernetes.io/role/internal-elb"] == "1"


def test_destroy_order_load_balancer_before_cluster(run: StackRun) -> None:
    """The LB Service is managed through the provider built from the cluster's kubeconfig,
    so Pulumi deletes it (and waits for the NLB to go) before the cluster and the VPC."""
    [provider] = run.of_type("pulumi:providers:kubernetes")
    cluster = run.of_type("eks:index:Cluster")[0]
    assert provider.inputs["kubeconfig"] == cluster.outputs["kubeconfigJson"]
    service = run.one("kubernetes:core/v1:Service", "gateway")
    assert service.inputs["spec"]["type"] == "LoadBalancer"
    urn, provider_id = service.provider.rsplit("::", 1)
    assert urn.endswith(f"pulumi:providers:kubernetes::{provider.name}")
    assert provider_id == f"{provider.name}-id"


def test_stack_outputs(run: StackRun) -> None:
    outputs = run.outputs
    assert set(outputs) >= {
        "gateway_url", "kubeconfig", "cluster_name", "gateway_repository_url",
        "model_repository_url", "gateway_image", "model_image",
    }  # fmt: skip
    assert outputs["gateway_url"] == "http://gw-123.elb.us-east-1.amazonaws.com"
    assert outputs["cluster_name"] == f"clothing-{run.stack}"
    assert '"kind": "Config"' in outputs["kubeconfig"]
    assert all(value for value in outputs.values())


def test_stack_profiles(stacks: dict[str, StackRun]) -> None:
    dev, prod = stacks["dev"], stacks["prod"]
    vpc = {name: run.of_type("awsx:ec2:Vpc")[0].inputs for name, run in stacks.items()}
    assert vpc["dev"]["natGateways"]["strategy"] == "Single"
    assert vpc["prod"]["natGateways"]["strategy"] == "OnePerAz"
    assert _node_group(dev, "gpu").inputs["capacityType"] == "SPOT"
    assert _node_group(dev, "gpu").inputs["scalingConfig"]["desiredSize"] == 1
    prod_gpu = _node_group(prod, "gpu").inputs["scalingConfig"]
    assert prod_gpu["minSize"] >= 1 and prod_gpu["maxSize"] >= 3
    assert _deployment(prod, "gateway")["spec"]["replicas"] >= 2
    gateway_hpa = prod.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "gateway").inputs[
        "spec"
    ]
    assert gateway_hpa["minReplicas"] >= 2


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_pods_meet_restricted_pod_security(stacks: dict[str, StackRun], stack: str) -> None:
    for name in ("gateway", "tf-serving"):
        pod = _pod(stacks[stack], name)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["readOnlyRootFilesystem"] is True
            assert ctx["capabilities"]["drop"] == ["ALL"]
            assert container["readinessProbe"] and container["livenessProbe"]


def test_rollouts_fit_the_gpu_nodes(run: StackRun) -> None:
    """A GPU rollout that surges needs a spare GPU node; without one it replaces a pod at a
    time instead of waiting forever for a pod that cannot be scheduled."""
    cfg = run.config
    spare = (
        cfg["clothing-serving:gpuNodes"]["maxSize"]
        > cfg["clothing-serving:tfServing"]["maxReplicas"]
    )
    rolling = _deployment(run, "tf-serving")["spec"]["strategy"]["rollingUpdate"]
    assert (rolling["maxSurge"], rolling["maxUnavailable"]) == ((1, 0) if spare else (0, 1))
    gateway = _deployment(run, "gateway")["spec"]["strategy"]["rollingUpdate"]
    assert (gateway["maxSurge"], gateway["maxUnavailable"]) == (1, 0)
