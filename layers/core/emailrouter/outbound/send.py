"""send_outbound's work for one CRM email: claim → render → intent → SES → Sent/Failed.

Never twice: the intent (state `sending` with our Message-ID) is in the ledger before SES is
called, and only a `queued` email may get one. A worker that finds an intent without an SES id
cannot know whether SES accepted the message (the process may have died in between), so it
never sends again: it waits for the SES Send/Delivery event to confirm, and after the tenant's
sending-status delay marks the email Failed with "outcome unknown" for a person to check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from emailrouter.clock import iso, now
from emailrouter.crm.emails import (
    STATE_COMPLETED,
    STATE_OPEN,
    STATUS_FAILED,
    STATUS_PENDING_SEND,
    STATUS_SENDING,
    STATUS_SENT,
)
from emailrouter.crm.errors import CrmConflictError
from emailrouter.ledger.models import OutboundState
from emailrouter.outbound.compose import read_email, to_outbound
from emailrouter.outbound.errors import PermanentSendError, RenderError, ThrottledError, TransientSendError
from emailrouter.outbound.render import render_mime
from emailrouter.outbound.ses import ses_assigned_message_id
from emailrouter.routing.faults import NO_FAULTS, FaultPoints
from emailrouter.routing.outcomes import RetryLater

if TYPE_CHECKING:
    from emailrouter.crm.client import DataverseClient
    from emailrouter.crm.connections import CrmConnections
    from emailrouter.ledger.store import Ledger
    from emailrouter.outbound.ses import SesSender
    from emailrouter.tenancy.models import TenantConfig


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
    ) -> None:
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
        if record is not None and record.state in (OutboundState.SENDING, OutboundState.SENT):
            return self._resume(client, tenant, email_id, email.etag, record.state, record.updated_at)
        if email.statuscode != STATUS_PENDING_SEND or not email.directioncode:
            self._ledger.record_failed(
                tenant.tenant_id, email_id, f"not pending send (status {email.statuscode})"
            )
            return SendResult(tenant.tenant_id, email_id, "skipped", f"status is {email.statuscode}")
        try:
            rendered = render_mime(to_outbound(client, tenant.tenant_id, email))
        except RenderError as error:
            return self._fail(client, tenant, email_id, email.etag, f"cannot render: {error}")
        try:
            client.update(
                "emails",
                email_id,
                {
                    "statecode": STATE_COMPLETED,
                    "statuscode": STATUS_SENDING,
                    "messageid": rendered.message_id,
                },
                etag=email.etag,
            )
        except CrmConflictError:
            return SendResult(tenant.tenant_id, email_id, "skipped", "claimed by another worker")
        self._faults.reach("after_claim")
        if not self._ledger.begin_send(tenant.tenant_id, email_id, rendered.message_id):
            return SendResult(tenant.tenant_id, email_id, "skipped", "a send is already recorded")
        self._faults.reach("after_intent")
        sender_address = rendered.from_address
        try:
            ses_id = self._ses.send(
                rendered, from_address=sender_address, tenant_name=tenant.outbound.ses_tenant_name
            )
        except ThrottledError as error:
            # Nothing was sent: give the email back to Pending Send and retry later.
            self._ledger.release_send(tenant.tenant_id, email_id, f"throttled: {error}")
            client.update(
                "emails", email_id, {"statecode": STATE_COMPLETED, "statuscode": STATUS_PENDING_SEND}
            )
            raise RetryLater(f"SES throttled: {error}") from None
        except PermanentSendError as error:
            return self._fail(client, tenant, email_id, None, f"SES refused: {error.reason}")
        except TransientSendError as error:
            # SES may have accepted it: leave the intent in place; _resume settles it later.
            raise RetryLater(f"SES outcome unknown: {error}") from None
        self._faults.reach("after_ses_accepted")
        self._ledger.record_sent(
            tenant.tenant_id, email_id, ses_id, ses_assigned_message_id(ses_id, self._region)
        )
        self._faults.reach("before_mark_sent")
        self._mark_sent(client, email_id)
        return SendResult(tenant.tenant_id, email_id, "sent", ses_message_id=ses_id)

    def _resume(
        self,
        client: DataverseClient,
        tenant: TenantConfig,
        email_id: str,
        etag: str,
        state: OutboundState,
        since: str,
    ) -> SendResult:
        record = self._ledger.get_outbound(tenant.tenant_id, email_id)
        if state is OutboundState.SENT or (record and (record.ses_message_id or record.last_event)):
            self._mark_sent(client, email_id)
            return SendResult(tenant.tenant_id, email_id, "sent", "recovered after interruption")
        age_minutes = (now() - datetime.fromisoformat(since.replace("Z", "+00:00"))).total_seconds() / 60
        if age_minutes < tenant.outbound.sending_status_delay_minutes:
            raise RetryLater("send outcome not yet known; waiting for the SES event")
        return self._fail(
            client,
            tenant,
            email_id,
            None,
            "send outcome unknown: the worker stopped after handing the message to SES and no SES "
            "event confirmed delivery; not resent to avoid a duplicate",
        )

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
