"""One Dataverse client and party cache per tenant, kept for the life of a warm container."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from emailrouter import egress
from emailrouter.crm.auth import token_provider_from_secret
from emailrouter.crm.client import DataverseClient
from emailrouter.crm.parties import PartyResolver

if TYPE_CHECKING:
    from emailrouter.tenancy.models import TenantConfig
    from emailrouter.tenancy.secrets import TenantSecrets


@dataclass
class CrmConnection:
    client: DataverseClient
    parties: PartyResolver


class CrmConnections:
    def __init__(self, secrets: TenantSecrets, *, allow_private: bool = False) -> None:
        self._secrets = secrets
        self._allow_private = allow_private
        self._by_tenant: dict[str, tuple[str, CrmConnection]] = {}

    def for_tenant(self, tenant: TenantConfig) -> CrmConnection:
        """The tenant's connection; rebuilt when its CRM configuration changed."""
        signature = tenant.crm.model_dump_json()
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
        connection = CrmConnection(client, PartyResolver(client))
        self._by_tenant[tenant.tenant_id] = (signature, connection)
        return connection
