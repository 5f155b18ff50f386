"""How the gateway meets the internet on AWS: an NLB, TLS, who may connect, its DNS name.

An NLB from the Service controller EKS runs (no controller to install): with a certificate
it terminates TLS on 443 (a TLS 1.3/1.2 policy) and its port 80 leads to the proxy's
redirect server; without one, port 80 leads to the gateway. ``loadBalancerSourceRanges``
limits who may connect (the NLB keeps client addresses, so the controller writes them into
the nodes' security group). Why an NLB and not an ALB: docs/architecture.md.

The serving components know none of this: they get an ``Exposure`` for the gateway's
Service, which ``nlb_exposure`` makes here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.gateway import Exposure

LB_ANNOTATION = "service.beta.kubernetes.io/aws-load-balancer"
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"  # TLS 1.3 and 1.2 only
HTTP_PORT = 80
HTTPS_PORT = 443


@dataclass(frozen=True)
class PublicEndpoint:
    """What the stack says about the gateway's public side."""

    allowed_client_cidrs: list[str]
    certificate_arn: str | None = None
    dns_name: str | None = None
    hosted_zone_id: str | None = None

    @property
    def tls(self) -> bool:
        return self.certificate_arn is not None


def nlb_exposure(endpoint: PublicEndpoint) -> Exposure:
    """The gateway's Service as a LoadBalancer the EKS Service controller makes an NLB of."""
    annotations = {
        f"{LB_ANNOTATION}-type": "nlb",
        f"{LB_ANNOTATION}-cross-zone-load-balancing-enabled": "true",
    }
    ports = {"http": (HTTP_PORT, "http")}
    if endpoint.certificate_arn:
        annotations |= {
            f"{LB_ANNOTATION}-ssl-cert": endpoint.certificate_arn,
            f"{LB_ANNOTATION}-ssl-ports": str(HTTPS_PORT),
            f"{LB_ANNOTATION}-ssl-negotiation-policy": TLS_POLICY,
        }
        ports = {"https": (HTTPS_PORT, "http"), "http": (HTTP_PORT, "redirect")}
    return Exposure(
        service_type="LoadBalancer",
        annotations=annotations,
        ports=ports,
        source_ranges=endpoint.allowed_client_cidrs,
        tls=endpoint.tls,
    )


def dns_record(
    name: str, endpoint: PublicEndpoint, target: pulumi.Input[str], opts: pulumi.ResourceOptions
) -> aws.route53.Record | None:
    """``dnsName`` -> the load balancer, when the stack owns the hosted zone: an alias A
    record (a CNAME cannot sit at a zone's apex, and an alias costs no extra lookup)."""
    if not (endpoint.hosted_zone_id and endpoint.dns_name):
        return None
    nlb_zone = aws.lb.get_hosted_zone_id_output(load_balancer_type="network")
    return aws.route53.Record(
        name,
        zone_id=endpoint.hosted_zone_id,
        name=endpoint.dns_name,
        type="A",
        aliases=[
            aws.route53.RecordAliasArgs(
                name=target, zone_id=nlb_zone.id, evaluate_target_health=True
            )
        ],
        allow_overwrite=False,
        opts=opts,
    )


def gateway_url(endpoint: PublicEndpoint, lb_hostname: pulumi.Output[str]) -> pulumi.Output[str]:
    """``https://<dnsName>`` with TLS (the certificate's name), else the load balancer's."""
    if endpoint.tls and endpoint.dns_name:
        return pulumi.Output.from_input(f"https://{endpoint.dns_name}")
    return pulumi.Output.concat("http://", lb_hostname)
