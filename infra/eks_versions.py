"""Amazon EKS Kubernetes versions and the dates their support ends.

A version past the end of *standard* support keeps running in extended support, which
bills the control plane at $0.60/h instead of $0.10/h; past the end of *extended* support
EKS upgrades the cluster itself. So the stack check refuses a version out of support,
warns within ``WARN_DAYS`` of the end of standard support, and ``make cost`` prices the
control plane by the date.

Source: the Amazon EKS Kubernetes release calendar
(https://docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html, 1.31-1.34 as
stored in awsdocs/amazon-eks-user-guide ``versioning/kubernetes-versions.adoc``; 1.35 and
1.36 from endoflife.date's ``amazon-eks`` page, which follows that calendar), read
2026-11-25. Update the table when EKS releases a version.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

STANDARD_PRICE_PER_HOUR = 0.10
EXTENDED_PRICE_PER_HOUR = 0.60
WARN_DAYS = 60


@dataclass(frozen=True)
class EksVersion:
    released: date
    end_of_standard: date
    end_of_extended: date

    def hourly_price(self, on: date) -> float:
        return STANDARD_PRICE_PER_HOUR if on <= self.end_of_standard else EXTENDED_PRICE_PER_HOUR


VERSIONS: dict[str, EksVersion] = {
    "1.31": EksVersion(date(2024, 9, 26), date(2025, 11, 26), date(2026, 11, 26)),
    "1.32": EksVersion(date(2025, 1, 23), date(2026, 3, 23), date(2027, 3, 23)),
    "1.33": EksVersion(date(2025, 5, 29), date(2026, 7, 29), date(2027, 7, 29)),
    "1.34": EksVersion(date(2025, 10, 2), date(2026, 12, 2), date(2027, 12, 2)),
    "1.35": EksVersion(date(2026, 1, 28), date(2027, 3, 27), date(2028, 3, 27)),
    "1.36": EksVersion(date(2026, 6, 2), date(2027, 8, 2), date(2028, 8, 2)),
}


def newest_in_standard_support(on: date) -> str:
    candidates = [v for v, info in VERSIONS.items() if info.released <= on <= info.end_of_standard]
    return max(candidates, key=lambda v: tuple(int(p) for p in v.split(".")))


def support_problem(version: str, on: date) -> str | None:
    """Why ``version`` cannot be deployed on ``on`` (unknown or out of support), or None."""
    info = VERSIONS.get(version)
    if info is None:
        return f"{version!r} is not an EKS version this project knows: {', '.join(VERSIONS)}"
    if on > info.end_of_extended:
        return f"{version} left EKS extended support on {info.end_of_extended}"
    return None


def support_warning(version: str, on: date) -> str | None:
    """A warning when ``version`` is in, or within WARN_DAYS of, extended support."""
    info = VERSIONS[version]
    newest = newest_in_standard_support(on)
    if on > info.end_of_standard:
        return (
            f"Kubernetes {version} left EKS standard support on {info.end_of_standard}: the "
            f"control plane bills ${EXTENDED_PRICE_PER_HOUR:.2f}/h instead of "
            f"${STANDARD_PRICE_PER_HOUR:.2f}/h. Upgrade one minor version at a time to {newest}."
        )
    days = (info.end_of_standard - on).days
    if days <= WARN_DAYS:
        return (
            f"Kubernetes {version} leaves EKS standard support in {days} days "
            f"({info.end_of_standard}); then the control plane bills "
            f"${EXTENDED_PRICE_PER_HOUR:.2f}/h. Upgrade one minor version at a time to {newest}."
        )
    return None
