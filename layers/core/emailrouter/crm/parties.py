"""Resolve email addresses to CRM records, as server-side sync does, with a per-tenant cache.

Order of preference for the sender (CRM's): systemuser, contact, account, lead, queue. A
recipient address becomes a party for every active record that carries it; an address no
record carries becomes an unresolved party holding the address in `addressused`.

Addresses are looked up up to a hundred at a time, one request per record type, with the
In query function on each email column; a request's URL is kept under a budget, so long or
non-ASCII addresses make smaller chunks. An address longer than every email column cannot match
and is answered without a request. A lookup reads at most MATCHES_PER_ADDRESS rows per address
(`$top`), never pages.

Answers (no-match answers too) are kept in the container's memory and, when a shared
`PartyCache` is given, in DynamoDB for every other container, both until the tenant's TTL ends.
Each chunk's answers are kept as soon as it is complete, so a lookup that fails part way does
not ask again for what it already learnt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emailrouter.crm.query import any_of, in_chunks, query_path

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from emailrouter.crm.client import DataverseClient
    from emailrouter.crm.party_cache import PartyCache


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
ADDRESSES_PER_QUERY = 100
MATCHES_PER_ADDRESS = 10  # rows read per address in a query ($top); more is not a person's address
EMAIL_COLUMN_MAX = 100  # every email column above holds at most 100 characters
_SENDER_RANK = {kind.logical_name: rank for rank, kind in enumerate(KINDS)}
_MEMORY_LIMIT = 20_000  # answers one resolver keeps before it drops expired and oldest ones


@dataclass(frozen=True, slots=True)
class PartyMatch:
    logical_name: str  # systemuser, contact, account, lead, queue
    entity_set: str
    record_id: str


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """What one address resolved to, and until when (epoch seconds) the answer may be used."""

    matches: tuple[PartyMatch, ...]
    expires_at: float


class PartyResolver:
    """Looks addresses up in one org; remembers answers (hits and misses) for `ttl` seconds.

    Memory first, then the shared cache for what memory lacks, then Dataverse for what is still
    missing; fresh answers go to both caches. `ttl` 0 turns caching off. `clock` returns epoch
    seconds (the shared cache's `expires_at` is epoch seconds too).
    """

    def __init__(
        self,
        crm: DataverseClient,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.time,
        *,
        tenant_id: str = "",
        shared: PartyCache | None = None,
    ) -> None:
        if shared is not None and not tenant_id:
            raise ValueError("a shared party cache needs the tenant_id its answers belong to")
        self._crm = crm
        self._ttl = ttl
        self._clock = clock
        self._tenant_id = tenant_id
        self._shared = shared
        self._memory: dict[str, CachedAnswer] = {}

    def resolve(self, addresses: Iterable[str]) -> dict[str, tuple[PartyMatch, ...]]:
        """Every address (lower-cased) with its matches in CRM's order; () when none."""
        wanted = sorted({a.strip().lower() for a in addresses if a and a.strip()})
        now = self._clock()
        result: dict[str, tuple[PartyMatch, ...]] = {}
        for address in wanted:
            cached = self._memory.get(address)
            if cached is not None and cached.expires_at > now:
                result[address] = cached.matches
        missing = [a for a in wanted if a not in result]
        if missing and self._shared is not None and self._ttl > 0:
            for address, answer in self._shared.get(self._tenant_id, self._crm.org_url, missing, now).items():
                result[address] = answer.matches
                self._memory[address] = answer
            missing = [a for a in missing if a not in result]
        if missing:
            result.update(self._lookup(missing, now))
        return result

    def invalidate(self, addresses: Iterable[str]) -> None:
        """Forget what `addresses` resolved to, here and in the shared cache (e.g. after creating a
        contact). Other warm containers keep their in-memory answer until its TTL ends."""
        wanted = sorted({a.strip().lower() for a in addresses if a and a.strip()})
        for address in wanted:
            self._memory.pop(address, None)
        if self._shared is not None and wanted:
            self._shared.delete(self._tenant_id, wanted)

    def _lookup(self, addresses: list[str], now: float) -> dict[str, tuple[PartyMatch, ...]]:
        """Dataverse's answers for `addresses`, remembered chunk by chunk as each completes."""
        answers: dict[str, tuple[PartyMatch, ...]] = {a: () for a in addresses if len(a) > EMAIL_COLUMN_MAX}
        self._remember(answers, now)
        columns = max(len(kind.email_columns) for kind in KINDS)
        short = [a for a in addresses if len(a) <= EMAIL_COLUMN_MAX]
        for chunk in in_chunks(short, columns=columns, max_values=ADDRESSES_PER_QUERY):
            found: dict[str, list[PartyMatch]] = {address: [] for address in chunk}
            for kind in KINDS:
                for row in self._crm.get(_query(kind, chunk)).get("value", []):
                    for column in kind.email_columns:
                        value = str(row.get(column) or "").lower()
                        if value in found:
                            match = PartyMatch(kind.logical_name, kind.entity_set, str(row[kind.key]))
                            if match not in found[value]:
                                found[value].append(match)
            fresh = {address: tuple(matches) for address, matches in found.items()}
            self._remember(fresh, now)
            answers.update(fresh)
        return answers

    def _remember(self, answers: Mapping[str, tuple[PartyMatch, ...]], now: float) -> None:
        if self._ttl <= 0 or not answers:
            return
        expires_at = now + self._ttl
        for address, matches in answers.items():
            self._memory[address] = CachedAnswer(matches, expires_at)
        self._prune(now)
        if self._shared is not None:
            self._shared.put(self._tenant_id, self._crm.org_url, answers, expires_at)

    def _prune(self, now: float) -> None:
        if len(self._memory) <= _MEMORY_LIMIT:
            return
        live = {a: answer for a, answer in self._memory.items() if answer.expires_at > now}
        if len(live) > _MEMORY_LIMIT:
            newest = sorted(live.items(), key=lambda item: item[1].expires_at)[-(_MEMORY_LIMIT // 2) :]
            live = dict(newest)
        self._memory = live


def choose_sender(matches: Sequence[PartyMatch], unresolve_ambiguous: bool) -> PartyMatch | None:
    """The record a sender address stands for, or None for an unresolved sender.

    The first match in CRM's order (systemuser, contact, account, lead, queue) wins. With
    `unresolve_ambiguous` (CRM's unresolveemailaddressifmultiplematch) an address that more than
    one record carries stays unresolved.

    Example:
        >>> choose_sender((contact, user), unresolve_ambiguous=False) is user
        True
        >>> choose_sender((contact, user), unresolve_ambiguous=True) is None
        True
    """
    if not matches or (unresolve_ambiguous and len(matches) > 1):
        return None
    return min(matches, key=lambda match: _SENDER_RANK.get(match.logical_name, len(KINDS)))


def _query(kind: EntityKind, addresses: list[str]) -> str:
    ors = " or ".join(any_of(column, addresses) for column in kind.email_columns)
    return query_path(
        kind.entity_set,
        select=(kind.key, *kind.email_columns),
        filter=f"({ors}) and {kind.active_filter}",
        top=MATCHES_PER_ADDRESS * len(addresses),
    )


def party_bind(match: PartyMatch) -> dict[str, str]:
    return {f"partyid_{match.logical_name}@odata.bind": f"/{match.entity_set}({match.record_id})"}
