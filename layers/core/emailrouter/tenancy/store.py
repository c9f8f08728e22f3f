"""Tenants, mailbox cursors and mailbox health in the tenants table.

Layout (pk / sk):
  TENANT#<id> / CONFIG            the TenantConfig as JSON
  TENANT#<id> / CURSOR#<mailbox>  the MailboxCursor as JSON (with `seen_buckets`, a count)
  TENANT#<id> / CURSOR#<mailbox>#SEEN#<xx>  a POP3 seen set's digests (tenancy/seen_set.py)
  TENANT#<id> / HEALTH#<mailbox>  the MailboxHealth as JSON
  TENANT#<id> / SENDING           the SendingIdentities as JSON (operator-set; never imported)
  TENANT#<id> / CRM_HEALTH        the CRM circuit breaker's state (crm.breaker)
Every key starts with the tenant, so no query for one tenant can return another's items.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from emailrouter import aws
from emailrouter.config import get_settings
from emailrouter.sources.base import MailboxCursor
from emailrouter.tenancy.errors import TenantNotFoundError
from emailrouter.tenancy.models import MailboxHealth, TenantConfig
from emailrouter.tenancy.seen_set import SeenSetItems, pack, unpack
from emailrouter.tenancy.sending import SendingIdentities

if TYPE_CHECKING:
    from collections.abc import Iterator


def tenant_pk(tenant_id: str) -> str:
    return f"TENANT#{tenant_id}"


# Keys a tenant's file could set before sending identities became operator-set; configurations
# stored with them still load (the values are ignored: see tenancy/sending.py).
RETIRED_OUTBOUND_KEYS = ("configuration_set", "ses_tenant_name")


def _tenant(body: str) -> TenantConfig:
    data = json.loads(body)
    outbound = data.get("outbound")
    if isinstance(outbound, dict):
        for key in RETIRED_OUTBOUND_KEYS:
            outbound.pop(key, None)
    return TenantConfig.model_validate(data)


class TenantStore:
    def __init__(self, table_name: str | None = None, client: Any | None = None) -> None:
        self._table = table_name or get_settings().tenants_table
        self._ddb = client or aws.client("dynamodb")
        self._seen = SeenSetItems(self._ddb, self._table)
        # The buckets last read or written, for one mailbox at a time (memory stays bounded in a
        # warm worker), so the saves of one poll rewrite only what changed.
        self._seen_stored: dict[tuple[str, str], dict[str, bytes]] = {}

    def _put(self, tenant_id: str, sk: str, body: str) -> None:
        self._ddb.put_item(
            TableName=self._table,
            Item={
                "pk": {"S": tenant_pk(tenant_id)},
                "sk": {"S": sk},
                "tenant_id": {"S": tenant_id},
                "body": {"S": body},
            },
        )

    def _get(self, tenant_id: str, sk: str) -> str | None:
        item = self._ddb.get_item(
            TableName=self._table,
            Key={"pk": {"S": tenant_pk(tenant_id)}, "sk": {"S": sk}},
            ConsistentRead=True,
        ).get("Item")
        return item["body"]["S"] if item else None

    def save(self, tenant: TenantConfig) -> bool:
        """Store the configuration; returns False when it was already stored unchanged."""
        body = tenant.model_dump_json()
        if self._get(tenant.tenant_id, "CONFIG") == body:
            return False
        self._put(tenant.tenant_id, "CONFIG", body)
        return True

    def get(self, tenant_id: str) -> TenantConfig:
        body = self._get(tenant_id, "CONFIG")
        if body is None:
            raise TenantNotFoundError(f"no tenant {tenant_id!r}")
        return _tenant(body)

    def all(self) -> Iterator[TenantConfig]:
        """Every tenant (a paginated scan for CONFIG items; tenants number in the hundreds)."""
        paginator = self._ddb.get_paginator("scan")
        pages = paginator.paginate(
            TableName=self._table,
            FilterExpression="sk = :sk",
            ExpressionAttributeValues={":sk": {"S": "CONFIG"}},
        )
        for page in pages:
            for item in page.get("Items", []):
                yield _tenant(item["body"]["S"])

    def get_sending(self, tenant_id: str) -> SendingIdentities:
        """The tenant's sending identities; none (so nothing may be sent) until the operator sets them."""
        body = self._get(tenant_id, "SENDING")
        return SendingIdentities.model_validate_json(body) if body else SendingIdentities()

    def save_sending(self, tenant_id: str, sending: SendingIdentities) -> None:
        self._put(tenant_id, "SENDING", sending.model_dump_json())

    def all_sending(self) -> Iterator[tuple[str, SendingIdentities]]:
        """Every tenant's sending identities (a scan; the operator CLI checks overlaps with it)."""
        paginator = self._ddb.get_paginator("scan")
        pages = paginator.paginate(
            TableName=self._table,
            FilterExpression="sk = :sk",
            ExpressionAttributeValues={":sk": {"S": "SENDING"}},
        )
        for page in pages:
            for item in page.get("Items", []):
                yield item["tenant_id"]["S"], SendingIdentities.model_validate_json(item["body"]["S"])

    def get_cursor(self, tenant_id: str, mailbox_id: str) -> MailboxCursor:
        self._seen_stored = {}  # what another worker wrote since is read afresh
        item = self._ddb.get_item(
            TableName=self._table,
            Key={"pk": {"S": tenant_pk(tenant_id)}, "sk": {"S": f"CURSOR#{mailbox_id}"}},
            ConsistentRead=True,
        ).get("Item")
        if not item:
            return MailboxCursor()
        cursor = MailboxCursor.model_validate_json(item["body"]["S"])
        if int(item.get("seen_buckets", {}).get("N", "0")):
            buckets = self._seen.read(tenant_pk(tenant_id), mailbox_id)
            self._seen_stored = {(tenant_id, mailbox_id): buckets}
            cursor = cursor.model_copy(update={"seen_digests": cursor.seen() | unpack(buckets)})
        return cursor

    def save_cursor(self, tenant_id: str, mailbox_id: str, cursor: MailboxCursor) -> None:
        """The cursor item, with a POP3 seen set (legacy `seen_uidls` included) in bucket items."""
        buckets = pack(cursor.seen())
        key = (tenant_id, mailbox_id)
        stored = self._seen_stored.get(key)
        if stored is None:
            stored = self._seen.read(tenant_pk(tenant_id), mailbox_id)
        self._seen.write(tenant_pk(tenant_id), tenant_id, mailbox_id, buckets, stored)
        self._seen_stored = {key: buckets}
        body = cursor.model_copy(update={"seen_uidls": [], "seen_digests": set()}).model_dump_json()
        self._ddb.put_item(
            TableName=self._table,
            Item={
                "pk": {"S": tenant_pk(tenant_id)},
                "sk": {"S": f"CURSOR#{mailbox_id}"},
                "tenant_id": {"S": tenant_id},
                "body": {"S": body},
                "seen_buckets": {"N": str(len(buckets))},
            },
        )

    def get_health(self, tenant_id: str, mailbox_id: str) -> MailboxHealth:
        body = self._get(tenant_id, f"HEALTH#{mailbox_id}")
        return MailboxHealth.model_validate_json(body) if body else MailboxHealth()

    def save_health(self, tenant_id: str, mailbox_id: str, health: MailboxHealth) -> None:
        self._put(tenant_id, f"HEALTH#{mailbox_id}", health.model_dump_json())


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
