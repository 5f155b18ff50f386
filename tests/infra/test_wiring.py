"""The whole program, run for both stack files under mocks: do the pieces fit together?"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from infra import rollout_wait
from infra.config import parse_stack_file, stack_file
from infra.karpenter import NAMESPACE as KARPENTER_NAMESPACE
from infra.network import DISCOVERY_TAG
from infra.program import plan
from infra.serving import NAMESPACE
from serving_contract.model import DEFAULT_MODEL_NAME
from tests.infra.harness import ROOT, Recorded, StackRun

PREFIX = "clothing-serving:"


def _deployment(run: StackRun, name: str) -> dict[str, Any]:
    return run.one("kubernetes:apps/v1:Deployment", name).inputs


def _pod(run: StackRun, name: str) -> dict[str, Any]:
    pod: dict[str, Any] = _deployment(run, name)["spec"]["template"]["spec"]
    return pod


def _node_pool(run: StackRun, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = run.one("kubernetes:karpenter.sh/v1:NodePool", name).inputs["spec"]
    return spec


def _node_class(run: StackRun, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = run.one("kubernetes:karpenter.k8s.aws/v1:EC2NodeClass", name).inputs[
        "spec"
    ]
    return spec


def _release(run: StackRun, name: str) -> dict[str, Any]:
    [release] = [
        r.inputs for r in run.of_type("kubernetes:helm.sh/v3:Release") if r.inputs["name"] == name
    ]
    return release


def _env(run: StackRun, name: str) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _pod(run, name)["containers"][0]["env"]}


def _role(run: StackRun, resource_name: str) -> Recorded:
    [role] = [r for r in run.of_type("aws:iam/role:Role") if r.name == resource_name]
    return role


def test_gpu_pool_taint_matches_tf_serving_toleration(run: StackRun) -> None:
    [taint] = _node_pool(run, "gpu")["template"]["spec"]["taints"]
    tolerations = _pod(run, "tf-serving")["tolerations"]
    assert any(
        t["key"] == taint["key"]
        and t["effect"] == taint["effect"]
        and (t["operator"] == "Exists" or t.get("value") == taint["value"])
        for t in tolerations
    )
    assert "tolerations" not in _pod(run, "gateway")  # the gateway never lands on GPU nodes
    assert _node_pool(run, "cpu")["template"]["spec"]["taints"] == []


def test_pool_labels_match_node_selectors(run: StackRun) -> None:
    gpu_labels = _node_pool(run, "gpu")["template"]["metadata"]["labels"]
    cpu_labels = _node_pool(run, "cpu")["template"]["metadata"]["labels"]
    assert _pod(run, "tf-serving")["nodeSelector"].items() <= gpu_labels.items()
    assert _pod(run, "gateway")["nodeSelector"].items() <= cpu_labels.items()
    assert not _pod(run, "gateway")["nodeSelector"].items() <= gpu_labels.items()
    [system] = run.of_type("aws:eks/nodeGroup:NodeGroup")
    controller = _release(run, "karpenter")["values"]
    # Karpenter never runs on nodes it manages.
    assert controller["nodeSelector"].items() <= system.inputs["labels"].items()
    assert not controller["nodeSelector"].items() <= cpu_labels.items()


def test_pools_follow_the_stack_config(run: StackRun) -> None:
    cfg = run.config
    for pool, key in (("cpu", "cpuNodes"), ("gpu", "gpuNodes")):
        spec = _node_pool(run, pool)
        requirements = {r["key"]: r["values"] for r in spec["template"]["spec"]["requirements"]}
        assert (
            requirements["node.kubernetes.io/instance-type"] == cfg[PREFIX + key]["instanceTypes"]
        )
        assert requirements["karpenter.sh/capacity-type"] == cfg[PREFIX + key]["capacityTypes"]
        assert spec["template"]["spec"]["nodeClassRef"] == {
            "group": "karpenter.k8s.aws",
            "kind": "EC2NodeClass",
            "name": pool,
        }
        _node_class(run, pool)  # the class it names exists
    # what the CPU pool's pods need, as the plan computed it (the stacks leave it unset)
    assert "maxVcpus" not in cfg[PREFIX + "cpuNodes"]
    planned = plan(parse_stack_file(run.stack), DEFAULT_MODEL_NAME).aws.cpu_pool.limit
    assert _node_pool(run, "cpu")["limits"] == {"cpu": str(planned)}
    assert _node_pool(run, "gpu")["limits"] == {
        "nvidia.com/gpu": str(cfg[PREFIX + "gpuNodes"]["maxGpus"])
    }
    gpu = _node_pool(run, "gpu")["disruption"]
    assert gpu["consolidationPolicy"] == "WhenEmpty"  # idle GPU nodes go; busy ones stay


def test_gpu_is_requested_and_device_plugin_runs_on_gpu_nodes(run: StackRun) -> None:
    limits = _pod(run, "tf-serving")["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    plugin = run.one("kubernetes:apps/v1:DaemonSet", "nvidia-device-plugin").inputs
    plugin_pod = plugin["spec"]["template"]["spec"]
    gpu_labels = _node_pool(run, "gpu")["template"]["metadata"]["labels"]
    assert plugin_pod["nodeSelector"].items() <= gpu_labels.items()
    assert any(t["key"] == "nvidia.com/gpu" for t in plugin_pod["tolerations"])
    [container] = plugin_pod["containers"]
    # NVIDIA's published securityContext (k8s-device-plugin v0.17.1,
    # deployments/static/nvidia-device-plugin.yml), no stricter
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    assert "securityContext" not in plugin_pod
    # on GPU nodes only, so a plugin that cannot start there crash-loops (and alerts)
    assert {"name": "FAIL_ON_INIT_ERROR", "value": "true"} in container["env"]


def test_karpenter_finds_the_subnets_and_security_group(run: StackRun) -> None:
    cluster_name = f"clothing-{run.stack}"
    vpc = run.of_type("awsx:ec2:Vpc")[0].inputs
    private = next(s for s in vpc["subnetSpecs"] if s["type"] == "Private")
    assert private["tags"][DISCOVERY_TAG] == cluster_name
    public = next(s for s in vpc["subnetSpecs"] if s["type"] == "Public")
    assert DISCOVERY_TAG not in public["tags"]  # nodes never land in public subnets
    eks_cluster = run.of_type("eks:index:Cluster")[0]
    for pool in ("cpu", "gpu"):
        spec = _node_class(run, pool)
        assert spec["subnetSelectorTerms"] == [{"tags": {DISCOVERY_TAG: cluster_name}}]
        assert spec["securityGroupSelectorTerms"] == [
            {"id": eks_cluster.outputs["clusterSecurityGroupId"]}
        ]
        assert spec["metadataOptions"]["httpTokens"] == "required"
        assert spec["metadataOptions"]["httpPutResponseHopLimit"] == 1
        assert spec["blockDeviceMappings"][0]["ebs"]["encrypted"] is True
    assert _node_class(run, "gpu")["amiSelectorTerms"] == [{"alias": "al2023@latest"}]


def test_karpenter_identity_and_permissions(run: StackRun) -> None:
    cluster_name = f"clothing-{run.stack}"
    controller = _release(run, "karpenter")
    values = controller["values"]
    assert controller["namespace"] == KARPENTER_NAMESPACE
    assert controller["skipCrds"] is True
    assert _release(run, "karpenter-crd")["version"] == controller["version"]
    # Pod Identity: the controller's service account gets the controller role.
    [association] = run.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    assert association.inputs["namespace"] == controller["namespace"]
    assert association.inputs["serviceAccount"] == values["serviceAccount"]["name"]
    assert association.inputs["clusterName"] == cluster_name
    role = _role(run, "nodes-controller-role")
    assert association.inputs["roleArn"] == role.outputs["arn"]
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert "eks-pod-identity-agent" in [
        a.inputs["addonName"] for a in run.of_type("aws:eks/addon:Addon")
    ]
    # Its policy: pass only the node role, read only this queue, touch only this cluster.
    [policy] = [
        p
        for p in run.of_type("aws:iam/rolePolicy:RolePolicy")
        if p.name == "nodes-controller-policy"
    ]
    statements = {s["Sid"]: s for s in json.loads(policy.inputs["policy"])["Statement"]}
    node_role = _role(run, "nodes-node-role")
    assert statements["PassNodeRole"]["Resource"] == node_role.outputs["arn"]
    [queue] = run.of_type("aws:sqs/queue:Queue")
    assert statements["ReadInterruptions"]["Resource"] == queue.outputs["arn"]
    assert statements["DeleteOwnResources"]["Condition"]["StringEquals"] == {
        f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}": "owned"
    }
    assert values["settings"] == {
        "clusterName": cluster_name,
        "interruptionQueue": queue.inputs["name"],
    }
    # Its region, which it cannot read from the nodes' metadata (hop limit 1 keeps pods out).
    assert _node_class(run, "cpu")["metadataOptions"]["httpPutResponseHopLimit"] == 1
    region = stack_file(run.stack)["aws:region"]
    assert {"name": "AWS_REGION", "value": region} in values["controller"]["env"]
    # Its nodes can join: the node role has an EC2_LINUX access entry, and the EC2NodeClass
    # launches them with it.
    [entry] = run.of_type("aws:eks/accessEntry:AccessEntry")
    assert entry.inputs == {
        "clusterName": cluster_name,
        "principalArn": node_role.outputs["arn"],
        "type": "EC2_LINUX",
    }
    assert _node_class(run, "gpu")["role"] == node_role.outputs["name"]
    # Interruptions reach the queue.
    rules = {
        r.name: json.loads(r.inputs["eventPattern"])
        for r in run.of_type("aws:cloudwatch/eventRule:EventRule")
    }
    assert {
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Spot Instance Interruption Warning"],
    } in rules.values()
    targets = run.of_type("aws:cloudwatch/eventTarget:EventTarget")
    assert len(targets) == len(rules)
    assert {t.inputs["arn"] for t in targets} == {queue.outputs["arn"]}


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
            for p in c.get("ports", [])
        }
        for port in spec["ports"]:
            target = port["targetPort"]
            assert target in container_ports or target in container_ports.values(), (
                service.name,
                target,
            )


def test_service_types(run: StackRun) -> None:
    gateway = run.one("kubernetes:core/v1:Service", "gateway").inputs["spec"]
    assert gateway["type"] == "LoadBalancer"  # its ports: test_public_endpoint.py
    assert run.one("kubernetes:core/v1:Service", "tf-serving").inputs["spec"]["type"] == "ClusterIP"
    assert (
        run.one("kubernetes:core/v1:Service", "tf-serving-headless").inputs["spec"]["clusterIP"]
        == "None"
    )
    annotations = run.one("kubernetes:core/v1:Service", "gateway").inputs["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-type"] == "nlb"


def test_the_proxy_fronts_gunicorn_in_the_gateway_pod(run: StackRun) -> None:
    """The Service reaches nginx; gunicorn listens on the pod's loopback, where nginx's
    upstream points (services/gateway/proxy/nginx.conf)."""
    from tests.test_one_source import nginx_ports

    gateway, proxy = _pod(run, "gateway")["containers"]
    assert proxy["name"] == "proxy" and "ports" not in gateway
    listen, upstream = nginx_ports()
    assert [p["containerPort"] for p in proxy["ports"] if p["name"] == "http"] == [listen]
    env = _env(run, "gateway")
    assert (env["HOST"], int(env["PORT"])) == upstream
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/readyz"  # the whole path


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
    releases = {r.name: r for r in run.of_type("random:index/randomId:RandomId")}
    pushed = {}
    for image in run.of_type("docker-build:index:Image"):
        assert image.inputs["push"] is True
        assert image.inputs["platforms"] == ["linux/amd64"]
        [tag] = image.inputs["tags"]
        repo_url, version = tag.rsplit(":", 1)
        # v-<content>-<release>: the release id is drawn anew whenever the content changes
        # (its keeper), so content A, then B, then A again pushes a third, new tag.
        release = releases[image.name.replace("-image", "-release")]
        content = release.inputs["keepers"]["content"]
        assert version == f"v-{content}-{release.outputs['hex']}"
        assert re.fullmatch(r"[0-9a-f]{16}", content)
        assert image.inputs["registries"][0]["address"] == repo_url
        assert image.inputs["cacheFrom"][0]["registry"]["ref"] == f"{repo_url}:buildcache"
        pushed[repo_url] = f"{repo_url}@{image.outputs['digest']}"
    for app, container, repo in (
        ("gateway", 0, f"clothing-{run.stack}-gateway"),
        ("gateway", 1, f"clothing-{run.stack}-gateway-proxy"),
        ("tf-serving", 0, f"clothing-{run.stack}-model"),
    ):
        image = _pod(run, app)["containers"][container]["image"]
        assert image == pushed[repos[repo]]
        assert "@sha256:" in image
    assert run.outputs["gateway_image"] == pushed[repos[f"clothing-{run.stack}-gateway"]]
    assert run.outputs["model_image"] == pushed[repos[f"clothing-{run.stack}-model"]]


def test_image_builds_do_not_depend_on_the_checkout_path(run: StackRun, export_dir: Path) -> None:
    """Locations are relative (pulumi-docker-build compares them as strings), and preview
    builds nothing."""
    expected = {
        "gateway-image": (ROOT, ROOT / "services" / "gateway" / "Dockerfile", {}),
        "proxy-image": (ROOT, ROOT / "services" / "gateway" / "proxy" / "Dockerfile", {}),
        "model-image": (
            ROOT, ROOT / "services" / "tf-serving" / "Dockerfile", {"models": export_dir},
        ),
    }  # fmt: skip
    for image in run.of_type("docker-build:index:Image"):
        context, dockerfile, named = expected[image.name]
        locations = [
            image.inputs["context"]["location"],
            image.inputs["dockerfile"]["location"],
            *(v["location"] for v in image.inputs["context"].get("named", {}).values()),
        ]
        assert not any(os.path.isabs(location) for location in locations)
        assert Path(image.inputs["context"]["location"]).resolve() == context
        assert Path(image.inputs["dockerfile"]["location"]).resolve() == dockerfile
        for key, root in named.items():
            assert Path(image.inputs["context"]["named"][key]["location"]).resolve() == root
        assert image.inputs["buildOnPreview"] is False


def test_ecr_repositories_are_safe_to_destroy(run: StackRun) -> None:
    for repo in run.of_type("aws:ecr/repository:Repository"):
        assert repo.inputs["forceDelete"] is True
        assert repo.inputs["imageScanningConfiguration"]["scanOnPush"] is True
        assert repo.inputs["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert len(run.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")) == 3


def test_autoscalers_own_the_replica_counts(run: StackRun) -> None:
    """The gateway's HPA and TF Serving's ScaledObject (KEDA runs its HPA) each own their
    Deployment's count."""
    deployments = {
        d.inputs["metadata"]["name"]: d.inputs for d in run.of_type("kubernetes:apps/v1:Deployment")
    }
    hpas = run.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler") + run.of_type(
        "kubernetes:keda.sh/v1alpha1:ScaledObject"
    )
    assert sorted(h.inputs["spec"]["scaleTargetRef"]["name"] for h in hpas) == sorted(deployments)
    for hpa in hpas:
        ref = hpa.inputs["spec"]["scaleTargetRef"]
        assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
    for deployment in deployments.values():
        # Declared replicas would be re-applied over the autoscaler's on every `pulumi up`.
        assert "replicas" not in deployment["spec"]
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


