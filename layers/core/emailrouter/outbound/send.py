"""send_outbound's work for one CRM email: claim → render → intent → SES → Sent/Failed.

Never twice. The CRM claim (Pending Send → Sending, If-Match on the ETag) keeps two workers
from racing; the ledger intent (state `sending`, our Message-ID), written only from `queued`
and before SES is called, is the real mutual exclusion. A worker that finds an intent without
an SES id cannot know from its own records whether SES accepted the message — the process may
have died between SES's answer and the ledger write, the one window no design closes. It never
resends on a guess: SES publishes a Send event for every message it accepts (the configuration
set's event destination → `ses_events`, which records it on the intent), so
- an intent with such an event is Sent, without a second send;
- an intent still without one after the tenant's sending-status delay (default 30 minutes,
  far beyond SES's event latency) was not accepted, and is sent now — its first real send.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from emailrouter.clock import iso
from emailrouter.crm.emails import (
    STATE_COMPLETED,
    STATE_OPEN,
    STATUS_FAILED,
    STATUS_PENDING_SEND,
    STATUS_SENDING,
    STATUS_SENT,
)
from emailrouter.crm.errors import CrmConflictError
from emailrouter.crm.tracking_token import TrackingTokenFormat
from emailrouter.ledger.models import OutboundState
from emailrouter.outbound.compose import read_email, to_outbound
from emailrouter.outbound.errors import PermanentSendError, RenderError, ThrottledError, TransientSendError
from emailrouter.outbound.render import render_mime
from emailrouter.outbound.ses import ses_assigned_message_id
from emailrouter.outbound.threads import remember_sent
from emailrouter.routing.faults import NO_FAULTS, FaultPoints
from emailrouter.routing.outcomes import RetryLater

if TYPE_CHECKING:
    from emailrouter.crm.client import DataverseClient
    from emailrouter.crm.connections import CrmConnections
    from emailrouter.ledger.models import OutboundRecord
    from emailrouter.ledger.store import Ledger
    from emailrouter.outbound.compose import CrmEmail
    from emailrouter.outbound.models import OutboundEmail
    from emailrouter.outbound.ses import SesSender
    from emailrouter.tenancy.models import TenantConfig
    from emailrouter.tenancy.sending import SendingIdentities


class SendingLookup(Protocol):
    def get_sending(self, tenant_id: str) -> SendingIdentities: ...


@dataclass(frozen=True, slots=True)
class SendResult:
    tenant_id: str
    email_id: str
    state: str  # sent | failed | skipped | pending
    reason: str = ""
    ses_message_id: str | None = None


class OutboundSender:
    def __init__(
        self,
        crm: CrmConnections,
        ledger: Ledger,
        ses: SesSender,
        region: str,
        faults: FaultPoints = NO_FAULTS,
        *,
        sending: SendingLookup,
    ) -> None:
        self._sending = sending
        self._crm = crm
        self._ledger = ledger
        self._ses = ses
        self._region = region
        self._faults = faults

    def send(self, tenant: TenantConfig, email_id: str) -> SendResult:
        client = self._crm.for_tenant(tenant).client
        email = read_email(client, email_id)
        record = self._ledger.get_outbound(tenant.tenant_id, email_id)
        if email.statuscode == STATUS_SENT:
            return SendResult(tenant.tenant_id, email_id, "skipped", "already sent")
        if record is not None and record.state is OutboundState.SENT:
            self._mark_sent(client, email_id)
            return SendResult(tenant.tenant_id, email_id, "sent", "marked Sent after an interruption")
        if record is not None and record.state is OutboundState.FAILED:
            return SendResult(tenant.tenant_id, email_id, "skipped", f"failed earlier: {record.reason}")
        if record is not None and record.state is OutboundState.SENDING:
            settled = self._settle_intent(client, tenant, email, record)
            if settled is not None:
                return settled
            record = self._ledger.get_outbound(tenant.tenant_id, email_id)
        if not email.directioncode or email.statuscode not in (STATUS_PENDING_SEND, STATUS_SENDING):
            self._ledger.record_failed(
                tenant.tenant_id, email_id, f"not pending send (status {email.statuscode})"
            )
            return SendResult(tenant.tenant_id, email_id, "skipped", f"status is {email.statuscode}")
        if record is not None and record.attempts >= tenant.outbound.max_attempts:
            return self._fail(
                client, tenant, email_id, None, f"gave up after {record.attempts} attempts: {record.reason}"
            )
        return self._claim_and_send(client, tenant, email)

    # ---- the send itself ---------------------------------------------------------------
    def _claim_and_send(self, client: DataverseClient, tenant: TenantConfig, email: CrmEmail) -> SendResult:
        tenant_id, email_id = tenant.tenant_id, email.email_id
        try:
            outbound = self._without_suppressed(tenant_id, to_outbound(client, tenant_id, email))
            new_token = self._new_tracking_token(tenant, email, outbound)
            rendered = render_mime(outbound)
        except RenderError as error:
            return self._fail(client, tenant, email_id, email.etag, f"cannot render: {error}")
        # A tenant sends only as the identities the operator gave it, through its own SES tenant:
        # checked before the claim, so a refused email is never handed to SES.
        sending = self._sending.get_sending(tenant_id)
        refusal = sending.refusal(tenant_id, rendered.from_address)
        if refusal:
            return self._fail(client, tenant, email_id, email.etag, refusal)
        if email.statuscode == STATUS_PENDING_SEND:
            claim: dict[str, object] = {
                "statecode": STATE_COMPLETED,
                "statuscode": STATUS_SENDING,
                "messageid": rendered.message_id,
            }
            if new_token:
                claim["trackingtoken"] = new_token
            try:
                client.update("emails", email_id, claim, etag=email.etag)
            except CrmConflictError:
                return SendResult(tenant_id, email_id, "skipped", "claimed by another worker")
        # Already Sending without an intent: a claim whose worker stopped before recording
        # the intent. Nothing was sent; the intent below decides who sends.
        self._faults.reach("after_claim")
        if not self._ledger.begin_send(tenant_id, email_id, rendered.message_id):
            return SendResult(tenant_id, email_id, "skipped", "a send is already recorded")
        self._faults.reach("after_intent")
        try:
            ses_id = self._ses.send(
                rendered,
                from_address=rendered.from_address,
                tenant_name=sending.ses_tenant_name,
                tags={"tenant_id": tenant_id, "email_id": email_id},
            )
        except ThrottledError as error:
            # Nothing was sent: back to Pending Send, where the next dispatch finds it.
            self._ledger.release_send(tenant_id, email_id, f"throttled: {error}", counts_as_attempt=False)
            client.update(
                "emails", email_id, {"statecode": STATE_COMPLETED, "statuscode": STATUS_PENDING_SEND}
            )
            raise RetryLater(f"SES throttled: {error}") from None
        except PermanentSendError as error:
            return self._fail(client, tenant, email_id, None, f"SES refused: {error.reason}")
        except TransientSendError as error:
            # SES may have accepted it: the intent stays; the Send event (or its absence
            # after the delay) settles it.
            return SendResult(tenant_id, email_id, "pending", f"SES outcome unknown: {error}")
        self._faults.reach("after_ses_accepted")
        remember_sent(self._ledger, tenant_id, email, rendered.message_id, ses_id, outbound.tracking_token)
        self._ledger.record_sent(tenant_id, email_id, ses_id, ses_assigned_message_id(ses_id, self._region))
        self._faults.reach("before_mark_sent")
        self._mark_sent(client, email_id)
        return SendResult(tenant_id, email_id, "sent", ses_message_id=ses_id)

    def _new_tracking_token(
        self, tenant: TenantConfig, email: CrmEmail, outbound: OutboundEmail
    ) -> str | None:
        """A token for the subject when the tenant uses tokens and the email has none yet
        (a retry finds the one its claim wrote). Numbered per sending user or queue."""
        settings = tenant.tracking_token
        if not settings.enabled or outbound.tracking_token:
            return None
        sender = next(
            (
                str(p.get("_partyid_value") or p.get("addressused") or "")
                for p in email.row.get("email_activity_parties") or []
                if int(p.get("participationtypemask") or 0) == 1
            ),
            outbound.sender.email,
        )
        user_number, counter = self._ledger.token_numbers(tenant.tenant_id, sender or outbound.sender.email)
        token = TrackingTokenFormat(
            settings.prefix, settings.base, settings.user_digits, settings.counter_digits
        ).format(user_number, counter)
        outbound.tracking_token = token
        return token

    def _without_suppressed(self, tenant_id: str, outbound: OutboundEmail) -> OutboundEmail:
        """Recipients on the tenant's suppression list (hard bounces, complaints) are dropped."""
        everyone = [r.email for r in (*outbound.to, *outbound.cc, *outbound.bcc)]
        suppressed = self._ledger.suppressed(tenant_id, everyone)
        if not suppressed:
            return outbound
        kept = replace(
            outbound,
            to=[r for r in outbound.to if r.email.lower() not in suppressed],
            cc=[r for r in outbound.cc if r.email.lower() not in suppressed],
            bcc=[r for r in outbound.bcc if r.email.lower() not in suppressed],
        )
        if not (kept.to or kept.cc or kept.bcc):
            raise RenderError(
                f"every recipient is on the tenant's suppression list ({', '.join(sorted(suppressed))})"
            )
        return kept

    # ---- interrupted sends ---------------------------------------------------------------
    def _settle_intent(
        self, client: DataverseClient, tenant: TenantConfig, email: CrmEmail, record: OutboundRecord
    ) -> SendResult | None:
        """An intent without a recorded SES answer. Returns a result, or None when the intent
        was released (SES never accepted it) and the caller should send now."""
        email_id = email.email_id
        if record.accepted_ses_id or record.ses_message_id:
            remember_sent(
                self._ledger,
                tenant.tenant_id,
                email,
                record.message_id or "",
                record.accepted_ses_id or record.ses_message_id or "",
                None,
            )
            self._ledger.record_sent(
                tenant.tenant_id,
                email_id,
                record.accepted_ses_id or record.ses_message_id or "",
                ses_assigned_message_id(record.accepted_ses_id or "", self._region)
                if record.accepted_ses_id
                else "",
            )
            self._mark_sent(client, email_id)
            return SendResult(tenant.tenant_id, email_id, "sent", "SES event confirmed the interrupted send")
        age = self._ledger.intent_age_seconds(tenant.tenant_id, email_id) or 0.0
        if age < tenant.outbound.sending_status_delay_minutes * 60:
            return SendResult(
                tenant.tenant_id, email_id, "pending", "waiting for SES to confirm an interrupted send"
            )
        self._ledger.release_send(
            tenant.tenant_id,
            email_id,
            f"no SES event {age:.0f} s after an interrupted send: it was not accepted",
            counts_as_attempt=True,
        )
        return None

    def _mark_sent(self, client: DataverseClient, email_id: str) -> None:
        client.update(
            "emails", email_id, {"statecode": STATE_COMPLETED, "statuscode": STATUS_SENT, "senton": iso()}
        )

    def _fail(
        self, client: DataverseClient, tenant: TenantConfig, email_id: str, etag: str | None, reason: str
    ) -> SendResult:
        self._ledger.record_failed(tenant.tenant_id, email_id, reason)
        client.update("emails", email_id, {"statecode": STATE_OPEN, "statuscode": STATUS_FAILED}, etag=etag)
        return SendResult(tenant.tenant_id, email_id, "failed", reason)
