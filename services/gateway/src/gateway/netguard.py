"""Which network addresses the gateway may download images from (SSRF defence).

Only globally routable unicast addresses are allowed by default. Addresses that embed an
IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) are judged by the embedded
address too, so ``::ffff:127.0.0.1`` or ``64:ff9b::a9fe:a9fe`` cannot reach loopback or the
instance metadata service. An explicit allowlist of networks or host names is the only way
to reach anything else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Ranges Python's ipaddress still calls "global" but that must never be fetched from.
_EXTRA_BLOCKED: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "100.64.0.0/10",  # carrier-grade NAT (shared address space)
        "192.0.0.0/24",  # IETF protocol assignments
        "198.18.0.0/15",  # benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, incl. broadcast
        "64:ff9b:1::/48",  # local-use NAT64
        "fc00::/7",  # unique local, incl. fd00:ec2::254 (EC2 metadata over IPv6)
        "fe80::/10",  # link-local
        "ff00::/8",  # multicast
    )
)
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")


class BlockedAddressError(Exception):
    """The address is not one the gateway may connect to. Its text names the address and
    why (for the log); ``public`` names only what the caller gave: which address a name
    has in the cluster's DNS is not theirs to learn."""

    def __init__(self, host: str, ip: IPAddress, reason: str) -> None:
        super().__init__(f"{host} resolves to {ip}, which {reason}")
        given = host == str(ip)  # an address literal in the URL
        self.public = f"{host} {reason}" if given else f"{host} resolves to a non-public address"


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address carried inside an IPv6 one, for the forms that route to it."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    packed = int(ip)
    if ip in _NAT64_WELL_KNOWN or (packed >> 32 == 0 and packed > 1):
        # NAT64 well-known prefix, or deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return None


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be fetched from, or None if it is a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            reason = blocked_reason(inner)
            return f"embeds {inner}, which {reason}" if reason else None
    if ip.is_loopback:
        return "is a loopback address"
    if ip.is_link_local:
        return "is a link-local address (cloud metadata lives here)"
    if ip.is_unspecified:
        return "is the unspecified address"
    if ip.is_multicast:
        return "is a multicast address"
    if any(ip in net for net in _EXTRA_BLOCKED if net.version == ip.version):
        return "is in a reserved or internal range"
    if ip.is_private or ip.is_reserved or not ip.is_global:
        return "is a private or reserved address"
    return None


@dataclass(frozen=True)
class AccessPolicy:
    """Default-deny for non-public addresses, with an explicit allowlist."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AccessPolicy:
        """Entries are CIDRs or bare IPs (``127.0.0.0/8``, ``::1``) or host names."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = entry.lower().rstrip(".")
            if not name or not all(label.replace("-", "").isalnum() for label in name.split(".")):
                raise ValueError(f"{entry!r} is neither a network (CIDR) nor a host name")
            hosts.add(name)
        return cls(tuple(networks), frozenset(hosts))

    def check(self, host: str, ip: IPAddress) -> None:
        """Raise BlockedAddressError unless ``host`` resolving to ``ip`` may be fetched."""
        reason = blocked_reason(ip)
        if reason is None:
            return
        if host.lower().rstrip(".") in self.allowed_hosts:
            return
        if any(ip.version == net.version and ip in net for net in self.allowed_networks):
            return
        raise BlockedAddressError(host, ip, reason)
