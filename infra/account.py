"""What the AWS account must hold, and must not be asked for, looked up before anything is
created: in ``pulumi preview`` as in ``pulumi up`` (sync invokes through the AWS provider,
so the checks run under the test mocks too).

- **The deployer is already an administrator.** pulumi-eks creates the cluster with
  ``bootstrapClusterCreatorAdminPermissions``: EKS gives whoever creates it an access entry
  of its own, and refuses a second one for the same principal, late, with the cluster
  already billing. So ``adminPrincipalArns`` may not name the deployer (``get_caller_identity``;
  a role's session is its role, which EKS's access entry names).
- **Spot needs the EC2 Spot service-linked role.** Karpenter's controller policy, like
  upstream's, cannot create it, and without it Karpenter marks spot unavailable and falls
  back to on-demand prices without a word. It is account-wide: the stack creates it only
  when it is missing (``iam.get_roles`` lists none, as ListRoles answers an empty list), and
  keeps it on ``pulumi destroy`` (another stack, or a person, may rely on it).
- **Every EKS add-on has a version for the cluster's Kubernetes version**: resolved here
  (``eks.get_addon_version``, EKS's default version for it), so a version EKS does not
  publish the add-on for stops at preview with the reason, not at create time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi_aws as aws

from infra.config import ConfigError, config_error

SPOT_SERVICE = "spot.amazonaws.com"
SPOT_ROLE = "AWSServiceRoleForEC2Spot"
# The EKS add-ons the cluster runs (infra.cluster): metrics-server for the HPAs, the pod
# identity agent for Karpenter's AWS credentials.
ADDONS = ("metrics-server", "eks-pod-identity-agent")
_SESSION = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([\w+=,.@-]+)/[^/]+$")
_IAM = re.compile(r"^arn:(aws[a-z-]*):iam::(\d{12}):(role|user)/(?:[\w+=,.@-]+/)*([\w+=,.@-]+)$")


def principal(arn: str) -> tuple[str, str, str] | None:
    """(account, "role" or "user", name) of an IAM role or user ARN, or of a role's session
    (which acts as its role); None for anything else (the account's root user)."""
    if session := _SESSION.match(arn):
        _, account, role = session.groups()
        return account, "role", role
    if iam := _IAM.match(arn):
        _, account, kind, name = iam.groups()
        return account, kind, name
    return None


def check_admins(admin_principal_arns: Sequence[str], deployer_arn: str) -> None:
    """ConfigError if ``adminPrincipalArns`` names who runs ``pulumi up``."""
    deployer = principal(deployer_arn)
    for arn in admin_principal_arns:
        if deployer is not None and principal(arn) == deployer:
            raise config_error(
                f"adminPrincipalArns: {arn} is who runs pulumi up ({deployer_arn}), and EKS "
                "already makes the cluster's creator an administrator: it would refuse a "
                "second access entry for the same principal. Remove it from the list"
            )


def spot_role_missing() -> bool:
    """Whether the account lacks the EC2 Spot service-linked role."""
    found = aws.iam.get_roles(path_prefix=f"/aws-service-role/{SPOT_SERVICE}/")
    return SPOT_ROLE not in (found.names or [])


def addon_versions(kubernetes_version: str, region: str) -> dict[str, str]:
    """EKS's default version of each add-on for ``kubernetes_version`` (ConfigError naming
    ``clusterVersion`` when EKS publishes one of them for another version only)."""
    versions = {}
    for addon in ADDONS:
        try:
            found = aws.eks.get_addon_version(
                addon_name=addon, kubernetes_version=kubernetes_version
            )
        # The SDK raises a bare Exception for a failed invoke ("invoke of ... failed: ...").
        except Exception as exc:  # noqa: BLE001
            raise _no_addon(addon, kubernetes_version, region, exc) from None
        versions[addon] = found.version
    return versions


def _no_addon(addon: str, version: str, region: str, exc: Exception) -> ConfigError:
    return config_error(
        f"clusterVersion: EKS has no {addon} add-on for Kubernetes {version} in {region} "
        f"({exc}); choose a version it has (`aws eks describe-addon-versions --addon-name "
        f"{addon} --region {region}` lists them)"
    )


@dataclass(frozen=True)
class Account:
    """What the stack found in the AWS account before declaring anything."""

    create_spot_role: bool  # spot is allowed and the account lacks its service-linked role
    addon_versions: dict[str, str]


def look_up(
    admin_principal_arns: Sequence[str], spot: bool, kubernetes_version: str, region: str
) -> Account:
    """Every check and look-up above (ConfigError naming the key on a problem)."""
    check_admins(admin_principal_arns, aws.get_caller_identity().arn)
    return Account(
        create_spot_role=spot and spot_role_missing(),
        addon_versions=addon_versions(kubernetes_version, region),
    )
