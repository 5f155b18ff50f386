"""Run the real Pulumi program under ``pulumi.runtime.set_mocks`` and record every resource."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi

from infra.config import stack_file
from infra.project import PROJECT

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"


@dataclass
class Recorded:
    typ: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    provider: str
    secret_inputs: set[str] = field(default_factory=set)  # paths of inputs marked secret


def _vpc(args: pulumi.runtime.MockResourceArgs) -> dict[str, Any]:
    count = int(args.inputs.get("numberOfAvailabilityZones", 2))
    return {
        "vpcId": "vpc-0abc",
        "publicSubnetIds": [f"subnet-public-{i}" for i in range(count)],
        "privateSubnetIds": [f"subnet-private-{i}" for i in range(count)],
    }


def _cluster(args: pulumi.runtime.MockResourceArgs) -> dict[str, Any]:
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": args.inputs["name"], "cluster": {"server": "https://eks.example"}}],
    }
    return {
        "kubeconfig": kubeconfig,
        "kubeconfigJson": json.dumps(kubeconfig),
        "clusterSecurityGroupId": "sg-0eks",
    }


def _repository(args: pulumi.runtime.MockResourceArgs) -> dict[str, Any]:
    name = args.inputs["name"]
    return {
        "repositoryUrl": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{name}",
        "registryId": ACCOUNT,
        "arn": f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/{name}",
    }


def _image(args: pulumi.runtime.MockResourceArgs) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(args.name.encode()).hexdigest()
    return {"digest": digest, "ref": f"{args.inputs['tags'][0]}@{digest}"}


def _random_id(args: pulumi.runtime.MockResourceArgs) -> dict[str, Any]:
    """A stand-in id, different for different keepers (as a replaced RandomId would be)."""
    keepers = json.dumps(args.inputs.get("keepers", {}), sort_keys=True)
    return {
        "hex": hashlib.sha256(keepers.encode()).hexdigest()[: 2 * int(args.inputs["byteLength"])]
    }


def _service(args: pulumi.runtime.MockResourceArgs) -> dict[str, Any]:
    if args.inputs.get("spec", {}).get("type") != "LoadBalancer":
        return {}
    return {
        "status": {
            "loadBalancer": {"ingress": [{"hostname": "gw-123.elb.us-east-1.amazonaws.com"}]}
        }
    }


def _deployment(args: pulumi.runtime.MockResourceArgs) -> dict[str, Any]:
    """What the API server adds to a Deployment's metadata once applied (the rollout wait
    reads them)."""
    metadata = args.inputs["metadata"]
    return {"metadata": {**metadata, "generation": 1, "uid": f"{metadata['name']}-uid"}}


MockOutputs = Callable[[pulumi.runtime.MockResourceArgs], dict[str, Any]]


def _nothing(args: pulumi.runtime.MockResourceArgs) -> dict[str, Any]:
    return {}


MOCK_OUTPUTS: dict[str, MockOutputs] = {
    "awsx:ec2:Vpc": _vpc,
    "eks:index:Cluster": _cluster,
    "aws:ecr/repository:Repository": _repository,
    "docker-build:index:Image": _image,
    "random:index/randomId:RandomId": _random_id,
    "kubernetes:core/v1:Service": _service,
    "kubernetes:apps/v1:Deployment": _deployment,
    "aws:kms/key:Key": lambda a: {"arn": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{a.name}"},
    "aws:iam/role:Role": lambda a: {"arn": f"arn:aws:iam::{ACCOUNT}:role/{a.name}", "name": a.name},
    "aws:ec2/launchTemplate:LaunchTemplate": lambda a: {"latestVersion": 1},
    "aws:sqs/queue:Queue": lambda a: {
        "arn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{a.inputs['name']}",
        "url": f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/{a.inputs['name']}",
    },
}


# Component resources from multi-language packages: their outputs are not their inputs
# (awsx's Vpc takes a NAT *strategy* but outputs NAT gateway *resources*), so the mock
# returns only what the program reads.
OPAQUE = {"awsx:ec2:Vpc", "eks:index:Cluster"}


SECRET_SIG = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270"}


def _plain(value: Any, secrets: set[str], path: str = "") -> Any:
    """Inputs as the program declared them: numbers cross the mock monitor as protobuf
    doubles (whole ones get their int back), and secrets as wrapped values (unwrapped here,
    their paths added to ``secrets``)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        if SECRET_SIG.items() <= value.items():
            secrets.add(path)
            return _plain(value["value"], secrets, path)
        return {k: _plain(v, secrets, f"{path}.{k}".lstrip(".")) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, secrets, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


# The EC2 vCPU quotas as AWS names them, with their AWS defaults (what a new account holds
# until it asks for more: AWS's EC2 User Guide, "Spot Instance quotas", lists G and VT 0 and
# Standard 5; the Service Quotas console shows the same for on-demand) and the class their
# usage metric carries.
EC2_QUOTAS = {
    "L-DB2E81BA": ("Running On-Demand G and VT instances", 0.0, "G/OnDemand"),
    "L-3819A6DF": ("All G and VT Spot Instance Requests", 0.0, "G/Spot"),
    "L-1216C47A": (
        "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
        5.0,
        "Standard/OnDemand",
    ),
    "L-34B43A08": (
        "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
        5.0,
        "Standard/Spot",
    ),
}
# Every quota raised above what either stack may use: what the tests run with unless they
# say otherwise.
ENOUGH = {code: 1024.0 for code in EC2_QUOTAS}


def _service_quota(args: Mapping[str, Any], applied: Mapping[str, float]) -> dict[str, Any]:
    """What aws:servicequotas/getServiceQuota answers. pulumi-aws bridges the Terraform
    provider's aws_servicequotas_service_quota data source (hashicorp/terraform-provider-aws
    internal/service/servicequotas/service_quota_data_source.go at 01f43111467, the
    behaviour since its PR #22003): it reads GetAWSDefaultServiceQuota, then
    GetServiceQuota; for a quota the account never had changed, that answers
    NoSuchResourceException and the data source keeps the default: ``value`` is
    ``defaultValue``, and ``arn`` the default's ARN (no account in it, as its ``id`` always
    is). ``applied``: the quotas the account has had changed, by code."""
    code, region = args["quotaCode"], args["region"]
    if args["serviceCode"] != "ec2" or code not in EC2_QUOTAS:
        raise ValueError(
            f"getting Default Service Quota for ({args['serviceCode']}/{code}): "
            "NoSuchResourceException: The request failed because the specified quota does not "
            "exist."
        )
    name, default, usage_class = EC2_QUOTAS[code]
    default_arn = f"arn:aws:servicequotas:{region}::ec2/{code}"
    return {
        "adjustable": True,
        "arn": f"arn:aws:servicequotas:{region}:{ACCOUNT}:ec2/{code}"
        if code in applied
        else default_arn,
        "defaultValue": default,
        "globalQuota": False,
        "id": default_arn,
        "quotaCode": code,
        "quotaName": name,
        "region": region,
        "serviceCode": "ec2",
        "serviceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
        "usageMetrics": [
            {
                "metricDimensions": [
                    {"class": usage_class, "resource": "vCPU", "service": "EC2", "type": "Resource"}
                ],
                "metricName": "ResourceCount",
                "metricNamespace": "AWS/Usage",
                "metricStatisticRecommendation": "Maximum",
            }
        ],
        "value": applied.get(code, default),
    }


# EKS's default add-on versions per Kubernetes version, as `aws eks describe-addon-versions`
# lists them (the shape: aws_eks_addon_version's addon_name, kubernetes_version, version).
ADDON_VERSIONS = {
    "1.36": {"metrics-server": "v0.8.0-eksbuild.3", "eks-pod-identity-agent": "v1.3.9-eksbuild.1"},
    "1.35": {"metrics-server": "v0.8.0-eksbuild.2", "eks-pod-identity-agent": "v1.3.8-eksbuild.2"},
    "1.34": {"metrics-server": "v0.8.0-eksbuild.1", "eks-pod-identity-agent": "v1.3.8-eksbuild.1"},
}


class RecordingMocks(pulumi.runtime.Mocks):
    """Records every resource and answers the invokes the program makes as the AWS provider
    does, for an account a test may set up: who deploys, which service-linked roles exist,
    which add-on versions EKS publishes, and the EC2 quotas it has had changed (by code;
    the others hold AWS's defaults)."""

    def __init__(
        self,
        caller_arn: str = f"arn:aws:iam::{ACCOUNT}:user/ci",
        service_roles: tuple[str, ...] = ("AWSServiceRoleForEC2Spot",),
        addon_versions: dict[str, dict[str, str]] | None = None,
        quotas: Mapping[str, float] = ENOUGH,
    ) -> None:
        self.resources: list[Recorded] = []
        self.calls: list[str] = []
        self.caller_arn = caller_arn
        self.service_roles = service_roles
        self.addon_versions = ADDON_VERSIONS if addon_versions is None else addon_versions
        self.quotas = quotas
        self.quota_lookups: list[tuple[str, str]] = []  # (region, quota code)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = {} if args.typ in OPAQUE else dict(args.inputs)
        outputs.update(MOCK_OUTPUTS.get(args.typ, _nothing)(args))
        secrets: set[str] = set()
        self.resources.append(
            Recorded(
                args.typ,
                args.name,
                _plain(dict(args.inputs), secrets),
                _plain(outputs, set()),
                args.provider or "",
                secrets,
            )
        )
        return f"{args.name}-id", outputs

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        self.calls.append(args.token)
        if args.token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            token = {
                "userName": "AWS",
                "password": "mock-password",
                "authorizationToken": "bW9jaw==",
                "proxyEndpoint": f"https://{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com",
                "expiresAt": "2030-01-01T00:00:00Z",
                "id": "us-east-1",
            }
            return token, []  # no check failures
        if args.token == "aws:lb/getHostedZoneId:getHostedZoneId":
            # the hosted zone of NLBs in us-east-1 (AWS's published table)
            return {"id": "Z26RNL4JYFTOTI", "loadBalancerType": "network"}, []
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT,
                "arn": self.caller_arn,
                "userId": "AIDAEXAMPLE",
                "id": ACCOUNT,
            }, []
        if args.token == "aws:iam/getRoles:getRoles":
            # ListRoles under the path prefix: the roles there, or empty lists
            # (terraform-provider-aws internal/service/iam/roles_data_source.go sets arns
            # and names from whatever ListRoles returned, and never fails on none).
            prefix = str(args.args.get("pathPrefix", "/"))
            names = [
                n for n in self.service_roles if prefix == "/aws-service-role/spot.amazonaws.com/"
            ]
            arns = [f"arn:aws:iam::{ACCOUNT}:role{prefix}{n}" for n in names]
            return {"arns": arns, "names": names, "pathPrefix": prefix, "id": "us-east-1"}, []
        if args.token == "aws:eks/getAddonVersion:getAddonVersion":
            addon, version = args.args["addonName"], args.args["kubernetesVersion"]
            found = self.addon_versions.get(version, {}).get(addon)
            if found is None:
                # what the provider's data source answers when EKS lists no version
                # (addon_version_data_source.go: "reading EKS Add-On version info")
                reason = f"reading EKS Add-On version info ({addon}): couldn't find resource"
                return {}, [("addonName", reason)]
            return {
                "addonName": addon,
                "kubernetesVersion": version,
                "mostRecent": False,
                "version": found,
                "id": addon,
            }, []
        if args.token == "aws:servicequotas/getServiceQuota:getServiceQuota":
            self.quota_lookups.append((args.args["region"], args.args["quotaCode"]))
            return _service_quota(args.args, self.quotas), []
        raise NotImplementedError(f"unexpected invoke {args.token}")


