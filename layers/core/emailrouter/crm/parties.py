"""Resolve email addresses to CRM records, as server-side sync does, with a per-tenant cache.

Order of preference for the sender (CRM's): systemuser, contact, account, lead, queue. A
recipient address becomes a party for every active record that carries it; an address no
record carries becomes an unresolved party holding the address in `addressused`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emailrouter.crm.client import odata_literal

if TYPE_CHECKING:
    from collections.abc import Iterable

    from emailrouter.crm.client import DataverseClient


@dataclass(frozen=True, slots=True)
class EntityKind:
    entity_set: str
    logical_name: str
    key: str
    email_columns: tuple[str, ...]
    active_filter: str


KINDS: tuple[EntityKind, ...] = (
    EntityKind("systemusers", "systemuser", "systemuserid", ("internalemailaddress",), "isdisabled eq false"),
    EntityKind(
        "contacts",
        "contact",
        "contactid",
        ("emailaddress1", "emailaddress2", "emailaddress3"),
        "statecode eq 0",
    ),
    EntityKind(
        "accounts",
        "account",
        "accountid",
        ("emailaddress1", "emailaddress2", "emailaddress3"),
        "statecode eq 0",
    ),
    EntityKind(
        "leads", "lead", "leadid", ("emailaddress1", "emailaddress2", "emailaddress3"), "statecode eq 0"
    ),
    EntityKind("queues", "queue", "queueid", ("emailaddress",), "statecode eq 0"),
)
_CHUNK = 10


@dataclass(frozen=True, slots=True)
class PartyMatch:
    logical_name: str  # systemuser, contact, account, lead, queue
    entity_set: str
    record_id: str


class PartyResolver:
    """Looks addresses up in one org; remembers answers (hits and misses) for `ttl` seconds."""

    def __init__(self, crm: DataverseClient, ttl: float = 300.0, clock: Any = time.monotonic) -> None:
        self._crm = crm
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, tuple[PartyMatch, ...]]] = {}

    def resolve(self, addresses: Iterable[str]) -> dict[str, tuple[PartyMatch, ...]]:
        wanted = sorted({a.lower() for a in addresses if a})
        now = self._clock()
        result: dict[str, tuple[PartyMatch, ...]] = {}
        missing: list[str] = []
        for address in wanted:
            cached = self._cache.get(address)
            if cached and cached[0] > now:
                result[address] = cached[1]
            else:
                missing.append(address)
        found: dict[str, list[PartyMatch]] = {address: [] for address in missing}
        for start in range(0, len(missing), _CHUNK):
            chunk = missing[start : start + _CHUNK]
            for kind in KINDS:
                for row in self._crm.get_all(_query(kind, chunk)):
                    for column in kind.email_columns:
                        value = str(row.get(column) or "").lower()
                        if value in found:
                            match = PartyMatch(kind.logical_name, kind.entity_set, str(row[kind.key]))
                            if match not in found[value]:
                                found[value].append(match)
        for address, matches in found.items():
            result[address] = tuple(matches)
            self._cache[address] = (now + self._ttl, tuple(matches))
        return result


def _query(kind: EntityKind, addresses: list[str]) -> str:
    ors = " or ".join(f"{column} eq {odata_literal(a)}" for a in addresses for column in kind.email_columns)
    select = ",".join((kind.key, *kind.email_columns))
    return f"{kind.entity_set}?$select={select}&$filter=({ors}) and {kind.active_filter}"


def party_bind(match: PartyMatch) -> dict[str, str]:
    return {f"partyid_{match.logical_name}@odata.bind": f"/{match.entity_set}({match.record_id})"}