def test_cluster_hardening_and_ownership(run: StackRun) -> None:
    cluster = run.of_type("eks:index:Cluster")[0].inputs
    cluster_name = f"clothing-{run.stack}"
    assert cluster["name"] == cluster_name
    assert cluster["version"] == run.config[PREFIX + "clusterVersion"]
    assert cluster["authenticationMode"] == "API"
    assert cluster["skipDefaultSecurityGroups"] is True
    assert cluster["encryptionConfigKeyArn"].startswith("arn:aws:kms:")
    assert set(cluster["enabledClusterLogTypes"]) >= {"api", "audit", "authenticator"}
    assert cluster["nodeAssociatePublicIpAddress"] is False
    assert cluster["privateSubnetIds"] == [
        f"subnet-private-{i}" for i in range(len(cluster["privateSubnetIds"]))
    ]
    # The control plane's log group is the stack's: retention set, deleted on destroy.
    [logs] = run.of_type("aws:cloudwatch/logGroup:LogGroup")
    assert logs.inputs["name"] == f"/aws/eks/{cluster_name}/cluster"
    assert logs.inputs["retentionInDays"] == run.config[PREFIX + "logRetentionDays"]
    for template in run.of_type("aws:ec2/launchTemplate:LaunchTemplate"):
        assert template.inputs["metadataOptions"]["httpTokens"] == "required"
        assert template.inputs["blockDeviceMappings"][0]["ebs"]["encrypted"] == "true"