@dataclass(frozen=True)
class _Node:
    typ: str
    name: str
    parent: int | None  # the node's key, None: the stack
    was_under: tuple[int | None, ...]  # the parents its aliases name (None: the stack)
    retained: bool  # retain_on_delete: `pulumi destroy` leaves it in the cloud


@dataclass
class StackRun:
    stack: str
    config: dict[str, Any]
    resources: list[Recorded]
    outputs: dict[str, Any] = field(default_factory=dict)
    # resource name -> the names of the resources it was declared to depend on (depends_on):
    # Pulumi creates those first and deletes them last
    depends_on: dict[str, set[str]] = field(default_factory=dict)
    # every resource and component: (type, name, parent, the parents its aliases name),
    # keyed by the object's id(), which stays unique only while the object lives:
    nodes: dict[int, _Node] = field(default_factory=dict)
    # every resource object of the run, held so that no id() is reused by another (a
    # resource the program keeps no reference to may be freed during the run)
    held: list[pulumi.Resource] = field(default_factory=list, repr=False)

    def own_urns(self) -> set[str]:
        """Every resource's URN as declared now."""

        def chain(node: _Node) -> str:
            parent = self.nodes[node.parent] if node.parent is not None else None
            return f"{chain(parent)}${node.typ}" if parent else node.typ

        return {f"{chain(n)}::{n.name}" for n in self.nodes.values()}

    def urns(self) -> set[str]:
        """Every resource's URN (``type$...$type::name``, without project and stack), and
        the URNs each answers to through its aliases and its ancestors' aliases: what
        Pulumi matches against the resources a live stack already has."""

        def chains(node: _Node) -> list[str]:
            parents = [node.parent, *node.was_under]
            return [
                f"{chain}${node.typ}" if chain else node.typ
                for parent in parents
                for chain in (chains(self.nodes[parent]) if parent is not None else [""])
            ]

        return {f"{c}::{n.name}" for n in self.nodes.values() for c in chains(n)}

    def of_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str, name: str) -> Recorded:
        [match] = [
            r for r in self.of_type(typ) if r.inputs.get("metadata", {}).get("name", r.name) == name
        ]
        return match

    def kubernetes_objects(self) -> list[Recorded]:
        """What Pulumi applies to the cluster as objects (not providers or Helm releases)."""
        return [
            r
            for r in self.resources
            if r.typ.startswith("kubernetes:")
            and not r.typ.startswith(("kubernetes:index", "kubernetes:helm.sh/"))
        ]


