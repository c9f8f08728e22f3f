"""One Dataverse client and party cache per tenant, kept for the life of a warm container."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from emailrouter import egress
from emailrouter.crm.auth import token_provider_from_secret
from emailrouter.crm.client import DataverseClient
from emailrouter.crm.parties import PartyResolver

if TYPE_CHECKING:
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