def test_system_node_group_can_be_replaced_and_follows_the_cluster(run: StackRun) -> None:
    cluster = run.of_type("eks:index:Cluster")[0].inputs
    [group] = run.of_type("aws:eks/nodeGroup:NodeGroup")
    # A prefix, so Pulumi's create-before-delete replacement gets a new name.
    assert "nodeGroupName" not in group.inputs
    assert group.inputs["nodeGroupNamePrefix"] == f"clothing-{run.stack}-system-"
    assert group.inputs["version"] == cluster["version"]
    assert group.inputs["subnetIds"] == cluster["privateSubnetIds"]  # nodes stay private
    size = run.config[PREFIX + "systemNodes"]["size"]
    assert group.inputs["scalingConfig"]["desiredSize"] == size


def test_admin_principals_get_access_entries(export_dir: Path) -> None:
    from tests.infra.conftest import with_export
    from tests.infra.harness import run_stack

    config = with_export("dev", export_dir)
    arns = ["arn:aws:iam::123456789012:role/ci-deployer", "arn:aws:iam::123456789012:user/ana"]
    config[PREFIX + "adminPrincipalArns"] = arns
    run = run_stack("dev", config)
    entries = run.of_type("eks:index:Cluster")[0].inputs["accessEntries"]
    assert sorted(e["principalArn"] for e in entries.values()) == sorted(arns)
    for entry in entries.values():
        [association] = entry["accessPolicies"].values()
        assert association["policyArn"].endswith("/AmazonEKSClusterAdminPolicy")
        assert association["accessScope"] == {"type": "cluster"}


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


