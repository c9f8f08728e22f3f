"""The egress check: tenant-supplied hosts and URLs may not reach private address space."""

from __future__ import annotations

import ipaddress

import pytest

from emailrouter.egress import ForbiddenHostError, check_host, check_url, vetted_addresses

FORBIDDEN = [
    "127.0.0.1",
    "127.1",  # short form, still loopback once resolved
    "localhost",
    "10.1.2.3",
    "172.16.5.4",
    "192.168.0.10",
    "169.254.169.254",  # the instance metadata endpoint
    "100.64.0.1",  # carrier-grade NAT shared space
    "0.0.0.0",
    "224.0.0.251",
    "::1",
    "[::1]",
    "::",
    "fe80::1",
    "fd00::5",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "[2001:4860:4860::8888]"]


@pytest.mark.parametrize("host", FORBIDDEN)
def test_private_loopback_and_metadata_addresses_are_refused(host: str) -> None:
    with pytest.raises(ForbiddenHostError):
        check_host(host, allow_private=False)


@pytest.mark.parametrize("host", FORBIDDEN)
def test_local_mode_allows_every_address(host: str) -> None:
    check_host(host, allow_private=True)


@pytest.mark.parametrize("host", PUBLIC)
def test_public_addresses_are_allowed(host: str) -> None:
    check_host(host, allow_private=False)


def test_refusal_names_the_address_and_the_reason() -> None:
    with pytest.raises(ForbiddenHostError, match=r"169\.254\.169\.254, a link-local address"):
        check_host("169.254.169.254", allow_private=False)


def test_ipv4_mapped_ipv6_is_judged_by_the_ipv4_address() -> None:
    with pytest.raises(ForbiddenHostError, match="loopback address \\(embedded in IPv6\\)"):
        check_host("::ffff:7f00:1", allow_private=False)


def test_forbidden_host_error_is_a_value_error() -> None:
    assert issubclass(ForbiddenHostError, ValueError)


def test_empty_host_is_refused_even_in_local_mode() -> None:
    with pytest.raises(ForbiddenHostError):
        check_host("  ", allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://8.8.8.8/api/data/v9.2/",
        "https://[2606:4700:4700::1111]:8443/EWS/Exchange.asmx",
    ],
)
def test_https_urls_to_public_hosts_are_allowed(url: str) -> None:
    check_url(url, allow_private=False)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://8.8.8.8/api", "scheme 'http'"),
        ("ftp://8.8.8.8/x", "scheme 'ftp'"),
        ("8.8.8.8/api", "scheme"),
        ("https:///path-only", "no host"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://user:pw@10.0.0.1/", "private"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
    ],
)
def test_urls_are_refused_outside_local_mode(url: str, reason: str) -> None:
    with pytest.raises(ForbiddenHostError, match=reason):
        check_url(url, allow_private=False)


def test_local_mode_allows_plain_http_to_loopback_but_no_other_scheme() -> None:
    check_url("http://127.0.0.1:8080/api/data/v9.2/", allow_private=True)
    with pytest.raises(ForbiddenHostError, match="ftp"):
        check_url("ftp://127.0.0.1/", allow_private=True)


def test_vetted_addresses_resolve_once_and_refuse_a_name_with_any_forbidden_answer() -> None:
    lookups: list[str] = []

    def dns(name: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        lookups.append(name)
        return [ipaddress.ip_address("93.184.215.14"), ipaddress.ip_address("10.0.0.7")]

    with pytest.raises(ForbiddenHostError, match=r"10\.0\.0\.7"):
        vetted_addresses("mail.example.com", allow_private=False, resolver=dns)
    # Local mode vets nothing but still pins what the one lookup said.
    pinned = vetted_addresses("mail.example.com", allow_private=True, resolver=dns)

    assert [str(a) for a in pinned] == ["93.184.215.14", "10.0.0.7"]
    assert lookups == ["mail.example.com", "mail.example.com"]


def test_vetted_addresses_take_an_ip_literal_as_is_without_a_lookup() -> None:
    def dns(name: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        raise AssertionError(f"looked up {name}")

    assert [str(a) for a in vetted_addresses("[2606:4700::1111]", allow_private=False, resolver=dns)] == [
        "2606:4700::1111"
    ]
    with pytest.raises(ForbiddenHostError):
        vetted_addresses("[::1]", allow_private=False, resolver=dns)
