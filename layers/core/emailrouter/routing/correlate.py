"""Correlation: which CRM thread an incoming message continues, first match wins, in Dynamics
365's order — In-Reply-To/References, the tracking token, the conversation index (Thread-Index),
smart matching — each switchable per tenant.

The ledger's thread index (ledger/threads.py) answers for everything the router tracked or sent,
read for the whole batch at once; the org's `messageid` and `trackingtoken` columns are asked only
for what the index does not know. The regarding record a ref remembers is trusted for
REFRESH_SECONDS; after that it is read again from the CRM, so a regarding a user set later is
followed (one GET for all such refs of a batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emailrouter.clock import epoch
from emailrouter.crm.emails import (
    find_by_message_ids,
    find_by_tracking_token,
    regarding_by_email_ids,
    regarding_of,
)
from emailrouter.crm.tracking_token import TrackingTokenFormat
from emailrouter.ledger.threads import (
    ThreadRef,
    conversation_key,
    find_subject_refs,
    message_id_key,
    ses_key,
    subject_prefix,
    token_key,
)
from emailrouter.mime.thread_index import ancestors
from emailrouter.outbound.ses import ses_message_id_from_header
from emailrouter.routing.smart_match import Fingerprint, fingerprint, is_forward, shares_enough

if TYPE_CHECKING:
    from emailrouter.crm.client import DataverseClient
    from emailrouter.crm.emails import Regarding
    from emailrouter.ledger.store import Ledger
    from emailrouter.mime.models import ParsedMessage
    from emailrouter.tenancy.models import TenantConfig

MAX_REFERENCES = 32
REFRESH_SECONDS = 300
IN_REPLY_TO, TRACKING_TOKEN, CONVERSATION_INDEX, SMART_MATCHING = (
    "in-reply-to",
    "tracking-token",
    "conversation-index",
    "smart-matching",
)


@dataclass(slots=True)
class Correlation:
    method: str | None = None
    regarding: Regarding | None = None
    ref: ThreadRef | None = None
    ref_key: str | None = None  # the index key the match came from
    refreshed: bool = False  # the regarding was re-read from the CRM: the ref is rewritten

    @property
    def is_response(self) -> bool:
        return self.method is not None


def reply_ids(parsed: ParsedMessage) -> list[str]:
    """In-Reply-To, then References nearest first (the last 32)."""
    ids: list[str] = []
    for candidate in [parsed.in_reply_to, *reversed(parsed.references[-MAX_REFERENCES:])]:
        if candidate and candidate not in ids:
            ids.append(candidate)
    return ids


def reply_keys(message_id: str) -> list[str]:
    """Index keys a parent's id may be under: its Message-ID, and for mail SES delivered for us,
    the SES MessageId inside it."""
    keys = [message_id_key(message_id)]
    ses_id = ses_message_id_from_header(message_id)
    if ses_id:
        keys.append(ses_key(ses_id))
    return keys


@dataclass(slots=True)
class Candidate:
    """One message of the batch, as the correlator sees it."""

    parsed: ParsedMessage
    addresses: list[str]
    fingerprint: Fingerprint | None = None
    token: str | None = None
    result: Correlation | None = None


class TenantCorrelator:
    """Correlates one tenant's messages of a batch, in order (a later message may continue a
    thread an earlier one of the same batch started)."""

    def __init__(self, tenant: TenantConfig, ledger: Ledger, crm: DataverseClient) -> None:
        self._tenant = tenant
        self._settings = tenant.correlation
        self._ledger = ledger
        self._crm = crm
        token = tenant.tracking_token
        self._token_format = (
            TrackingTokenFormat(token.prefix, token.base, token.user_digits, token.counter_digits)
            if token.enabled and self._settings.tracking_token
            else None
        )
        self._local: dict[str, ThreadRef] = {}  # index keys of messages created earlier in this batch

    def candidate(self, parsed: ParsedMessage, addresses: list[str]) -> Candidate:
        candidate = Candidate(parsed, addresses)
        if self._token_format is not None:
            candidate.token = self._token_format.find(parsed.subject)
        if self._settings.smart_matching:
            candidate.fingerprint = fingerprint(parsed.subject, addresses, self._settings, self._token_format)
        return candidate

    def _skips(self, candidate: Candidate) -> bool:
        return is_forward(candidate.parsed.subject) and not self._settings.correlate_forwards

    def index_keys(self, candidate: Candidate) -> list[str]:
        """The thread-index items this message may match (read for the whole batch at once)."""
        if self._skips(candidate):
            return []
        keys: list[str] = []
        if self._settings.in_reply_to:
            keys += [k for i in reply_ids(candidate.parsed) for k in reply_keys(i)]
        if candidate.token:
            keys.append(token_key(candidate.token))
        if self._settings.conversation_index and candidate.parsed.thread_index:
            keys += [conversation_key(a) for a in ancestors(candidate.parsed.thread_index)]
        return keys

    def correlate_all(self, candidates: list[Candidate], index: dict[str, dict[str, Any]]) -> None:
        """Set `result` on each candidate; `index` holds the items read for `index_keys`."""
        crm_rows = self._org_lookup(candidates, index)
        for candidate in candidates:
            candidate.result = self._correlate(candidate, index, crm_rows)
        self._refresh([c.result for c in candidates if c.result is not None])

    def remember(self, candidate: Candidate, keys: list[str], ref: ThreadRef) -> None:
        """A message of this batch will be created: later ones of the batch may match it."""
        for key in keys:
            self._local[key] = ref
        if candidate.fingerprint is not None:
            self._local[subject_prefix(candidate.fingerprint.subject_hash) + ref.email_id] = ref

    def _org_lookup(
        self, candidates: list[Candidate], index: dict[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """The org's emails by `messageid` for replies whose parents the index does not know —
        one GET for the whole batch."""
        if not self._settings.in_reply_to:
            return {}
        batch_ids = {c.parsed.message_id for c in candidates if c.parsed.message_id}
        wanted: list[str] = []
        for candidate in candidates:
            if self._skips(candidate):
                continue
            ids = reply_ids(candidate.parsed)
            if ids and not any(k in index for i in ids for k in reply_keys(i)) and not batch_ids & set(ids):
                wanted += [i for i in ids if i not in wanted]
        rows: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), 20):
            for row in find_by_message_ids(self._crm, wanted[start : start + 20]):
                rows.setdefault(str(row.get("messageid")), row)
        return rows

    def _lookup(self, key: str, index: dict[str, dict[str, Any]]) -> ThreadRef | None:
        if key in self._local:
            return self._local[key]
        item = index.get(key)
        return ThreadRef.from_item(item) if item is not None else None

    def _correlate(
        self, candidate: Candidate, index: dict[str, dict[str, Any]], crm_rows: dict[str, dict[str, Any]]
    ) -> Correlation:
        if self._skips(candidate):
            return Correlation()
        parsed = candidate.parsed
        if self._settings.in_reply_to:
            ids = reply_ids(parsed)
            for message_id in ids:
                for key in reply_keys(message_id):
                    ref = self._lookup(key, index)
                    if ref is not None:
                        return Correlation(IN_REPLY_TO, ref.regarding, ref, key)
            # The org's own record of mail the router never saw: the nearest with a regarding wins.
            found = [crm_rows[i] for i in ids if i in crm_rows]
            if found:
                regarding = next((r for r in map(regarding_of, found) if r is not None), None)
                return Correlation(IN_REPLY_TO, regarding)
        if candidate.token:
            key = token_key(candidate.token)
            ref = self._lookup(key, index)
            if ref is not None:
                return Correlation(TRACKING_TOKEN, ref.regarding, ref, key)
            rows = find_by_tracking_token(self._crm, candidate.token)
            if rows:
                return Correlation(TRACKING_TOKEN, regarding_of(rows[0]))
        if self._settings.conversation_index and parsed.thread_index:
            for ancestor in ancestors(parsed.thread_index):
                key = conversation_key(ancestor)
                ref = self._lookup(key, index)
                if ref is not None:
                    return Correlation(CONVERSATION_INDEX, ref.regarding, ref, key)
        if candidate.fingerprint is not None:
            match = self._smart_match(candidate.fingerprint)
            if match is not None:
                return Correlation(SMART_MATCHING, match.regarding, match)
        return Correlation()

    def _smart_match(self, incoming: Fingerprint) -> ThreadRef | None:
        prefix = subject_prefix(incoming.subject_hash)
        local = [ref for key, ref in self._local.items() if key.startswith(prefix)]
        stored = find_subject_refs(self._ledger, self._tenant.tenant_id, incoming.subject_hash)
        for ref in [*reversed(local), *reversed(stored)]:
            if shares_enough(ref.addresses, incoming, self._settings.hash_min_address_count):
                return ref
        return None

    def _refresh(self, results: list[Correlation]) -> None:
        """Re-read the regarding of refs older than REFRESH_SECONDS (one GET for the batch)."""
        stale = [r for r in results if r.ref is not None and r.ref.checked_at < epoch() - REFRESH_SECONDS]
        if not stale:
            return
        current = regarding_by_email_ids(self._crm, sorted({r.ref.email_id for r in stale if r.ref}))
        for result in stale:
            assert result.ref is not None
            result.regarding = current.get(result.ref.email_id.lower(), result.regarding)
            result.ref = ThreadRef(result.ref.email_id, result.regarding, result.ref.addresses, epoch())
            result.refreshed = True