def test_create_and_destroy_order(run: StackRun) -> None:
    """Pulumi creates what a resource depends on first and deletes it last; each of these
    edges keeps a real `pulumi up` or `pulumi destroy` from failing or leaving things behind."""
    needs = run.depends_on
    # EKS logs into the group the stack owns (and deletes), not one it would create itself.
    assert "cluster-logs" in needs["cluster-eks"]
    # Karpenter starts on the system nodes, with its CRDs, identity and permissions in place.
    assert {
        "cluster-system", "nodes-crds", "nodes-pod-identity", "nodes-controller-policy",
    } <= needs["nodes-controller"]  # fmt: skip
    # The pools come after the controller, so on destroy they go while it still runs and
    # terminates their nodes.
    for tier in ("cpu", "gpu"):
        assert "nodes-controller" in needs[f"karpenter-{tier}-nodepool"]
        assert f"karpenter-{tier}-nodeclass" in needs[f"karpenter-{tier}-nodepool"]
    # Everything serving declares comes after both pools: the pods have nodes to go to, and
    # on destroy the pods and the load balancer go before Karpenter and its nodes.
    serving = [
        r.name
        for r in run.kubernetes_objects()
        if r.inputs.get("metadata", {}).get("namespace") == NAMESPACE
        or r.typ == "kubernetes:core/v1:Namespace"
    ]
    assert len(serving) > 10
    for name in serving:
        assert {"karpenter-cpu-nodepool", "karpenter-gpu-nodepool"} <= needs[name], name


