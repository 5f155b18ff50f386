"""The AWS account's side, checked before anything is declared: the deployer is not listed
as an admin again, the EC2 Spot service-linked role exists where spot is allowed, and every
EKS add-on has a version for the cluster's Kubernetes version. The mocks answer as the AWS
provider does (tests/infra/harness.py: RecordingMocks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.account import SPOT_ROLE, check_admins, principal
from infra.config import ConfigError
from tests.infra.conftest import SECRET_KEYS, fake_export, with_export
from tests.infra.harness import ACCOUNT, RecordingMocks, StackRun, run_stack

ROLE = f"arn:aws:iam::{ACCOUNT}:role/deploy/ci-deploy"
SESSION = f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-deploy/gha-42"
USER = f"arn:aws:iam::{ACCOUNT}:user/people/alice"


@pytest.mark.parametrize(
    ("arn", "expected"),
    [
        (ROLE, (ACCOUNT, "role", "ci-deploy")),
        (SESSION, (ACCOUNT, "role", "ci-deploy")),  # a session acts as its role
        (USER, (ACCOUNT, "user", "alice")),
        (f"arn:aws:iam::{ACCOUNT}:root", None),
    ],
)
def test_principals(arn: str, expected: tuple[str, str, str] | None) -> None:
    assert principal(arn) == expected


@pytest.mark.parametrize(
    ("admins", "deployer"),
    [([ROLE], SESSION), ([ROLE], ROLE), ([USER], USER)],
)
def test_the_deployer_is_not_listed_again(admins: list[str], deployer: str) -> None:
    with pytest.raises(ConfigError, match=r"adminPrincipalArns: .* is who runs pulumi up"):
        check_admins(admins, deployer)


def test_other_admins_are_fine() -> None:
    other_account = "arn:aws:iam::210987654321:role/ci-deploy"
    check_admins([f"arn:aws:iam::{ACCOUNT}:role/ops", other_account, USER], SESSION)
    check_admins([ROLE], f"arn:aws:iam::{ACCOUNT}:root")


def _run(tmp_path: Path, stack: str, mocks: RecordingMocks, **config: Any) -> StackRun:
    values = with_export(stack, fake_export(tmp_path))
    values.update({f"clothing-serving:{k}": v for k, v in config.items()})
    return run_stack(stack, values, SECRET_KEYS, mocks)


def test_a_stack_naming_its_deployer_declares_nothing(tmp_path: Path) -> None:
    mocks = RecordingMocks(caller_arn=SESSION)
    with pytest.raises(Exception, match=r"adminPrincipalArns: .*ci-deploy is who runs pulumi up"):
        _run(tmp_path, "dev", mocks, adminPrincipalArns=[ROLE])
    assert mocks.resources == []


def _spot_roles(run: StackRun) -> list[Any]:
    return [n for n in run.nodes.values() if n.typ == "aws:iam/serviceLinkedRole:ServiceLinkedRole"]


def test_the_spot_role_is_created_only_where_missing_and_kept(tmp_path: Path) -> None:
    missing = _run(tmp_path / "a", "dev", RecordingMocks(service_roles=()))
    [role] = _spot_roles(missing)
    assert role.retained  # account-wide: `pulumi destroy` leaves it
    [declared] = missing.of_type("aws:iam/serviceLinkedRole:ServiceLinkedRole")
    assert declared.inputs["awsServiceName"] == "spot.amazonaws.com"
    # Karpenter starts after it, so its first spot launch finds it
    assert role.name in missing.depends_on["nodes-pod-identity"]
    assert (
        _spot_roles(_run(tmp_path / "b", "dev", RecordingMocks(service_roles=(SPOT_ROLE,)))) == []
    )
    # prod allows on-demand only: no spot, no role, wherever it is missing
    assert _spot_roles(_run(tmp_path / "c", "prod", RecordingMocks(service_roles=()))) == []


def test_addons_get_the_version_eks_publishes(tmp_path: Path) -> None:
    run = _run(tmp_path, "dev", RecordingMocks())
    versions = {
        r.inputs["addonName"]: r.inputs["addonVersion"] for r in run.of_type("aws:eks/addon:Addon")
    }
    assert versions == {
        "metrics-server": "v0.8.0-eksbuild.3",
        "eks-pod-identity-agent": "v1.3.9-eksbuild.1",
    }


def test_a_version_without_the_addon_stops_before_anything(tmp_path: Path) -> None:
    mocks = RecordingMocks(addon_versions={"1.36": {"eks-pod-identity-agent": "v1.3.9-eksbuild.1"}})
    with pytest.raises(
        Exception, match=r"clusterVersion: EKS has no metrics-server add-on for Kubernetes 1.36"
    ):
        _run(tmp_path, "dev", mocks)
    assert mocks.resources == []
