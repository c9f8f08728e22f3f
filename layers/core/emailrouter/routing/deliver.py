"""deliver_inbound's work for one message: parse → claim → filter → correlate → resolve → one
CRM write → outcome in the ledger. Acknowledging at the source happens per batch (acknowledge.py).

Exactly once: the ledger claim stops concurrent work on the same message; the email's activityid
is derived from the message, so a retry after a crash at any step re-creates nothing (Dataverse
answers 412 for the existing id and we adopt it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emailrouter.crm.emails import (
    create_incoming_email,
    email_id_for,
    find_by_message_ids,
    find_by_tracking_token,
    incoming_email_body,
    regarding_of,
)
from emailrouter.crm.tracking_token import TrackingTokenFormat
from emailrouter.ledger.models import Outcome
from emailrouter.mime.errors import MalformedMessageError
from emailrouter.mime.parse import parse_message
from emailrouter.queues.sender import raw_bytes
from emailrouter.routing.attachments import drop_blocked_attachments
from emailrouter.routing.faults import NO_FAULTS, FaultPoints
from emailrouter.routing.filters import auto_generated_reason, tracking_reason
from emailrouter.routing.keys import message_key, raw_key
from emailrouter.routing.loops import loop_reason
from emailrouter.routing.outcomes import DeliveryResult, is_retryable, quarantine_reason

if TYPE_CHECKING:
    from emailrouter.crm.connections import CrmConnection, CrmConnections
    from emailrouter.crm.emails import Regarding
    from emailrouter.ledger.store import Ledger
    from emailrouter.mime.models import ParsedMessage
    from emailrouter.queues.messages import InboundMessage
    from emailrouter.queues.rawstore import RawMailStore
    from emailrouter.tenancy.models import MailboxConfig, TenantConfig
    from emailrouter.tenancy.store import TenantStore

CLAIM_TTL_SECONDS = 120
MAX_REFERENCES = 32


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
        """Process one queued message to its outcome. Raises when it must go back to the queue."""
        tenant = self._tenants.get(message.tenant_id)
        mailbox = tenant.mailbox(message.mailbox_id)
        raw = raw_bytes(message, self._raw)
        try:
            parsed: ParsedMessage | None = parse_message(
                raw, max_attachment_bytes=tenant.max_attachment_bytes
            )
            problem = None
        except MalformedMessageError as error:
            parsed, problem = None, f"not parseable as mail: {error}"
        if parsed is not None and len(raw) > tenant.max_message_bytes:
            problem = (
                f"message of {len(raw)} bytes exceeds the tenant's maximum of {tenant.max_message_bytes}"
            )
        key = raw_key(raw) if parsed is None else message_key(parsed)
        attrs = {
            "mailbox_id": mailbox.mailbox_id,
            "source_ref": message.source_ref,
            "message_id": parsed.message_id if parsed else None,
            "subject": parsed.subject[:200] if parsed else "",
        }
        _claimed, finished = self._ledger.claim(tenant.tenant_id, key, owner, CLAIM_TTL_SECONDS, attrs)
        if finished is not None:
            self._record_source(tenant, mailbox, message, key)
            return DeliveryResult(
                tenant.tenant_id, key, Outcome.DUPLICATE, f"already {finished.outcome}", finished.crm_email_id
            )
        self._faults.reach("after_claim")
        if parsed is None or problem is not None:
            result = self._quarantine(tenant, key, owner, raw, mailbox, problem or "unparseable")
        else:
            try:
                result = self._route(tenant, mailbox, parsed, key, owner)
            except Exception as error:
                if is_retryable(error):
                    raise
                result = self._quarantine(tenant, key, owner, raw, mailbox, quarantine_reason(error))
        self._record_source(tenant, mailbox, message, key)
        return result

    def _record_source(
        self, tenant: TenantConfig, mailbox: MailboxConfig, message: InboundMessage, key: str
    ) -> None:
        self._ledger.record_source(
            tenant.tenant_id, mailbox.mailbox_id, message.source_ref, key, mailbox.delete_after_processing
        )

    def _quarantine(
        self, tenant: TenantConfig, key: str, owner: str, raw: bytes, mailbox: MailboxConfig, reason: str
    ) -> DeliveryResult:
        s3_key = self._raw.put(tenant.tenant_id, mailbox.mailbox_id, raw, kind="quarantine")
        self._ledger.complete(
            tenant.tenant_id, key, owner, Outcome.QUARANTINED, reason=reason, raw_s3_key=s3_key
        )
        return DeliveryResult(tenant.tenant_id, key, Outcome.QUARANTINED, reason)

    def _route(
        self, tenant: TenantConfig, mailbox: MailboxConfig, parsed: ParsedMessage, key: str, owner: str
    ) -> DeliveryResult:
        auto = auto_generated_reason(parsed)
        if auto is not None:
            self._ledger.complete(tenant.tenant_id, key, owner, Outcome.FILTERED, reason=auto)
            return DeliveryResult(tenant.tenant_id, key, Outcome.FILTERED, auto)
        looping = loop_reason(self._ledger, tenant, mailbox, parsed.sender.email if parsed.sender else "")
        if looping is not None:
            self._ledger.complete(tenant.tenant_id, key, owner, Outcome.FILTERED, reason=looping)
            return DeliveryResult(tenant.tenant_id, key, Outcome.FILTERED, looping)
        connection = self._crm.for_tenant(tenant)
        regarding, correlation, is_response = self._correlate(connection, parsed)
        if correlation is None and tenant.tracking_token.enabled:
            regarding, correlation, is_response = self._correlate_by_token(connection, tenant, parsed)
        addresses = [a.email for a in (parsed.to + parsed.cc + parsed.bcc)]
        if parsed.sender is not None:
            addresses.append(parsed.sender.email)
        resolved = connection.parties.resolve(addresses)
        sender_matches = resolved.get(parsed.sender.email, ()) if parsed.sender else ()
        reason = tracking_reason(mailbox.tracking, is_response, sender_matches)
        if reason is not None:
            self._ledger.complete(tenant.tenant_id, key, owner, Outcome.FILTERED, reason=reason)
            return DeliveryResult(tenant.tenant_id, key, Outcome.FILTERED, reason)
        blocked = drop_blocked_attachments(parsed, tenant.blocked_attachment_extensions)
        dropped = bool(blocked) or any(d.startswith("attachment-too-large") for d in parsed.defects)
        body = incoming_email_body(email_id_for(tenant.tenant_id, key), parsed, resolved, regarding, dropped)
        email_id, _created = create_incoming_email(connection.client, body)
        self._faults.reach("after_crm_write")
        outcome = Outcome.CORRELATED if correlation else Outcome.CREATED
        self._faults.reach("before_ledger_commit")
        self._ledger.complete(
            tenant.tenant_id, key, owner, outcome, crm_email_id=email_id, correlation=correlation
        )
        return DeliveryResult(tenant.tenant_id, key, outcome, "", email_id, correlation)

    def _correlate_by_token(
        self, connection: CrmConnection, tenant: TenantConfig, parsed: ParsedMessage
    ) -> tuple[Regarding | None, str | None, bool]:
        """The organization's tracking token in the subject (other tenants' tokens never match)."""
        settings = tenant.tracking_token
        token = TrackingTokenFormat(
            settings.prefix, settings.base, settings.user_digits, settings.counter_digits
        ).find(parsed.subject)
        if token is None:
            return None, None, False
        rows = find_by_tracking_token(connection.client, token)
        if not rows:
            return None, None, False
        return regarding_of(rows[0]), "tracking-token", True

    def _correlate(
        self, connection: CrmConnection, parsed: ParsedMessage
    ) -> tuple[Regarding | None, str | None, bool]:
        """In-Reply-To/References against the org's `messageid`: (regarding, method, is_response)."""
        ids: list[str] = []
        for candidate in [parsed.in_reply_to, *reversed(parsed.references[-MAX_REFERENCES:])]:
            if candidate and candidate not in ids:
                ids.append(candidate)
        if not ids:
            return None, None, False
        rows: list[dict[str, Any]] = find_by_message_ids(connection.client, ids)
        if not rows:
            return None, None, False
        # The nearest ancestor that has a regarding record wins.
        by_id = {str(row.get("messageid")): row for row in rows}
        for candidate in ids:
            row = by_id.get(candidate)
            if row is not None and (regarding := regarding_of(row)) is not None:
                return regarding, "in-reply-to", True
        return None, "in-reply-to", True
