"""deliver_inbound's work for a batch of queued messages: parse → claim → filter → correlate →
resolve → CRM write → outcome in the ledger. Acknowledging at the source happens per batch
(acknowledge.py).

The batch is handled together, because per-message round trips dominate the worker's cost: one
ledger transaction claims every message, one read fetches what correlation and loop protection
need, party resolution runs once per tenant, the new emails of a tenant go to the CRM in one
`$batch`, and one transaction records every outcome with its thread-index entries.

Exactly once: the claim stops concurrent work on the same message; the email's activityid is
derived from the message, so a retry after a crash at any step re-creates nothing (Dataverse
answers 412 for the existing id and it is adopted).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emailrouter.crm.contacts import create_contact
from emailrouter.crm.emails import (
    create_incoming_emails,
    email_id_for,
    incoming_email_body,
)
from emailrouter.crm.errors import CrmError, CrmTransientError
from emailrouter.crm.parties import choose_sender
from emailrouter.ledger.models import Outcome
from emailrouter.ledger.store import ClaimBusyError
from emailrouter.ledger.threads import ThreadRef, conversation_key, message_id_key, ref_ops, subject_prefix
from emailrouter.mime.bounces import is_mailer_daemon
from emailrouter.mime.errors import MalformedMessageError
from emailrouter.mime.parse import parse_message
from emailrouter.observability import logger
from emailrouter.queues.sender import raw_bytes
from emailrouter.routing.attachments import drop_blocked_attachments
from emailrouter.routing.correlate import Candidate, TenantCorrelator
from emailrouter.routing.crossmailbox import add_mailbox_party
from emailrouter.routing.faults import NO_FAULTS, FaultPoints
from emailrouter.routing.filters import auto_generated_reason, received_after_reason, tracking_reason
from emailrouter.routing.keys import message_key, raw_key, reused_id_key
from emailrouter.routing.loops import loop_counter
from emailrouter.routing.outcomes import DeliveryResult, TenantDisabledError, is_retryable, quarantine_reason
from emailrouter.routing.reports import apply_report, is_report

if TYPE_CHECKING:
    from collections.abc import Callable

    from emailrouter.crm.client import DataverseClient
    from emailrouter.crm.connections import CrmConnection, CrmConnections
    from emailrouter.crm.parties import PartyMatch
    from emailrouter.ledger.models import InboundRecord
    from emailrouter.ledger.store import Ledger
    from emailrouter.mime.models import ParsedMessage
    from emailrouter.queues.messages import InboundMessage
    from emailrouter.queues.rawstore import RawMailStore
    from emailrouter.tenancy.models import MailboxConfig, TenantConfig
    from emailrouter.tenancy.store import TenantStore

CLAIM_TTL_SECONDS = 120
HEADER_BLOCK_LIMIT = 256 * 1024  # what is read of a message over the limit, to name it
WRITE_ROUNDS = 6  # $batch rounds for throttled parts; the client's deadline bounds them in time


@dataclass
class TenantCache:
    """Tenant configuration, re-read at most every `ttl` seconds in a warm container."""

    store: TenantStore
    ttl: float = 30.0
    _items: dict[str, tuple[float, TenantConfig]] = field(default_factory=dict)

    def get(self, tenant_id: str) -> TenantConfig:
        cached = self._items.get(tenant_id)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        tenant = self.store.get(tenant_id)
        self._items[tenant_id] = (time.monotonic() + self.ttl, tenant)
        return tenant


@dataclass(eq=False)
class Work:
    """One queued message on its way to an outcome."""

    message: InboundMessage
    owner: str
    tenant: TenantConfig = field(init=False)
    mailbox: MailboxConfig = field(init=False)
    raw: bytes = b""
    parsed: ParsedMessage | None = None
    problem: str | None = None
    oversized: int = 0  # the size of a message over the tenant's limit; `raw` then holds its head only
    key: str = ""
    twin_of: Work | None = None  # the same message earlier in this batch (another mailbox)
    reused_id: bool = False  # its Message-ID belongs to an earlier message with other content
    claimed: bool = False
    result: DeliveryResult | None = None
    error: BaseException | None = None  # the message goes back to its queue
    auto_reason: str | None = None  # auto-generated, tracked because the tenant says so
    candidate: Candidate | None = None
    counter: tuple[str, int] | None = None  # loop-protection counter (sk, expiry)
    body: dict[str, Any] | None = None
    party_addresses: list[str] = field(default_factory=list)
    raw_s3_key: str | None = None
    ledger_ops: list[dict[str, Any]] = field(default_factory=list)
    quarantined_here: bool = False  # a redelivery of the arrival that was quarantined

    @property
    def keep_at_source(self) -> bool:
        """A quarantined arrival stays in its mailbox until it is replayed or discarded."""
        quarantined = self.result is not None and self.result.outcome is Outcome.QUARANTINED
        return quarantined or self.quarantined_here

    @property
    def open(self) -> bool:
        """Still on its way: no outcome and no error yet."""
        return self.result is None and self.error is None

    def finish(
        self, outcome: Outcome, reason: str = "", email_id: str | None = None, method: str | None = None
    ) -> None:
        self.result = DeliveryResult(self.tenant.tenant_id, self.key, outcome, reason, email_id, method)


class InboundDelivery:
    def __init__(
        self,
        tenants: TenantCache,
        ledger: Ledger,
        raw_store: RawMailStore,
        crm: CrmConnections,
        faults: FaultPoints = NO_FAULTS,
    ) -> None:
        self._tenants = tenants
        self._ledger = ledger
        self._raw = raw_store
        self._crm = crm
        self._faults = faults

    def deliver(self, message: InboundMessage, owner: str) -> DeliveryResult:
        """Process one message to its outcome. Raises when it must go back to the queue."""
        outcome = self.deliver_batch([(message, owner)])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def deliver_batch(
        self, items: list[tuple[InboundMessage, str]], deadline: Callable[[], float] | None = None
    ) -> list[DeliveryResult | BaseException]:
        """Each (message, owner) to its outcome, or to the exception that sends it back to its queue.
        `deadline()` is the monotonic time by which CRM retries must be over (the Lambda's)."""
        works = [Work(message, owner) for message, owner in items]
        return _Run(self, works, deadline).run()


class _Run:
    """One batch's way through the steps; holds what the steps share."""

    def __init__(
        self, delivery: InboundDelivery, works: list[Work], deadline: Callable[[], float] | None
    ) -> None:
        self._tenants = delivery._tenants
        self._ledger = delivery._ledger
        self._raw = delivery._raw
        self._crm = delivery._crm
        self._faults = delivery._faults
        self._works = works
        self._deadline = deadline
        self._correlators: dict[str, TenantCorrelator] = {}
        self._deadlined: list[DataverseClient] = []

    def run(self) -> list[DeliveryResult | BaseException]:
        try:
            return self._steps()
        finally:
            for client in self._deadlined:
                client.set_deadline(None)  # the client is shared: the next invocation sets its own

    def _steps(self) -> list[DeliveryResult | BaseException]:
        works = self._works
        for work in works:
            self._prepare(work)
        self._claim(works)
        self._faults.reach("after_claim")
        claimed = [w for w in works if w.open and w.claimed]
        for work in claimed:
            self._screen(work)
        by_tenant: dict[str, list[Work]] = {}
        for work in claimed:
            if work.open:
                by_tenant.setdefault(work.tenant.tenant_id, []).append(work)
        index = self._read_index(by_tenant)
        for tenant_works in by_tenant.values():
            self._route_tenant(tenant_works, index)
        self._faults.reach("after_crm_write")
        self._faults.reach("before_ledger_commit")
        self._commit(works)
        return [w.result if w.result is not None else w.error or RuntimeError("no outcome") for w in works]

    # ---- steps -------------------------------------------------------------------------------
    def _prepare(self, work: Work) -> None:
        try:
            work.tenant = self._tenants.get(work.message.tenant_id)
            work.mailbox = work.tenant.mailbox(work.message.mailbox_id)
            if not work.tenant.enabled:
                raise TenantDisabledError(f"tenant {work.tenant.tenant_id} is disabled")
            work.raw = self._read_raw(work)
        except Exception as error:
            work.error = error
            return
        tenant = work.tenant
        size = work.oversized or len(work.raw)
        if size > tenant.max_message_bytes:
            work.oversized = size
            work.problem = (
                f"message of {size} bytes exceeds the tenant's maximum of {tenant.max_message_bytes}"
            )
            # Only its header block is read: enough to name it (Message-ID, subject) in the ledger.
            with contextlib.suppress(MalformedMessageError):
                work.parsed = parse_message(_header_block(work.raw))
        else:
            try:
                work.parsed = parse_message(work.raw, max_attachment_bytes=tenant.max_attachment_bytes)
                if work.parsed.over_limit:
                    work.problem = work.parsed.over_limit
            except MalformedMessageError as error:
                work.problem = f"not parseable as mail: {error}"
        if work.parsed is not None:
            work.key = message_key(work.parsed)
        elif work.message.raw_s3_key:
            work.key = "raw-" + self._raw.digest_of(work.message.raw_s3_key)[:36]  # raw_key of the whole
        else:
            work.key = raw_key(work.raw)
        if work.message.raw_s3_key and work.problem is None:
            # Large mail came through S3: its bytes are not held while the email is built
            # (a quarantine reads them again).
            work.raw = b""

    def _read_raw(self, work: Work) -> bytes:
        """The message's bytes; from S3, only its head when the object's size is over the limit,
        so a huge object costs the worker one HEAD and one ranged GET."""
        key = work.message.raw_s3_key
        if key is None:
            return raw_bytes(work.message, self._raw)
        size = self._raw.size(work.tenant.tenant_id, key)
        if size <= work.tenant.max_message_bytes:
            return raw_bytes(work.message, self._raw)
        work.oversized = size
        return self._raw.get_head(work.tenant.tenant_id, key, HEADER_BLOCK_LIMIT)

    def _claim(self, works: list[Work]) -> None:
        """Claim every message once. A Message-ID the ledger (or this batch) knows with other
        content is a different message: it is claimed under `reused_id_key` as one of its own."""
        first: dict[tuple[str, str], Work] = {}
        to_claim: list[Work] = []
        other_content: list[Work] = []  # the same Message-ID as an earlier work, other content
        for work in works:
            if work.error is not None:
                continue
            leader = first.setdefault((work.tenant.tenant_id, work.key), work)
            if leader is work:
                to_claim.append(work)
            elif _digest(leader) == _digest(work):
                work.twin_of = leader
            else:
                other_content.append(work)
        finished = self._claim_keys(to_claim)
        reused = [w for w in to_claim if w in finished and _differs(finished[w], w)]
        for work in to_claim:
            if work in finished and work not in reused:
                self._duplicate(work, finished[work])
        for work in other_content:
            leader = first[(work.tenant.tenant_id, work.key)]
            known = finished.get(leader)
            if leader.error is not None:
                work.error = leader.error
            elif known is not None and not _differs(known, work):
                self._duplicate(work, known)
            else:
                reused.append(work)
        variants: dict[tuple[str, str], Work] = {}
        for work in reused:
            assert work.parsed is not None
            work.key, work.reused_id = reused_id_key(work.parsed), True
            leader = variants.setdefault((work.tenant.tenant_id, work.key), work)
            if leader is not work:
                work.twin_of = leader
        finished = self._claim_keys(list(variants.values()))
        for work, record in finished.items():
            self._duplicate(work, record)

    def _claim_keys(self, to_claim: list[Work]) -> dict[Work, InboundRecord]:
        """Claim each work's key; returns the finished record of each work whose key has one."""
        if not to_claim:
            return {}
        claims = [(w.tenant.tenant_id, w.key, w.owner, self._claim_attrs(w)) for w in to_claim]
        try:
            answers = self._ledger.claim_many(claims, CLAIM_TTL_SECONDS)
        except Exception as error:
            for work in to_claim:
                work.error = error
            return {}
        finished: dict[Work, InboundRecord] = {}
        for work, answer in zip(to_claim, answers, strict=True):
            if isinstance(answer, ClaimBusyError):
                work.error = answer
            elif answer is not None:
                finished[work] = answer
            else:
                work.claimed = True
        return finished

    @staticmethod
    def _claim_attrs(work: Work) -> dict[str, Any]:
        parsed = work.parsed
        return {
            "mailbox_id": work.mailbox.mailbox_id,
            "source_ref": work.message.source_ref,
            "message_id": parsed.message_id if parsed else None,
            "content_digest": parsed.content_digest if parsed and parsed.content_digest else None,
            "subject": parsed.subject[:200] if parsed else "",
        }

    def _duplicate(self, work: Work, finished: InboundRecord) -> None:
        """The message already has an outcome: reached another mailbox, or a redelivery."""
        work.finish(Outcome.DUPLICATE, f"already {finished.outcome}", finished.crm_email_id)
        work.quarantined_here = (
            finished.outcome is Outcome.QUARANTINED
            and not finished.discarded_at
            and finished.mailbox_id == work.mailbox.mailbox_id
            and finished.source_ref == work.message.source_ref
        )
        if (
            finished.crm_email_id
            and finished.party_addresses
            and work.mailbox.address not in finished.party_addresses
        ):
            try:
                connection = self._crm.for_tenant(work.tenant)
                add_mailbox_party(connection, self._ledger, work.tenant, finished, work.mailbox.address)
            except Exception as error:
                if is_retryable(error):
                    work.result, work.error = None, error

    def _screen(self, work: Work) -> None:
        """What is decided without the CRM: quarantine, reports, auto-generated mail, date, loops."""
        parsed, tenant, mailbox = work.parsed, work.tenant, work.mailbox
        if parsed is None or work.problem is not None:
            self._quarantine(work, work.problem or "unparseable")
            return
        if is_report(parsed):
            try:
                reason = apply_report(parsed, tenant, self._ledger, self._crm)
            except Exception as error:
                self._fail(work, error)
                return
            work.finish(Outcome.FILTERED, reason)
            return
        auto = auto_generated_reason(parsed, tenant.auto_generated)
        if auto is not None and not tenant.auto_generated.track:
            work.finish(Outcome.FILTERED, auto)
            return
        work.auto_reason = auto
        late = received_after_reason(parsed, mailbox, work.message.fetched_at)
        if late is not None:
            work.finish(Outcome.FILTERED, late)
            return
        work.counter = loop_counter(tenant, mailbox, parsed.sender.email if parsed.sender else "")

    def _read_index(self, by_tenant: dict[str, list[Work]]) -> dict[tuple[str, str], dict[str, Any]]:
        """One read for the batch: thread-index entries and loop counters."""
        keys: list[tuple[str, str]] = []
        for tenant_id, works in by_tenant.items():
            for work in works:
                if work.counter is not None:
                    keys.append((tenant_id, work.counter[0]))
        for tenant_id, works in by_tenant.items():
            tenant = works[0].tenant
            try:
                connection = self._crm.for_tenant(tenant)
            except Exception as error:
                for work in works:
                    self._fail(work, error)
                continue
            correlator = TenantCorrelator(tenant, self._ledger, connection.client)
            self._correlators[tenant_id] = correlator
            for work in works:
                assert work.parsed is not None
                work.candidate = correlator.candidate(work.parsed, _addresses(work.parsed))
                keys += [(tenant_id, k) for k in correlator.index_keys(work.candidate)]
        if not keys:
            return {}
        try:
            return self._ledger.get_many(keys)
        except Exception as error:
            for works in by_tenant.values():
                for work in works:
                    if work.open:
                        self._fail(work, error)
            return {}

    def _route_tenant(self, works: list[Work], index: dict[tuple[str, str], dict[str, Any]]) -> None:
        works = [w for w in works if w.open]
        if not works:
            return
        tenant = works[0].tenant
        connection = self._crm.for_tenant(tenant)
        if self._deadline is not None:
            connection.client.set_deadline(self._deadline)
            self._deadlined.append(connection.client)
        self._limit_loops(works, index)
        works = [w for w in works if w.open]
        correlator = self._correlators[tenant.tenant_id]
        tenant_index = {sk: item for (t, sk), item in index.items() if t == tenant.tenant_id}
        try:
            resolved = self._look_up(works, connection, correlator, tenant_index)
        except Exception as error:
            if is_retryable(error) or len(works) == 1:
                for work in works:
                    self._fail(work, error)
                return
            # The CRM refused something one message brought (an address, a Message-ID): find
            # which, message by message, so the others go on.
            resolved = {}
            for work in works:
                try:
                    resolved.update(self._look_up([work], connection, correlator, tenant_index))
                except Exception as own_error:
                    self._fail(work, own_error)
            works = [w for w in works if w.open]
        for work in works:
            try:
                self._build(work, connection, correlator, resolved)
            except Exception as error:
                self._fail(work, error)
        self._write(connection, [w for w in works if w.open and w.body is not None])

    def _look_up(
        self,
        works: list[Work],
        connection: CrmConnection,
        correlator: TenantCorrelator,
        tenant_index: dict[str, dict[str, Any]],
    ) -> dict[str, tuple[PartyMatch, ...]]:
        """Correlate the messages and resolve their addresses: the CRM reads of the batch."""
        correlator.correlate_all([w.candidate for w in works if w.candidate is not None], tenant_index)
        cap = works[0].tenant.parties.max_resolved_per_message
        return connection.parties.resolve(a for w in works for a in _addresses(w.parsed, w.mailbox, cap))

    def _limit_loops(self, works: list[Work], index: dict[tuple[str, str], dict[str, Any]]) -> None:
        """Per-sender loop protection: the stored count plus this batch's earlier messages."""
        seen: dict[str, int] = {}
        for work in works:
            if work.counter is None:
                continue
            sk = work.counter[0]
            stored = int(index.get((work.tenant.tenant_id, sk), {}).get("count", 0))
            seen[sk] = seen.get(sk, 0) + 1
            count, settings = stored + seen[sk], work.tenant.loop_protection
            if count > settings.max_messages:
                sender = work.parsed.sender.email if work.parsed and work.parsed.sender else ""
                work.finish(
                    Outcome.FILTERED,
                    f"loop protection: {count} messages from {sender} to {work.mailbox.address} within "
                    f"{settings.window_minutes} minutes (limit {settings.max_messages})",
                )

    def _build(
        self,
        work: Work,
        connection: CrmConnection,
        correlator: TenantCorrelator,
        resolved: dict[str, tuple[PartyMatch, ...]],
    ) -> None:
        parsed, tenant, mailbox, candidate = work.parsed, work.tenant, work.mailbox, work.candidate
        assert parsed is not None and candidate is not None and candidate.result is not None
        correlation = candidate.result
        sender = parsed.sender.email if parsed.sender else ""
        sender_matches = resolved.get(sender, ())
        if parsed.dmarc_failed:  # an address claimed without proof never stands for a CRM user
            sender_matches = tuple(m for m in sender_matches if m.logical_name != "systemuser")
        chosen = choose_sender(sender_matches, tenant.parties.unresolve_ambiguous_sender)
        reason = tracking_reason(mailbox.tracking, correlation.is_response, sender_matches)
        if reason is not None:
            work.finish(Outcome.FILTERED, reason)
            return
        if (
            sender
            and not sender_matches
            and mailbox.auto_create_contact
            and work.auto_reason is None
            and not is_mailer_daemon(sender)  # a mail system is never a contact
            and not parsed.dmarc_failed
        ):
            chosen = create_contact(
                connection.client, tenant.tenant_id, sender, parsed.sender.name if parsed.sender else ""
            )
            connection.parties.invalidate([sender])
            resolved = {**resolved, sender: (chosen,)}
        blocked = drop_blocked_attachments(parsed, tenant.blocked_attachment_extensions)
        dropped = bool(blocked) or any(d.startswith("attachment-too-large") for d in parsed.defects)
        email_id = email_id_for(tenant.tenant_id, work.key)
        named = set(candidate.addresses)  # every address in the headers
        bcc = [mailbox.address] if mailbox.address not in named else []
        for twin in self._twins_of(work):
            if twin.mailbox.address not in named and twin.mailbox.address not in bcc:
                bcc.append(twin.mailbox.address)
        # Recipients past the tenant's cap stay unresolved parties, whatever other messages resolved.
        looked_up = {*_addresses(parsed, mailbox, tenant.parties.max_resolved_per_message), *bcc}
        resolved = {address: matches for address, matches in resolved.items() if address in looked_up}
        work.body = incoming_email_body(
            email_id,
            parsed,
            resolved,
            correlation.regarding,
            dropped,
            sender=chosen,
            extra_bcc=bcc,
            tracking_token=candidate.token,
        )
        work.party_addresses = sorted(named | set(bcc))
        ref = ThreadRef(
            email_id, correlation.regarding, candidate.fingerprint.addresses if candidate.fingerprint else ()
        )
        keys = []
        if parsed.message_id and not work.reused_id:  # the Message-ID's thread stays the first message's
            keys.append(message_id_key(parsed.message_id))
        if parsed.thread_index:
            keys.append(conversation_key(parsed.thread_index))
        if candidate.fingerprint is not None:
            keys.append(subject_prefix(candidate.fingerprint.subject_hash) + email_id)
        correlator.remember(candidate, keys, ref)
        work.ledger_ops = ref_ops(self._ledger, tenant.tenant_id, keys, ref)
        if correlation.refreshed and correlation.ref is not None and correlation.ref_key is not None:
            work.ledger_ops += ref_ops(self._ledger, tenant.tenant_id, [correlation.ref_key], correlation.ref)

    def _twins_of(self, work: Work) -> list[Work]:
        return [w for w in self._works if w.twin_of is work]

    def _write(self, connection: CrmConnection, works: list[Work]) -> None:
        """Create the emails; parts of a `$batch` the CRM throttled or failed transiently are sent
        again (the client waits out a Retry-After first) until the deadline says stop."""
        pending = works
        for attempt in range(1, WRITE_ROUNDS + 1):
            if not pending:
                return
            try:
                answers = create_incoming_emails(
                    connection.client, [w.body for w in pending if w.body is not None]
                )
            except Exception as error:
                for work in pending:
                    self._fail(work, error)
                return
            retry: list[Work] = []
            for work, answer in zip(pending, answers, strict=True):
                if isinstance(answer, CrmTransientError) and attempt < WRITE_ROUNDS:
                    retry.append(work)
                elif isinstance(answer, CrmError):
                    self._fail(work, answer)
                else:
                    email_id, _created = answer
                    method = (
                        work.candidate.result.method if work.candidate and work.candidate.result else None
                    )
                    note = (
                        "Message-ID reused: an earlier message with other content has it"
                        if work.reused_id
                        else ""
                    )
                    work.finish(Outcome.CORRELATED if method else Outcome.CREATED, note, email_id, method)
            pending = retry

    def _quarantine(self, work: Work, reason: str) -> None:
        try:
            if work.oversized and work.message.raw_s3_key:
                work.raw_s3_key = self._raw.keep(work.tenant.tenant_id, work.message.raw_s3_key, "quarantine")
            else:
                if not work.raw:
                    work.raw = raw_bytes(work.message, self._raw)
                work.raw_s3_key = self._raw.put(
                    work.tenant.tenant_id, work.mailbox.mailbox_id, work.raw, kind="quarantine"
                )
        except Exception as error:
            work.error = error
            return
        work.finish(Outcome.QUARANTINED, reason)

    def _fail(self, work: Work, error: BaseException) -> None:
        """Infrastructure trouble sends the message back to its queue; anything the message
        itself causes quarantines it with its raw MIME kept."""
        if isinstance(error, Exception) and not is_retryable(error):
            work.result = None
            self._quarantine(work, quarantine_reason(error))
        else:
            work.error = error

    def _commit(self, works: list[Work]) -> None:
        """One transaction: outcomes, source records, thread-index entries, loop counters."""
        ops: list[dict[str, Any]] = []
        committed: list[tuple[Work, list[dict[str, Any]]]] = []
        counters: dict[tuple[str, str], tuple[int, int]] = {}
        for work in works:
            if work.twin_of is not None and work.error is None:
                self._settle_twin(work)
            if work.result is None:
                continue
            own: list[dict[str, Any]] = []
            if work.claimed:
                result = work.result
                extra = {"party_addresses": work.party_addresses} if work.party_addresses else None
                own.append(
                    {
                        "Update": self._ledger.complete_op(
                            result.tenant_id,
                            result.message_key,
                            work.owner,
                            result.outcome,
                            result.reason,
                            result.crm_email_id,
                            result.correlation,
                            work.raw_s3_key,
                            extra,
                        )
                    }
                )
                if result.outcome in (Outcome.CREATED, Outcome.CORRELATED):
                    own += work.ledger_ops
            own.append(
                {
                    "Put": self._ledger.source_op(
                        work.tenant.tenant_id,
                        work.mailbox.mailbox_id,
                        work.message.source_ref,
                        work.key,
                        work.mailbox.delete_after_processing and not work.keep_at_source,
                        work.message.source_identity,
                    )
                }
            )
            if work.counter is not None and work.claimed:
                ckey = (work.tenant.tenant_id, work.counter[0])
                amount, expiry = counters.get(ckey, (0, work.counter[1]))
                counters[ckey] = (amount + 1, expiry)
            committed.append((work, own))
            ops += own
        for (tenant_id, sk), (amount, expiry) in counters.items():
            ops.append({"Update": self._ledger.counter_op(tenant_id, sk, expiry, amount)})
        if not ops:
            return
        try:
            if _unique_keys(ops) and self._ledger.transact(ops):
                return
        except Exception as error:
            for work, _own in committed:
                work.result, work.error = None, error
            return
        # A condition failed (a claim was lost) or the batch is too large for one transaction:
        # each message on its own, so one cannot hold back the others.
        for work, own in committed:
            try:
                if not self._ledger.transact(_dedupe(own)):
                    work.result, work.error = None, ClaimBusyError(f"lost the claim on {work.key}")
            except Exception as error:
                work.result, work.error = None, error
        for (tenant_id, sk), (amount, expiry) in counters.items():
            try:
                self._ledger.transact([{"Update": self._ledger.counter_op(tenant_id, sk, expiry, amount)}])
            except Exception as error:  # a counter is advisory; the outcomes are recorded
                logger.warning("loop-protection counter not updated", tenant_id=tenant_id, reason=str(error))

    def _settle_twin(self, work: Work) -> None:
        """The same message reached another mailbox in this batch: it shares the first's outcome."""
        first = work.twin_of
        assert first is not None
        if first.result is not None:
            work.result = DeliveryResult(
                first.result.tenant_id,
                first.result.message_key,
                Outcome.DUPLICATE,
                f"already {first.result.outcome.value} (same batch)",
                first.result.crm_email_id,
            )
        else:
            work.error = first.error or ClaimBusyError(f"message {work.key} is handled by another delivery")


def _digest(work: Work) -> str:
    return work.parsed.content_digest if work.parsed is not None else ""


def _differs(record: InboundRecord, work: Work) -> bool:
    """Whether the ledger's message under this key has other content (records written before
    content digests were kept have none and count as the same)."""
    return bool(record.content_digest) and record.content_digest != _digest(work)


def _header_block(raw: bytes, limit: int = HEADER_BLOCK_LIMIT) -> bytes:
    head = raw[:limit]
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = head.find(separator)
        if end != -1:
            return head[: end + len(separator)]
    return head


def _addresses(
    parsed: ParsedMessage | None, mailbox: MailboxConfig | None = None, cap: int | None = None
) -> list[str]:
    """The addresses of a message to resolve: its sender, the tracked mailbox, and its first `cap`
    distinct recipients in header order (To, Cc, Bcc)."""
    if parsed is None:
        return []
    addresses = [a.email for a in (*parsed.to, *parsed.cc, *parsed.bcc)]
    if cap is not None:
        addresses = list(dict.fromkeys(addresses))[:cap]
    if parsed.sender is not None:
        addresses.append(parsed.sender.email)
    if mailbox is not None:
        addresses.append(mailbox.address)
    return addresses


def _unique_keys(ops: list[dict[str, Any]]) -> bool:
    keys = [_op_key(op) for op in ops]
    return len(keys) == len(set(keys)) and len(ops) <= 100


def _op_key(op: dict[str, Any]) -> tuple[str, str]:
    body = next(iter(op.values()))
    key = body.get("Key") or body["Item"]
    return key["pk"]["S"], key["sk"]["S"]


def _dedupe(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for op in ops:
        unique[_op_key(op)] = op
    return list(unique.values())