def stack_config(stack: str) -> dict[str, Any]:
    return stack_file(stack)


def run_stack(
    stack: str,
    config: dict[str, Any],
    secret_keys: tuple[str, ...] = (),
    mocks: RecordingMocks | None = None,
) -> StackRun:
    """Run infra.program.main() for ``stack`` with ``config`` (full keys, raw values);
    ``secret_keys`` were set with ``--secret``; ``mocks``: the AWS account it finds (by
    default, one with every quota raised enough)."""
    from infra import program

    pulumi.runtime.set_all_config(
        {
            key: value if isinstance(value, str) else json.dumps(value)
            for key, value in config.items()
        },
        list(secret_keys),
    )
    mocks = mocks or RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False)
    run = StackRun(stack, config, mocks.resources)

    def record_dependencies(
        args: pulumi.ResourceTransformationArgs,
    ) -> pulumi.ResourceTransformationResult | None:
        declared = args.opts.depends_on if args.opts else None
        names = (
            {str(dep._name) for dep in declared if isinstance(dep, pulumi.Resource)}
            if isinstance(declared, list)
            else set()
        )
        run.depends_on[args.name] = names
        parent = args.opts.parent if args.opts else None
        # Aliases of a parent (a Resource, or None: the stack) only: the SDKs add type
        # aliases of their own, which leave the parent unset (...), so it stays the same.
        aliases = (args.opts.aliases if args.opts else None) or []
        was_under = tuple(
            None if alias.parent is None else id(alias.parent)
            for alias in aliases
            if isinstance(alias, pulumi.Alias)
            and (alias.parent is None or isinstance(alias.parent, pulumi.Resource))
        )
        run.held.append(args.resource)
        run.nodes[id(args.resource)] = _Node(
            args.type_,
            args.name,
            None if parent is None else id(parent),
            was_under,
            bool(args.opts and args.opts.retain_on_delete),
        )
        return None

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def execute() -> pulumi.Output[Any]:
        pulumi.runtime.register_stack_transformation(record_dependencies)
        outputs = program.main()
        return pulumi.Output.all(**outputs).apply(run.outputs.update)

    execute()
    return run
