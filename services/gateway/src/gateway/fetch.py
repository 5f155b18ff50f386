"""Download an image from a user-supplied URL without letting the URL reach inside.

Every hop: only http/https; the host is resolved once, *every* resolved address is checked
against the access policy, and the connection goes to a checked address (so a second DNS
answer cannot rebind the name to an internal one). TLS still verifies the certificate
against the host name. Redirects are followed by hand, re-checked, and capped. The body is
read up to a byte cap whatever Content-Length says, and a watchdog closes the socket at the
total deadline, so a server that trickles bytes cannot hold a worker thread.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

import idna

from gateway.failures import Failure
from gateway.netguard import AccessPolicy, BlockedAddressError, IPAddress
from serving_contract.gateway_env import (
    CONNECT_TIMEOUT_S,
    DOWNLOAD_TIMEOUT_S,
    MAX_IMAGE_BYTES,
    MAX_REDIRECTS,
    READ_TIMEOUT_S,
    USER_AGENT,
    mib,
)

Resolver = Callable[[str, int], list[IPAddress]]
MAX_URL_LENGTH = 2048
# RFC 3986 characters a path may carry as they are (``%`` keeps existing escapes)
# A DNS label as hosts are really named: letters, digits, hyphens, and the underscores
# some real hosts use (RFC 2181 allows them; resolvers pass them through).
_LABEL = re.compile(r"[A-Za-z0-9_-]+")
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int = MAX_IMAGE_BYTES.default
    connect_timeout_s: float = CONNECT_TIMEOUT_S.default
    read_timeout_s: float = READ_TIMEOUT_S.default
    total_timeout_s: float = DOWNLOAD_TIMEOUT_S.default
    max_redirects: int = MAX_REDIRECTS.default
    user_agent: str = USER_AGENT.default


def system_resolver(host: str, port: int) -> list[IPAddress]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in seen:
            seen.append(ip)
    return seen


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _ascii_host(host: str) -> str:
    """The host as it goes to DNS, TLS and the Host header: IP literals as they are, other
    names with each non-ASCII label in IDNA (``bücher.example`` -> ``xn--bcher-kva.example``,
    UTS 46 mapping, as browsers do)."""
    host = host.removesuffix(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            raise Failure("invalid_url", "IPv6 zone identifiers are not accepted")
        return host
    try:
        if not host.isascii():
            mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
            labels = mapped.split(".")
            host = ".".join(
                label if label.isascii() else idna.alabel(label).decode() for label in labels
            )
    except (idna.IDNAError, UnicodeError) as exc:
        raise Failure("invalid_url", f"host is not a valid domain name: {exc}") from None
    labels = host.split(".")
    if len(host) > 253 or not all(0 < len(label) <= 63 for label in labels):
        raise Failure("invalid_url", "host is not a valid domain name (empty or long label)")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise Failure(
            "invalid_url", "host is not a valid domain name (letters, digits, '-' and '_' only)"
        )
    return host


def parse_url(url: str) -> _Target:
    """Validate a URL's form; raises Failure ``invalid_url`` with the reason. Non-ASCII
    characters (an IRI) are allowed: the host goes to IDNA, the path and query are
    percent-encoded as UTF-8, as a browser would send them."""
    if len(url) > MAX_URL_LENGTH:
        raise Failure("invalid_url", f"URL longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise Failure("invalid_url", "URL contains whitespace or control characters")
    if not url.isascii():
        try:
            url.encode("utf-8")  # what the path and query are percent-encoded from
        except UnicodeEncodeError:
            raise Failure("invalid_url", "URL is not valid Unicode (a lone surrogate)") from None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Failure("invalid_url", f"malformed URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Failure("invalid_url", "only http and https URLs are accepted")
    if parts.username is not None or parts.password is not None:
        raise Failure("invalid_url", "credentials in URLs are not accepted")
    if not parts.hostname:
        raise Failure("invalid_url", "URL has no host")
    if port == 0:
        raise Failure("invalid_url", "port 0 is not a valid port")
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_PATH_SAFE + "?")
    host = _ascii_host(parts.hostname)
    return _Target(scheme, host, port or (443 if scheme == "https" else 80), path)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a pre-checked IP address while verifying the certificate for the host name."""

    def __init__(
        self, ip: str, port: int, server_hostname: str, timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(ip, port, timeout=timeout, context=context)
        self._server_hostname = server_hostname

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_hostname)  # type: ignore[attr-defined]


