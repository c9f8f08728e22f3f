"""One Dataverse client and party cache per tenant, kept for the life of a warm container.

`within(deadline)` bounds every CRM retry of an invocation, whichever tenant's client makes it:
a handler enters it with `crm.deadline.lambda_deadline(context)` so no Dataverse request or wait
of its outlives the Lambda, and leaves it so a warm container's next invocation starts clean.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emailrouter import egress
from emailrouter.crm.auth import token_provider_from_secret
from emailrouter.crm.client import DataverseClient
from emailrouter.crm.parties import PartyResolver
from emailrouter.crm.transport import vetted_session

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from emailrouter.crm.party_cache import PartyCache
    from emailrouter.tenancy.models import TenantConfig
    from emailrouter.tenancy.secrets import TenantSecrets


@dataclass
class CrmConnection:
    client: DataverseClient
    parties: PartyResolver


class CrmConnections:
    """Per-tenant connections; `party_cache` (optional) shares party answers across containers."""

    def __init__(
        self,
        secrets: TenantSecrets,
        *,
        allow_private: bool = False,
        party_cache: PartyCache | None = None,
    ) -> None:
        self._secrets = secrets
        self._allow_private = allow_private
        self._party_cache = party_cache
        self._by_tenant: dict[str, tuple[str, CrmConnection]] = {}
        self._deadline: Callable[[], float] | None = None

    @contextlib.contextmanager
    def within(self, deadline: Callable[[], float] | None) -> Iterator[None]:
        """Every client, those built meanwhile too, retries only until `deadline()` (monotonic)."""
        self._set_deadline(deadline)
        try:
            yield
        finally:
            self._set_deadline(None)

    def _set_deadline(self, deadline: Callable[[], float] | None) -> None:
        self._deadline = deadline
        for _signature, connection in self._by_tenant.values():
            connection.client.set_deadline(deadline)

    def for_tenant(self, tenant: TenantConfig) -> CrmConnection:
        """The tenant's connection; rebuilt when its CRM configuration or party cache TTL changed."""
        signature = f"{tenant.crm.model_dump_json()} ttl={tenant.parties.cache_ttl_seconds}"
        cached = self._by_tenant.get(tenant.tenant_id)
        if cached and cached[0] == signature:
            return cached[1]
        egress.check_url(tenant.crm.url, allow_private=self._allow_private)
        secret = self._secrets.get(tenant.tenant_id, tenant.crm.credential_secret)
        client = DataverseClient(
            tenant.crm.url,
            token_provider_from_secret(tenant.crm.url, secret),
            api_version=tenant.crm.api_version,
            session=vetted_session(allow_private=self._allow_private),
            deadline=self._deadline,
        )
        parties = PartyResolver(
            client,
            ttl=tenant.parties.cache_ttl_seconds,
            tenant_id=tenant.tenant_id,
            shared=self._party_cache,
        )
        connection = CrmConnection(client, parties)
        self._by_tenant[tenant.tenant_id] = (signature, connection)
        return connection
