"""Party answers shared by every container in the party cache table.

Layout (pk / sk), all under the tenant's partition:
  TENANT#<id> / ADDR#<lower-case address>   the matches for that address, in CRM's order
An item holds `matches` (a list of {logical_name, entity_set, record_id}; empty when no record
carries the address), `org_url` (the organization the ids belong to: when a tenant moves to
another org, the old answers are ignored) and `expires_at` (epoch seconds). DynamoDB's TTL
deletes expired items late (hours, sometimes), so reads treat an item past `expires_at` as absent.

The table is a cache: when DynamoDB fails, reads count as misses and writes are skipped (with a
warning), so mail keeps flowing on Dataverse lookups alone.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from emailrouter import aws
from emailrouter.config import get_settings
from emailrouter.crm.parties import CachedAnswer, PartyMatch
from emailrouter.observability import logger

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

READ_BATCH = 100  # BatchGetItem's limit
WRITE_BATCH = 25  # BatchWriteItem's limit
MAX_ROUNDS = 5  # calls per batch while DynamoDB hands back unprocessed keys
_MAX_KEY_BYTES = 1024  # a sort key's limit


def address_key(address: str) -> str:
    return f"ADDR#{address.strip().lower()}"


class PartyCache:
    """Reads and writes party answers in batches, per tenant.

    Example:
        >>> cache = PartyCache("emailrouter-party-cache")
        >>> cache.put("contoso", org, {"carl@client.example": (carl,)}, expires_at=time.time() + 900)
        >>> cache.get("contoso", org, ["carl@client.example"], now=time.time())
        {'carl@client.example': CachedAnswer(matches=(carl,), expires_at=...)}
    """

    def __init__(
        self,
        table_name: str | None = None,
        client: Any | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._table = table_name or get_settings().party_cache_table
        if not self._table:
            raise ValueError("no party cache table: pass table_name or set PARTY_CACHE_TABLE")
        self._ddb = client or aws.client("dynamodb")
        self._sleep = sleep

    def get(
        self, tenant_id: str, org_url: str, addresses: Iterable[str], now: float
    ) -> dict[str, CachedAnswer]:
        """The live answers for `addresses` (lower-cased) in `org_url`; expired, absent and
        other organizations' answers are left out."""
        wanted = sorted({a.strip().lower() for a in addresses if _cacheable(a)})
        found: dict[str, CachedAnswer] = {}
        for start in range(0, len(wanted), READ_BATCH):
            keys = [_key(tenant_id, a) for a in wanted[start : start + READ_BATCH]]
            for item in self._batch_get(tenant_id, keys):
                address = item["sk"]["S"].removeprefix("ADDR#")
                answer = _answer(item)
                if answer.expires_at > now and item.get("org_url", {}).get("S") == org_url:
                    found[address] = answer
        return found

    def put(
        self,
        tenant_id: str,
        org_url: str,
        answers: Mapping[str, tuple[PartyMatch, ...]],
        expires_at: float,
    ) -> None:
        """Store `answers` from `org_url` (no-match answers included) until `expires_at`."""
        requests = [
            {"PutRequest": {"Item": _item(tenant_id, org_url, address, matches, expires_at)}}
            for address, matches in sorted(answers.items())
            if _cacheable(address)
        ]
        self._batch_write(tenant_id, requests)

    def delete(self, tenant_id: str, addresses: Iterable[str]) -> None:
        """Forget the answers for `addresses` (a record was created or its address changed)."""
        wanted = sorted({a.strip().lower() for a in addresses if _cacheable(a)})
        self._batch_write(tenant_id, [{"DeleteRequest": {"Key": _key(tenant_id, a)}} for a in wanted])

    def _batch_get(self, tenant_id: str, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        # Consistent: a container that just invalidated an address must not read the old answer back.
        request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True}}
        for round_ in range(MAX_ROUNDS):
            if round_:
                self._sleep(0.05 * 2**round_)
            try:
                response = self._ddb.batch_get_item(RequestItems=request)
            except (BotoCoreError, ClientError) as error:
                logger.warning("party cache read failed", tenant_id=tenant_id, error=str(error))
                return items
            items.extend(response.get("Responses", {}).get(self._table, []))
            request = response.get("UnprocessedKeys") or {}
            if not request:
                return items
        logger.warning("party cache read left keys unprocessed", tenant_id=tenant_id)
        return items

    def _batch_write(self, tenant_id: str, requests: list[dict[str, Any]]) -> None:
        for start in range(0, len(requests), WRITE_BATCH):
            pending: dict[str, Any] = {self._table: requests[start : start + WRITE_BATCH]}
            for round_ in range(MAX_ROUNDS):
                if round_:
                    self._sleep(0.05 * 2**round_)
                try:
                    response = self._ddb.batch_write_item(RequestItems=pending)
                except (BotoCoreError, ClientError) as error:
                    logger.warning("party cache write failed", tenant_id=tenant_id, error=str(error))
                    return
                pending = response.get("UnprocessedItems") or {}
                if not pending:
                    break
            else:
                logger.warning("party cache write left items unprocessed", tenant_id=tenant_id)


def _cacheable(address: str) -> bool:
    return bool(address and address.strip()) and len(address_key(address).encode()) <= _MAX_KEY_BYTES


def _key(tenant_id: str, address: str) -> dict[str, Any]:
    return {"pk": {"S": f"TENANT#{tenant_id}"}, "sk": {"S": address_key(address)}}


def _item(
    tenant_id: str, org_url: str, address: str, matches: tuple[PartyMatch, ...], expires_at: float
) -> dict[str, Any]:
    return {
        **_key(tenant_id, address),
        "tenant_id": {"S": tenant_id},
        "org_url": {"S": org_url},
        "matches": {
            "L": [
                {
                    "M": {
                        "logical_name": {"S": m.logical_name},
                        "entity_set": {"S": m.entity_set},
                        "record_id": {"S": m.record_id},
                    }
                }
                for m in matches
            ]
        },
        "expires_at": {"N": str(int(expires_at))},
    }


def _answer(item: dict[str, Any]) -> CachedAnswer:
    matches = tuple(
        PartyMatch(m["M"]["logical_name"]["S"], m["M"]["entity_set"]["S"], m["M"]["record_id"]["S"])
        for m in item.get("matches", {}).get("L", [])
    )
    expires_at = float(item.get("expires_at", {}).get("N", "0"))
    return CachedAnswer(matches, expires_at)
