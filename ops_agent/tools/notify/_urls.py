"""Egress checks for user-supplied webhook URLs (SSRF): scheme, address class, DNS pinning.

A URL passes when it is https and every address its host resolves to is public, or when its host (name,
address or network) is on the allow-list, which lifts both rules (e.g. 127.0.0.1 in tests, an internal
receiver in production). The request then goes to the address that was checked, not to a second DNS
answer (rebinding): the URL's host is replaced by the address, and the Host header and TLS SNI /
certificate check keep the original name. Redirects are never followed.

Errors name the host and the address class, never the path or query (a webhook path is often its secret).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ops_agent.tools.notify._models import WebhookUrlRefused

__all__ = ["PinnedUrl", "Resolver", "check_webhook_url", "forbidden_reason", "resolve_webhook_url"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

_METADATA = {
    ipaddress.ip_address("169.254.169.254"): "cloud metadata",  # AWS, GCP, Azure IMDS, OpenStack
    ipaddress.ip_address("fd00:ec2::254"): "cloud metadata",  # AWS IMDS over IPv6
    ipaddress.ip_address("168.63.129.16"): "cloud metadata",  # Azure wire server (a public-looking address)
    ipaddress.ip_address("100.100.100.200"): "cloud metadata",  # Alibaba
}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why an address must not be called, or None for a public unicast address."""
    if ip in _METADATA:
        return _METADATA[ip]
    if isinstance(ip, ipaddress.IPv6Address):
        # Forms that embed an IPv4 address reach it on many stacks: judge the embedded address.
        if ip.ipv4_mapped is not None:
            inner = forbidden_reason(ip.ipv4_mapped)
            return f"IPv4-mapped {inner}" if inner else None
        if ip in _NAT64:
            inner = forbidden_reason(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
            return f"NAT64 {inner}" if inner else None
        if ip in _NAT64_LOCAL:
            return "local-use NAT64"
        if ip.sixtofour is not None:
            inner = forbidden_reason(ip.sixtofour)
            return f"6to4 {inner}" if inner else None
        if ip.teredo is not None:
            return "Teredo"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "carrier-grade NAT (100.64/10)"
    if ip.is_private:
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "reserved"
    return None


@dataclass(frozen=True)
class _AllowList:
    names: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def of(cls, entries: Iterable[str]) -> _AllowList:
        names, networks = set(), []
        for entry in entries:
            entry = entry.strip().lower().strip("[]")
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def host(self, host: str) -> bool:
        if host in self.names:
            return True
        ip = _literal(host)
        return ip is not None and self.address(ip)

    def address(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)


@dataclass(frozen=True)
class ParsedUrl:
    url: str
    scheme: str
    host: str  # lower case, no brackets, no trailing dot
    port: int
    allow_listed: bool


@dataclass(frozen=True)
class PinnedUrl:
    """A checked URL and the address to connect to."""

    url: str
    host: str
    port: int
    address: str

    def request_url(self) -> str:
        """The URL with its host replaced by the pinned address."""
        parts = urlsplit(self.url)
        netloc = f"[{self.address}]" if ":" in self.address else self.address
        default = {"http": 80, "https": 443}[parts.scheme]
        if self.port != default or parts.port is not None:
            netloc += f":{self.port}"
        return parts._replace(netloc=netloc).geturl()

    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.url.lower().startswith("https:") else 80
        return name if self.port == default else f"{name}:{self.port}"


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _refuse(problem: str) -> WebhookUrlRefused:
    return WebhookUrlRefused(f"url: webhook URL refused: {problem}")


def check_webhook_url(url: str, allow_hosts: Iterable[str] = ()) -> ParsedUrl:
    """Check what can be checked without DNS: syntax, scheme, and a literal address. Raises WebhookUrlRefused."""
    allow = _AllowList.of(allow_hosts)
    if not isinstance(url, str) or any(c.isspace() or ord(c) < 32 or c == "\\" for c in url):
        raise _refuse("malformed URL (whitespace, control characters or backslashes)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _refuse("malformed URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _refuse("only https URLs are allowed")
    if "@" in parts.netloc:
        raise _refuse("credentials in the URL authority are not allowed")  # and they confuse URL parsers
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise _refuse("no host")
    if not host.isascii():  # the Host header and SNI must carry the ASCII (punycode) form
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise _refuse("the host is not a valid internationalised domain name") from None
    allow_listed = allow.host(host)
    if scheme != "https" and not allow_listed:
        raise _refuse(f"only https URLs are allowed (host {host} is not allow-listed)")
    ip = _literal(host)
    if ip is not None and not allow_listed and (reason := forbidden_reason(ip)):
        raise _refuse(f"{host} is a {reason} address")
    return ParsedUrl(url, scheme, host, port or (443 if scheme == "https" else 80), allow_listed)


async def _system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


async def resolve_webhook_url(
    url: str, allow_hosts: Iterable[str] = (), resolver: Resolver | None = None
) -> PinnedUrl:
    """check_webhook_url, then resolve the host once and check every address it resolves to.

    Every address must pass, not just one: with round-robin DNS the one we did not check could be the one a
    later lookup returns. The first address is the one to connect to."""
    allow_hosts = list(allow_hosts)
    parsed = check_webhook_url(url, allow_hosts)
    allow = _AllowList.of(allow_hosts)
    literal = _literal(parsed.host)
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = await (resolver or _system_resolver)(parsed.host, parsed.port)
        except OSError:
            raise _refuse(f"host {parsed.host} does not resolve") from None
        if not addresses:
            raise _refuse(f"host {parsed.host} does not resolve")
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if parsed.allow_listed or allow.address(ip):
            continue
        if reason := forbidden_reason(ip):
            raise _refuse(f"host {parsed.host} resolves to a {reason} address ({ip})")
    return PinnedUrl(url, parsed.host, parsed.port, addresses[0].split("%", 1)[0])
