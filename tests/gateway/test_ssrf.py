"""The downloader never reaches private, loopback, link-local or metadata addresses unless
they are explicitly allowlisted, however the address is spelled or reached."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest

from gateway.errors import ERRORS
from gateway.failures import Failure
from gateway.fetch import FetchLimits, SafeFetcher, system_resolver
from gateway.netguard import AccessPolicy, IPAddress
from tests.gateway.conftest import ClientFactory
from tests.support.image_host import FIXTURES, ImageHost

DEFAULT_POLICY = AccessPolicy()  # what production runs with: no allowlist


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost/",
        "http://2130706433/",  # decimal 127.0.0.1
        "http://0x7f000001/",  # hex
        "http://0177.0.0.1/",  # octal
        "http://127.1/",  # short form
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
        "http://[::ffff:7f00:1]/",
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 form of 169.254.169.254
        "http://[2002:a9fe:a9fe::]/",  # 6to4 form of the metadata address
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://224.0.0.1/",
        "http://[fe80::1]/",
        "http://255.255.255.255/",
    ],
)
def test_internal_addresses_are_refused(url: str) -> None:
    fetcher = SafeFetcher(DEFAULT_POLICY, FetchLimits(total_timeout_s=2))
    with pytest.raises(Failure) as info:
        fetcher.fetch(url)
    assert (ERRORS[info.value.code].status, info.value.code) == (400, "url_not_allowed"), (
        info.value.message
    )


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/a.jpg",
        "gopher://127.0.0.1:70/",
        "dict://127.0.0.1:11211/",
        "javascript:alert(1)",
        "//example.com/a.jpg",
        "http://user:pass@example.com/a.jpg",
        "http://example.com:99999/a.jpg",
        "http://example.com:0/a.jpg",
        "http:///a.jpg",
        "http://exa mple.com/a.jpg",
        "http://exampl^.com/a.jpg",  # not a host name (found by tests/fuzz)
        'http://a"b.example/a.jpg',
        "http://[fe80::1%25eth0]/a.jpg",  # an IPv6 zone: a host-local interface name
        "http://example.com/\r\nHost: evil",
        "http://example.com/" + "a" * 3000,
    ],
)
def test_malformed_or_foreign_urls_are_refused(url: str) -> None:
    fetcher = SafeFetcher(DEFAULT_POLICY, FetchLimits())
    with pytest.raises(Failure) as info:
        fetcher.fetch(url)
    assert (ERRORS[info.value.code].status, info.value.code) == (400, "invalid_url"), (
        info.value.message
    )


def _resolver(
    table: dict[str, list[str]], calls: list[str]
) -> Callable[[str, int], list[IPAddress]]:
    def resolve(host: str, port: int) -> list[IPAddress]:
        calls.append(host)
        if host in table:
            return [ipaddress.ip_address(a) for a in table[host]]
        return system_resolver(host, port)

    return resolve


def test_any_private_answer_blocks_the_host() -> None:
    # A name that resolves to a public and a private address must not be fetched at all.
    calls: list[str] = []
    fetcher = SafeFetcher(
        DEFAULT_POLICY,
        FetchLimits(),
        _resolver({"mixed.test": ["93.184.216.34", "10.0.0.7"]}, calls),
    )
    with pytest.raises(Failure) as info:
        fetcher.fetch("http://mixed.test/a.jpg")
    assert info.value.code == "url_not_allowed"
    # the address is logged, never told: the cluster's DNS is not the caller's to map
    assert "10.0.0.7" in str(info.value.detail)
    assert info.value.message == "mixed.test resolves to a non-public address"


def test_connects_to_the_checked_address_no_rebinding(image_host: ImageHost) -> None:
    """The name is resolved once per hop and the connection goes to that address:
    'images.test' does not exist in DNS, so the fetch only works if the gateway connects
    to the IP it checked, with the original Host header."""
    port = image_host.server_address[1]
    calls: list[str] = []
    fetcher = SafeFetcher(
        AccessPolicy.parse(["images.test"]),
        FetchLimits(total_timeout_s=3),
        _resolver({"images.test": ["127.0.0.1"]}, calls),
    )
    body = fetcher.fetch(f"http://images.test:{port}/images/hat.jpg")
    assert body == (FIXTURES / "hat.jpg").read_bytes()
    assert calls == ["images.test"]


def test_redirect_to_private_address_is_rechecked(image_host: ImageHost) -> None:
    # images.test is allowlisted by name; its redirect to a loopback IP is not.
    port = image_host.server_address[1]
    calls: list[str] = []
    fetcher = SafeFetcher(
        AccessPolicy.parse(["images.test"]),
        FetchLimits(total_timeout_s=3),
        _resolver({"images.test": ["127.0.0.1"]}, calls),
    )
    target = f"http://127.0.0.1:{port}/images/hat.jpg"
    with pytest.raises(Failure) as info:
        fetcher.fetch(f"http://images.test:{port}/redirect?to={target}")
    assert info.value.code == "url_not_allowed"
    for metadata in (
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
    ):
        with pytest.raises(Failure) as info:
            fetcher.fetch(f"http://images.test:{port}/redirect?to={metadata}&status=307")
        assert info.value.code == "url_not_allowed"


def test_redirect_to_non_http_scheme_is_refused(image_host: ImageHost) -> None:
    """The client's URL was fine; the host redirected somewhere unusable: a 502."""
    fetcher = SafeFetcher(AccessPolicy.parse(["127.0.0.0/8"]), FetchLimits(total_timeout_s=3))
    with pytest.raises(Failure) as info:
        fetcher.fetch(image_host.url("/redirect?to=file:///etc/passwd"))
    assert info.value.code == "download_failed"
    assert "only http and https" in info.value.message


def test_allowed_redirect_chain_within_cap(image_host: ImageHost) -> None:
    fetcher = SafeFetcher(
        AccessPolicy.parse(["127.0.0.0/8"]), FetchLimits(total_timeout_s=3, max_redirects=2)
    )
    hop2 = image_host.url("/redirect?to=/images/hat.jpg")
    assert (
        fetcher.fetch(image_host.url(f"/redirect?to={hop2}")) == (FIXTURES / "hat.jpg").read_bytes()
    )
    capped = SafeFetcher(
        AccessPolicy.parse(["127.0.0.0/8"]), FetchLimits(total_timeout_s=3, max_redirects=1)
    )
    with pytest.raises(Failure) as info:
        capped.fetch(image_host.url(f"/redirect?to={hop2}"))
    assert info.value.code == "too_many_redirects"


def test_allowlist_is_exact(image_host: ImageHost) -> None:
    # Allowing one loopback address does not open the rest of 127.0.0.0/8 or ::1.
    policy = AccessPolicy.parse(["127.0.0.2/32"])
    fetcher = SafeFetcher(policy, FetchLimits(total_timeout_s=2))
    with pytest.raises(Failure) as info:
        fetcher.fetch(image_host.url("/images/hat.jpg"))
    assert info.value.code == "url_not_allowed"


def test_gateway_default_refuses_loopback(
    make_client: ClientFactory, image_host: ImageHost
) -> None:
    client = make_client(FETCH_ALLOW="")
    hits_before = len(image_host.hits)
    response = client.post("/predict", json={"url": image_host.url("/images/hat.jpg")})
    assert response.status_code == 400
    assert response.json["error"]["code"] == "url_not_allowed"
    assert len(image_host.hits) == hits_before  # no connection was made
