"""HTTP connections to a tenant's organization that go where `egress` vetted, and nowhere else.

`egress.check_url` vets the org URL when a tenant's connection is built, but the HTTP library
resolves the name again for every new connection: a hostile DNS server could answer with a
private address the second time (DNS rebinding). A session from :func:`vetted_session` resolves
and vets the name itself each time it opens a connection, and connects to the vetted address;
the name is kept for the Host header, SNI and the certificate check.

Example:
    >>> session = vetted_session(allow_private=False)
    >>> DataverseClient(org_url, tokens, session=session)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

from emailrouter import egress

if TYPE_CHECKING:
    from collections.abc import Callable

    from emailrouter.egress import IPAddress, Resolver


class _Vetted:
    """Mixed into urllib3's connection classes: `_new_conn` connects to a vetted address."""

    vet: Callable[[str], list[IPAddress]]
    host: str
    _dns_host: str

    def _new_conn(self) -> Any:
        addresses = type(self).vet(self.host)
        name = self._dns_host
        failure: NewConnectionError | None = None
        try:
            for address in addresses:
                # urllib3 connects to `_dns_host`; it is the name again before TLS and the Host
                # header read `host`, so SNI and the certificate check see the name.
                self._dns_host = str(address)
                try:
                    return super()._new_conn()  # type: ignore[misc]
                except NewConnectionError as error:
                    failure = error
        finally:
            self._dns_host = name
        assert failure is not None  # vetted_addresses never returns an empty list
        raise failure


class VettedAdapter(HTTPAdapter):
    """A transport adapter whose every new connection goes to an address `vet(host)` returned."""

    def __init__(self, vet: Callable[[str], list[IPAddress]]) -> None:
        connection = type("VettedHTTPConnection", (_Vetted, HTTPConnection), {"vet": staticmethod(vet)})
        tls = type("VettedHTTPSConnection", (_Vetted, HTTPSConnection), {"vet": staticmethod(vet)})
        self._pools = {
            "http": type("VettedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": connection}),
            "https": type("VettedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": tls}),
        }
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pools


def vetted_session(*, allow_private: bool, resolver: Resolver | None = None) -> requests.Session:
    """A session that connects only to addresses `egress.vetted_addresses` allows (local mode:
    any, still pinned to what was resolved). A forbidden address raises ForbiddenHostError
    before any byte is sent."""

    def vet(host: str) -> list[IPAddress]:
        return egress.vetted_addresses(host, allow_private=allow_private, resolver=resolver)

    session = requests.Session()
    adapter = VettedAdapter(vet)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