def test_stack_outputs(run: StackRun) -> None:
    outputs = run.outputs
    assert set(outputs) >= {
        "gateway_url", "kubeconfig", "cluster_name", "gateway_repository_url",
        "model_repository_url", "gateway_image", "model_image",
    }  # fmt: skip
    assert outputs["load_balancer_hostname"] == "gw-123.elb.us-east-1.amazonaws.com"
    assert outputs["cluster_name"] == f"clothing-{run.stack}"
    assert '"kind": "Config"' in outputs["kubeconfig"]
    assert outputs["parked"] is False


def _rollout_wait(run: StackRun, app: str) -> tuple[Recorded, argparse.Namespace]:
    """The command that waits for ``app``'s rollout, and its arguments as
    infra.rollout_wait reads them."""
    [command] = [c for c in run.of_type("command:local:Command") if c.name == f"{app}-rollout"]
    words = shlex.split(command.inputs["create"])
    assert words[:6] == ["uv", "run", "--no-sync", "python", "-m", "infra.rollout_wait"]
    parsed = rollout_wait.parser().parse_args(words[6:])
    return command, parsed


def test_waits_fit_a_cold_gpu_node(run: StackRun) -> None:
    """A cold GPU node, a multi-GB pull and model warmup fit the waits."""
    _, tf = _rollout_wait(run, "tf-serving")
    assert tf.timeout >= 30 * 60
    startup = _pod(run, "tf-serving")["containers"][0]["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 10 * 60


@pytest.mark.parametrize("app", ["tf-serving", "gateway"])
def test_each_rollout_is_waited_for_by_the_placement_watch(run: StackRun, app: str) -> None:
    """pulumi-kubernetes does not wait (it would sit out its whole timeout when a pod gets
    no node); infra.rollout_wait does, for the generation just applied, from the repository
    root, with the kubeconfig kept secret."""
    annotations = _deployment(run, app)["metadata"]["annotations"]
    assert annotations["pulumi.com/skipAwait"] == "true"
    assert "pulumi.com/timeoutSeconds" not in annotations
    command, args = _rollout_wait(run, app)
    assert (args.deployment, args.generation) == (f"{NAMESPACE}/{app}", 1)
    assert command.inputs["triggers"] == [f"{app}-uid"]  # a replaced Deployment: a new wait
    assert "stdin" in command.secret_inputs
    assert json.loads(command.inputs["stdin"])["kind"] == "Config"
    assert not os.path.isabs(command.inputs["dir"])
    assert Path(command.inputs["dir"]).resolve() == ROOT
    assert command.provider == ""  # the default command provider, not the cluster's


def test_the_gateway_starts_once_tf_serving_has_rolled_out(run: StackRun) -> None:
    assert "tf-serving-rollout" in run.depends_on["gateway-deployment"]


def test_rollouts_surge_within_capacity(run: StackRun) -> None:
    """New pods start before old ones stop; the config check guarantees the surge pod fits."""
    for name in ("tf-serving", "gateway"):
        rolling = _deployment(run, name)["spec"]["strategy"]["rollingUpdate"]
        assert (rolling["maxSurge"], rolling["maxUnavailable"]) == (1, 0)


def test_prod_keeps_tf_serving_highly_available(stacks: dict[str, StackRun]) -> None:
    prod, dev = stacks["prod"], stacks["dev"]
    scaler = prod.one("kubernetes:keda.sh/v1alpha1:ScaledObject", "tf-serving").inputs["spec"]
    assert scaler["minReplicaCount"] >= 2 and "idleReplicaCount" not in scaler
    pdb = prod.one("kubernetes:policy/v1:PodDisruptionBudget", "tf-serving").inputs["spec"]
    assert pdb["maxUnavailable"] == 1  # with >= 2 replicas the last one is never evicted
    [spread] = _pod(prod, "tf-serving")["topologySpreadConstraints"]
    assert (spread["topologyKey"], spread["whenUnsatisfiable"]) == (
        "topology.kubernetes.io/zone",
        "DoNotSchedule",
    )
    assert _release(prod, "karpenter")["values"]["replicas"] == 2
    [dev_spread] = _pod(dev, "tf-serving")["topologySpreadConstraints"]
    assert dev_spread["whenUnsatisfiable"] == "ScheduleAnyway"


def test_parked_stack_runs_no_serving_pods(export_dir: Path) -> None:
    from tests.infra.conftest import with_export
    from tests.infra.harness import run_stack

    config = with_export("dev", export_dir)
    config[PREFIX + "parked"] = True
    run = run_stack("dev", config)
    for name in ("tf-serving", "gateway"):
        deployment = _deployment(run, name)
        assert deployment["spec"]["replicas"] == 0
        # The autoscaler owned spec.replicas until now: server-side apply must take it over
        # (pulumi-kubernetes forces only with this annotation), or the update conflicts.
        assert deployment["metadata"]["annotations"]["pulumi.com/patchForce"] == "true"
    assert run.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler") == []
    assert run.outputs["parked"] is True
    # The pools stay, empty: Karpenter removes their nodes.
    assert {
        p.inputs["metadata"]["name"] for p in run.of_type("kubernetes:karpenter.sh/v1:NodePool")
    } == {"cpu", "gpu"}


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