class SafeFetcher:
    def __init__(
        self,
        policy: AccessPolicy,
        limits: FetchLimits,
        resolver: Resolver = system_resolver,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.policy = policy
        self.limits = limits
        self.resolver = resolver
        # Certificates are verified against the system CAs and the URL's host name.
        self.tls = tls or ssl.create_default_context()

    def fetch(self, url: str) -> bytes:
        """The response body of ``url`` after following allowed redirects."""
        deadline = time.monotonic() + self.limits.total_timeout_s
        target = parse_url(url)
        for _hop in range(self.limits.max_redirects + 1):
            location = self._fetch_once(target, deadline)
            if isinstance(location, bytes):
                return location
            url, target = self._redirect(url, location)
        raise Failure(
            "too_many_redirects",
            f"image URL redirected more than {self.limits.max_redirects} times",
        )

    @staticmethod
    def _redirect(base: str, location: str) -> tuple[str, _Target]:
        """Where a redirect points; a Location that is no usable URL is the host's fault."""
        try:
            url = urljoin(base, location)
            return url, parse_url(url)
        except (ValueError, Failure) as exc:
            reason = exc.message if isinstance(exc, Failure) else str(exc)
            raise Failure("download_failed", f"redirect to an invalid URL: {reason}") from None

    def _addresses(self, target: _Target) -> list[IPAddress]:
        try:
            addresses = self.resolver(target.host, target.port)
        except (OSError, UnicodeError) as exc:
            raise Failure(
                "download_failed", f"cannot resolve {target.host}", detail=str(exc)
            ) from None
        if not addresses:
            raise Failure("download_failed", f"{target.host} has no address")
        try:
            for ip in addresses:
                self.policy.check(target.host, ip)
        except BlockedAddressError as exc:
            raise Failure("url_not_allowed", exc.public, detail=str(exc)) from None
        return addresses

    def _connect(self, target: _Target, deadline: float) -> http.client.HTTPConnection:
        last_error: Exception | None = None
        for ip in self._addresses(target):
            timeout = min(self.limits.connect_timeout_s, _remaining(deadline))
            conn: http.client.HTTPConnection
            if target.scheme == "https":
                conn = _PinnedHTTPSConnection(str(ip), target.port, target.host, timeout, self.tls)
            else:
                conn = http.client.HTTPConnection(str(ip), target.port, timeout=timeout)
            try:
                conn.connect()
                return conn
            except ssl.SSLError as exc:
                conn.close()
                raise Failure(
                    "download_failed", _tls_failure(target.host, exc), detail=str(exc)
                ) from None
            except TimeoutError as exc:
                conn.close()
                last_error = exc
            except OSError as exc:
                conn.close()
                last_error = exc
        if isinstance(last_error, TimeoutError):
            raise Failure("download_timeout", f"connecting to {target.host} timed out")
        words = (
            "refused the connection"
            if isinstance(last_error, ConnectionRefusedError)
            else "could not be reached"
        )
        raise Failure("download_failed", f"{target.host} {words}", detail=str(last_error))

    def _fetch_once(self, target: _Target, deadline: float) -> bytes | str:
        """The body, or the Location to follow for a redirect."""
        conn = self._connect(target, deadline)
        watchdog = threading.Timer(_remaining(deadline), _shutdown, args=(conn,))
        watchdog.daemon = True
        watchdog.start()
        try:
            assert conn.sock is not None
            conn.sock.settimeout(min(self.limits.read_timeout_s, _remaining(deadline)))
            conn.putrequest("GET", target.path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", target.host_header)
            conn.putheader("User-Agent", self.limits.user_agent)
            conn.putheader("Accept", "image/*")
            conn.putheader("Accept-Encoding", "identity")
            conn.endheaders()
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise Failure("download_failed", "redirect without a Location")
                return location
            if not 200 <= response.status < 300:
                raise Failure("download_failed", f"image host answered HTTP {response.status}")
            return self._read_body(response, deadline)
        except (TimeoutError, OSError, http.client.HTTPException, ValueError) as exc:
            # (http.client raises ValueError for a malformed chunk size)
            if time.monotonic() >= deadline or isinstance(exc, TimeoutError):
                raise Failure(
                    "download_timeout",
                    "downloading the image took longer than the limit",
                    detail=repr(exc),
                ) from None
            raise Failure(
                "download_failed", "the image host's answer could not be read", detail=repr(exc)
            ) from None
        finally:
            watchdog.cancel()
            conn.close()

    def _read_body(self, response: http.client.HTTPResponse, deadline: float) -> bytes:
        cap = self.limits.max_bytes
        header = response.getheader("Content-Length")
        declared: int | None = None
        if header is not None and not response.chunked:
            if not _CONTENT_LENGTH.fullmatch(header.strip()):
                raise Failure("download_failed", "image host sent a malformed Content-Length")
            declared = int(header)
        if declared is not None and declared > cap:
            raise _too_large(cap)
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() >= deadline:
                raise TimeoutError("total deadline")
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > cap:
                raise _too_large(cap)
            chunks.append(chunk)
        if time.monotonic() >= deadline:
            raise TimeoutError("total deadline")  # the watchdog cut the body short
        if declared is not None and size != declared:
            raise Failure(
                "download_failed",
                "the image host sent less than its Content-Length said",
                detail=f"{size} of {declared} bytes",
            )
        return b"".join(chunks)


def _too_large(cap: int) -> Failure:
    return Failure("image_too_large", f"image larger than {mib(cap)}")


def _tls_failure(host: str, exc: ssl.SSLError) -> str:
    """The TLS failure in the gateway's words (OpenSSL's are in the log)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS error: certificate verify failed for {host}"
    return f"TLS error: the handshake with {host} failed"


def _remaining(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.001)


def _shutdown(conn: http.client.HTTPConnection) -> None:
    """Watchdog: unblock a read that the total deadline has overtaken."""
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed: nothing to unblock
            sock.shutdown(socket.SHUT_RDWR)
