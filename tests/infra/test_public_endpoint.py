"""The gateway's public side (issue: TLS, API keys, who may call): the load balancer's
listeners and source ranges, HTTPS and its DNS name, the API keys' path from secret
config to the pods, and the Kubernetes API's exposure. dev runs as Pulumi.dev.yaml says
(open, plain HTTP); prod with what a deployer adds (tests/infra/conftest.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from gateway.api_keys import KeyDigests
from infra.api_keys import key_file_text, plain_key_ids
from infra.config import ConfigError
from serving_contract.ports import GATEWAY_PORT, METRICS_PORT, REDIRECT_PORT
from tests.infra.conftest import API_KEYS, CERTIFICATE_ARN, SECRET_KEYS, with_export
from tests.infra.harness import StackRun, run_stack

LB = "service.beta.kubernetes.io/aws-load-balancer"
SECRET = "kubernetes:core/v1:Secret"


def _service(run: StackRun) -> dict[str, Any]:
    inputs: dict[str, Any] = run.one("kubernetes:core/v1:Service", "gateway").inputs
    return inputs


def _gateway_pod(run: StackRun) -> dict[str, Any]:
    deployment = run.one("kubernetes:apps/v1:Deployment", "gateway").inputs
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def _containers(run: StackRun) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in _gateway_pod(run)["containers"]}


def _env(run: StackRun) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _containers(run)["gateway"]["env"]}


def test_dev_is_plain_http_open_to_all(stacks: dict[str, StackRun]) -> None:
    run = stacks["dev"]
    service = _service(run)
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(80, "http")]
    assert service["spec"]["loadBalancerSourceRanges"] == ["0.0.0.0/0"]
    assert not any(k.startswith(f"{LB}-ssl") for k in service["metadata"]["annotations"])
    assert run.outputs["gateway_url"] == "http://gw-123.elb.us-east-1.amazonaws.com"
    assert run.outputs["api_key_ids"] == []
    assert not run.of_type(SECRET)
    assert {"API_KEYS_FILE", "HSTS_MAX_AGE_S"}.isdisjoint(_env(run))
    assert not run.of_type("aws:route53/record:Record")


def test_prod_terminates_tls_and_sends_plain_http_to_the_redirect(
    stacks: dict[str, StackRun],
) -> None:
    run = stacks["prod"]
    service = _service(run)
    annotations = service["metadata"]["annotations"]
    assert annotations[f"{LB}-type"] == "nlb"
    assert annotations[f"{LB}-ssl-cert"] == CERTIFICATE_ARN
    assert annotations[f"{LB}-ssl-ports"] == "443"
    # a policy cloud-provider-aws passes to the NLB listener as is: TLS 1.3 and 1.2 only
    assert annotations[f"{LB}-ssl-negotiation-policy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    ports = {p["port"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert ports == {443: "http", 80: "redirect"}
    proxy_ports = {p["name"]: p["containerPort"] for p in _containers(run)["proxy"]["ports"]}
    assert proxy_ports == {"http": GATEWAY_PORT, "redirect": REDIRECT_PORT, "metrics": METRICS_PORT}
    assert _env(run)["HSTS_MAX_AGE_S"] == str(365 * 24 * 3600)
    assert run.outputs["gateway_url"] == "https://classify.example.com"
    [record] = run.of_type("aws:route53/record:Record")
    assert record.inputs["name"] == "classify.example.com"
    # an alias A record: a CNAME is refused at a zone's apex
    assert record.inputs["type"] == "A" and "records" not in record.inputs
    [alias] = record.inputs["aliases"]
    assert alias["name"] == "gw-123.elb.us-east-1.amazonaws.com"
    assert alias["zoneId"] == "Z26RNL4JYFTOTI"  # NLBs' zone in us-east-1, from the lookup
    assert record.inputs["zoneId"] == "Z0123456789ABCDEFGHIJ"


def test_changed_keys_update_the_secret_in_place(stacks: dict[str, StackRun]) -> None:
    """Replacing the Secret would delete it first: a pod starting then could not mount it."""
    [provider] = stacks["prod"].of_type("pulumi:providers:kubernetes")
    assert provider.inputs["enableSecretMutable"] == "true"


def test_only_the_listeners_ports_are_open_to_the_load_balancer(
    stacks: dict[str, StackRun],
) -> None:
    """Prometheus's port is open to nobody outside the pod's namespace policy."""
    for stack, ports in (("dev", [GATEWAY_PORT]), ("prod", [GATEWAY_PORT, REDIRECT_PORT])):
        policy = stacks[stack].one(
            "kubernetes:networking.k8s.io/v1:NetworkPolicy", "gateway-from-load-balancer"
        )
        [rule] = policy.inputs["spec"]["ingress"]
        assert [p["port"] for p in rule["ports"]] == ports, stack


def test_allowed_client_cidrs_limit_the_load_balancer(stacks: dict[str, StackRun]) -> None:
    spec = _service(stacks["prod"])["spec"]
    assert spec["loadBalancerSourceRanges"] == ["198.51.100.0/24", "192.0.2.7/32"]


def test_api_keys_reach_the_pods_as_digests_only(stacks: dict[str, StackRun]) -> None:
    run = stacks["prod"]
    [secret] = run.of_type(SECRET)
    text = secret.inputs["stringData"]["keys"]
    assert secret.secret_inputs & {"stringData", "stringData.keys"}  # Pulumi keeps it encrypted
    for key in API_KEYS.values():
        assert key not in text
    digests = KeyDigests.parse(text, "the Secret")
    assert digests.ids == ("ci", "mobile-app")  # two at once: a rotation
    assert {digests.match(key) for key in API_KEYS.values()} == {"ci", "mobile-app"}
    assert run.outputs["api_key_ids"] == ["ci", "mobile-app"]

    pod = _gateway_pod(run)
    [volume] = [v for v in pod["volumes"] if v["name"] == "api-keys"]
    assert volume["secret"]["secretName"] == secret.inputs["metadata"]["name"]
    [mount] = [m for m in _containers(run)["gateway"]["volumeMounts"] if m["name"] == "api-keys"]
    assert mount["readOnly"] is True
    assert _env(run)["API_KEYS_FILE"] == f"{mount['mountPath']}/keys"
    assert "volumeMounts" not in _containers(run)["proxy"] or all(
        m["name"] != "api-keys" for m in _containers(run)["proxy"]["volumeMounts"]
    )


def test_the_kubernetes_api_is_limited_in_prod(stacks: dict[str, StackRun]) -> None:
    dev = stacks["dev"].of_type("eks:index:Cluster")[0].inputs
    assert dev["endpointPublicAccess"] is True and dev["publicAccessCidrs"] == ["0.0.0.0/0"]
    prod = stacks["prod"].of_type("eks:index:Cluster")[0].inputs
    assert prod["endpointPrivateAccess"] is True
    assert prod["publicAccessCidrs"] == ["203.0.113.0/24"]


def test_an_empty_list_makes_the_kubernetes_api_private(export_dir: Path) -> None:
    config = with_export("prod", export_dir)
    config["clothing-serving:publicAccessCidrs"] = []
    cluster = run_stack("prod", config, SECRET_KEYS).of_type("eks:index:Cluster")[0].inputs
    assert cluster["endpointPublicAccess"] is False
    assert cluster["endpointPrivateAccess"] is True
    assert "publicAccessCidrs" not in cluster


def test_tls_without_a_hosted_zone_leaves_dns_to_the_deployer(export_dir: Path) -> None:
    config = with_export("prod", export_dir)
    config["clothing-serving:tls"] = {"certificateArn": CERTIFICATE_ARN, "dnsName": "a.example.org"}
    run = run_stack("prod", config, SECRET_KEYS)
    assert not run.of_type("aws:route53/record:Record")
    assert run.outputs["gateway_url"] == "https://a.example.org"
    assert run.outputs["load_balancer_hostname"] == "gw-123.elb.us-east-1.amazonaws.com"


# --- configuration errors name the key --------------------------------------------------


def _fails(export_dir: Path, stack: str, change: dict[str, Any], secret: bool = True) -> str:
    config = with_export(stack, export_dir)
    for key, value in change.items():
        if value is None:
            config.pop(f"clothing-serving:{key}", None)
        else:
            config[f"clothing-serving:{key}"] = value
    with pytest.raises(ConfigError) as info:
        run_stack(stack, config, SECRET_KEYS if secret else ())
    return str(info.value)


def test_prod_needs_api_keys(export_dir: Path) -> None:
    message = _fails(export_dir, "prod", {"apiKeys": None})
    assert "clothing-serving:apiKeys: requireApiKeys is true but there are no keys" in message
    assert "pulumi config set --secret --path 'clothing-serving:apiKeys.<key id>'" in message


def test_prod_needs_to_say_who_reaches_the_kubernetes_api(export_dir: Path) -> None:
    message = _fails(export_dir, "prod", {"publicAccessCidrs": None})
    assert "clothing-serving:publicAccessCidrs: not set" in message
    assert "Pulumi.prod.yaml" in message


def test_api_keys_must_be_secrets(export_dir: Path) -> None:
    message = _fails(export_dir, "prod", {}, secret=False)
    assert "clothing-serving:apiKeys.ci: the key is in plain text" in message
    assert "set it again with --secret" in message
    assert not any(key in message for key in API_KEYS.values())


def test_each_key_must_be_a_secret_where_it_is_written() -> None:
    """Pulumi marks apiKeys secret when any key in it is: one key added without --secret
    is found in Pulumi.<stack>.yaml."""
    written = {"ci": {"secure": "v1:abc"}, "laptop": "plain-key-" + "x" * 30}
    assert plain_key_ids(API_KEYS, written, marked_secret=True) == ["laptop"]
    assert plain_key_ids(API_KEYS, {"ci": {"secure": "v1:a"}}, marked_secret=True) == []
    # keys from elsewhere than the stack file (an ESC environment): Pulumi's mark decides
    assert plain_key_ids(API_KEYS, None, marked_secret=True) == []
    assert plain_key_ids(API_KEYS, None, marked_secret=False) == ["ci", "mobile-app"]
    with pytest.raises(ConfigError, match=r"apiKeys\.laptop: the key is in plain text"):
        key_file_text(API_KEYS, required=True, plain=["laptop"])


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"CI": "k" * 40}, "clothing-serving:apiKeys.CI: a key id is 1-63 lowercase"),
        ({"ci": "short"}, "clothing-serving:apiKeys.ci: a key is a random string of at least 32"),
        ({"ci": " " + "k" * 40}, "A-Z a-z 0-9 . _ ~ + / = -"),
        ({"ci": "with spaces " + "k" * 40}, "(what a Bearer token may hold)"),
        ({"ci": "clé-secrète-" + "é" * 30}, "clothing-serving:apiKeys.ci: a key is"),
        ({"a": "k" * 40, "b": "k" * 40}, "clothing-serving:apiKeys.b: the same key as another id"),
        (["k" * 40], "clothing-serving:apiKeys: must map key ids to keys"),
    ],
)
def test_bad_api_keys_name_the_key_and_never_show_it(keys: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        key_file_text(keys, required=True, plain=[])
    assert message in str(info.value)
    for value in keys.values() if isinstance(keys, dict) else keys:
        if len(value) >= 8:
            assert value.strip() not in str(info.value)


def test_dev_without_keys_is_open_and_with_keys_is_not() -> None:
    assert key_file_text(None, required=False, plain=[]) is None
    text = key_file_text({"me": "m" * 32}, required=False, plain=[])
    assert text is not None and KeyDigests.parse(text, "t").match("m" * 32) == "me"


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        (
            {
                "certificateArn": "arn:aws:iam::123456789012:server-certificate/x",
                "dnsName": "a.example.com",
            },
            "tls.certificateArn: 'arn:aws:iam::123456789012:server-certificate/x' is not an ACM certificate ARN",
        ),
        (
            {
                "certificateArn": CERTIFICATE_ARN.replace("us-east-1", "eu-west-1"),
                "dnsName": "a.example.com",
            },
            "tls.certificateArn: the certificate is in eu-west-1, but the load balancer is in us-east-1",
        ),
        (
            {"certificateArn": CERTIFICATE_ARN, "dnsName": "https://a.example.com"},
            "tls.dnsName: 'https://a.example.com' is not a fully qualified DNS name",
        ),
        ({"certificateArn": CERTIFICATE_ARN}, "tls.dnsName: Field required"),
        (
            {
                "certificateArn": CERTIFICATE_ARN,
                "dnsName": "a.example.com",
                "hostedZoneId": "example.com",
            },
            "tls.hostedZoneId: 'example.com' is not a Route 53 hosted zone id",
        ),
    ],
)
def test_bad_tls_settings_name_the_key(export_dir: Path, tls: dict[str, str], message: str) -> None:
    assert f"clothing-serving:{message}" in _fails(export_dir, "prod", {"tls": copy.deepcopy(tls)})


def test_bad_client_cidrs_name_the_key(export_dir: Path) -> None:
    message = _fails(export_dir, "dev", {"allowedClientCidrs": ["10.0.0.0/33"]})
    assert "clothing-serving:allowedClientCidrs: '10.0.0.0/33' is not a CIDR block" in message
    message = _fails(export_dir, "dev", {"allowedClientCidrs": []})
    assert "clothing-serving:allowedClientCidrs: List should have at least 1 item" in message
