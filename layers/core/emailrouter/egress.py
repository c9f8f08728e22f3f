"""The one place that decides whether a tenant-supplied host or URL may be contacted.

Tenants type mail server names and endpoint URLs into their configuration. Without a check, a
tenant could point the service at the instance metadata endpoint (169.254.169.254), at the VPC's
private services or at loopback, and read the answers back through error messages or mail
(server-side request forgery). Every outbound connection to a tenant-supplied address passes
through `check_host`, `check_url` or `vetted_addresses` first; only local mode (`allow_private=True`) may reach
private addresses, because there the mail servers and emulators run on loopback.

Known limit of `check_host`/`check_url`: the name is resolved here and again by the client
library when it connects, so a hostile DNS server could answer differently the second time (DNS
rebinding). `vetted_addresses` closes that window: it resolves once and returns the addresses
to connect to (the mail sources and the CRM client's `crm.transport` use it and keep the name
only for TLS).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# name → addresses; `socket.getaddrinfo` by default. Raises OSError when the name does not resolve.
Resolver = Callable[[str], list[IPAddress]]


class ForbiddenHostError(ValueError):
    """The host resolves to an address tenants may not reach (private, loopback, metadata …)."""


def check_host(host: str, *, allow_private: bool) -> None:
    """Raise ForbiddenHostError unless every address `host` resolves to is publicly routable.

    `host` may be a name or an IP literal (IPv6 with or without brackets). Resolution failures
    propagate as `socket.gaierror` (an OSError): the name may be fine and DNS briefly down.

    >>> check_host("127.0.0.1", allow_private=True)  # local mode: anything goes
    >>> check_host("127.0.0.1", allow_private=False)
    Traceback (most recent call last):
    ...
    emailrouter.egress.ForbiddenHostError: host '127.0.0.1' resolves to 127.0.0.1, a loopback address
    """
    name = _bare_host(host)
    if allow_private:
        return
    for address in _resolve(name):
        reason = forbidden_reason(address)
        if reason is not None:
            raise ForbiddenHostError(f"host {host!r} resolves to {address}, {reason}")


def vetted_addresses(host: str, *, allow_private: bool, resolver: Resolver | None = None) -> list[IPAddress]:
    """Resolve `host` once and return its addresses, refusing a host with any forbidden one.

    Connect to what this returns, never to the name again. `allow_private` (local mode) vets
    nothing but still pins. Resolution failures propagate as OSError, as in `check_host`.

    >>> vetted_addresses("mail.test", allow_private=False, resolver=lambda n: [ipaddress.ip_address("10.0.0.5")])
    Traceback (most recent call last):
    ...
    emailrouter.egress.ForbiddenHostError: host 'mail.test' resolves to 10.0.0.5, a private address
    """
    name = _bare_host(host)
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(name.split("%", 1)[0])]
    except ValueError:
        addresses = list(dict.fromkeys((resolver or _resolve)(name)))
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"{name} did not resolve to any address")
    if not allow_private:
        for address in addresses:
            reason = forbidden_reason(address)
            if reason is not None:
                raise ForbiddenHostError(f"host {host!r} resolves to {address}, {reason}")
    return addresses


def check_url(url: str, *, allow_private: bool) -> None:
    """Raise ForbiddenHostError unless `url` is https (or http in local mode) to an allowed host."""
    parts = urlsplit(url)
    allowed_schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme.lower() not in allowed_schemes:
        raise ForbiddenHostError(f"URL scheme {parts.scheme or '(none)'!r} is not allowed; use https")
    if not parts.hostname:
        raise ForbiddenHostError(f"URL {url!r} has no host")
    check_host(parts.hostname, allow_private=allow_private)


def forbidden_reason(address: IPAddress) -> str | None:
    """Why `address` may not be contacted, or None when it is an ordinary public address.

    Addresses embedded in IPv6 (IPv4-mapped ::ffff:a.b.c.d, 6to4, Teredo) are judged by the IPv4
    address they carry, since the kernel or a relay would deliver to it.
    """
    for embedded in _embedded_ipv4(address):
        reason = forbidden_reason(embedded)
        if reason is not None:
            return f"{reason} (embedded in IPv6)"
    checks = (
        ("is_unspecified", "an unspecified address"),
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_private", "a private address"),
        ("is_reserved", "a reserved address"),
    )
    for attribute, reason in checks:
        if getattr(address, attribute):
            return reason
    if not address.is_global:
        # Shared address space (100.64.0.0/10, carrier-grade NAT) and similar non-routable ranges.
        return "a non-global address"
    return None


def _bare_host(host: str) -> str:
    name = host.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if not name:
        raise ForbiddenHostError("empty host name")
    return name


def _resolve(name: str) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(name.split("%", 1)[0])]
    except ValueError:
        pass
    infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"{name} did not resolve to any address")
    return addresses


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    embedded: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        embedded.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        embedded.append(address.sixtofour)
    if address.teredo is not None:
        embedded.append(address.teredo[1])
    return embedded
