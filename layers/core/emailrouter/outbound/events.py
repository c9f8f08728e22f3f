"""SES event notifications (through SNS) applied to the ledger and the CRM email."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from emailrouter.crm.client import entity_path
from emailrouter.crm.emails import STATE_OPEN, STATUS_FAILED
from emailrouter.crm.query import query_path
from emailrouter.outbound.router_id import HEADER, deployment_keys, verify

if TYPE_CHECKING:
    from emailrouter.crm.connections import CrmConnections
    from emailrouter.ledger.store import Ledger
    from emailrouter.tenancy.models import TenantConfig


class TenantLookup(Protocol):
    def get(self, tenant_id: str) -> TenantConfig: ...


@dataclass(frozen=True, slots=True)
class SesEvent:
    event_type: str  # Send, Delivery, Bounce, Complaint, Reject, DeliveryDelay, ...
    ses_message_id: str
    tenant_id: str | None
    email_id: str | None
    detail: str
    permanent_failure: bool
    suppress: tuple[str, ...] = ()  # recipients the tenant should stop sending to


def parse_ses_event(body: str) -> SesEvent:
    """Accepts the SES event JSON, or an SNS envelope around it (`Message`)."""
    data: dict[str, Any] = json.loads(body)
    if "Message" in data and "Type" in data:
        data = json.loads(data["Message"])
    event_type = str(data.get("eventType") or data.get("notificationType") or "Unknown")
    mail = data.get("mail") or {}
    tags = mail.get("tags") or {}
    tenant_id = (tags.get("tenant_id") or [None])[0]
    email_id = (tags.get("email_id") or [None])[0]
    if not (tenant_id and email_id):
        # Without the message tags, the header we rendered — only when its signature holds.
        for header in mail.get("headers") or []:
            if str(header.get("name", "")).lower() == HEADER.lower():
                named = verify(str(header.get("value", "")), deployment_keys().accepted())
                if named is not None:
                    tenant_id, email_id = named
    detail, permanent = event_type, False
    suppress: tuple[str, ...] = ()
    if event_type == "Bounce":
        bounce = data.get("bounce") or {}
        permanent = bounce.get("bounceType") == "Permanent"
        bounced = bounce.get("bouncedRecipients", [])
        recipients = [
            f"{r.get('emailAddress', '')} ({r.get('diagnosticCode') or r.get('status') or 'no diagnostic'})"
            for r in bounced
        ]
        detail = f"{bounce.get('bounceType')}/{bounce.get('bounceSubType')}: {'; '.join(recipients)}"
        if permanent:
            suppress = tuple(str(r["emailAddress"]).lower() for r in bounced if r.get("emailAddress"))
    elif event_type == "Complaint":
        complaint = data.get("complaint") or {}
        detail = f"complaint: {complaint.get('complaintFeedbackType', 'unspecified')}"
        complained = complaint.get("complainedRecipients", [])
        suppress = tuple(str(r["emailAddress"]).lower() for r in complained if r.get("emailAddress"))
    elif event_type == "Reject":
        permanent = True
        detail = f"rejected: {(data.get('reject') or {}).get('reason', '')}"
    return SesEvent(
        event_type, str(mail.get("messageId", "")), tenant_id, email_id, detail[:500], permanent, suppress
    )


def apply_ses_event(event: SesEvent, tenants: TenantLookup, ledger: Ledger, crm: CrmConnections) -> str:
    """Record the event (any event proves SES accepted the message); hard-bounced and
    complaining recipients go on the tenant's suppression list for its `suppression_days`;
    a permanent bounce or a reject
    marks the CRM email Failed. Returns what was done."""
    if not (event.tenant_id and event.email_id):
        return "ignored: not sent by the router"
    if not ledger.record_event(
        event.tenant_id, event.email_id, event.event_type, event.detail, event.ses_message_id
    ):
        return "ignored: no outbound record for this email"
    if event.suppress:
        days = tenants.get(event.tenant_id).outbound.suppression_days
        for address in event.suppress:
            ledger.suppress(event.tenant_id, address, event.detail, days * 86400)
    if not event.permanent_failure:
        return f"recorded {event.event_type}"
    tenant = tenants.get(event.tenant_id)
    client = crm.for_tenant(tenant).client
    row = client.get(query_path(entity_path("emails", event.email_id), select=("description",)))
    client.update(
        "emails",
        event.email_id,
        {
            "statecode": STATE_OPEN,
            "statuscode": STATUS_FAILED,
            "description": with_failure_note(str(row.get("description") or ""), event),
        },
    )
    return f"marked failed: {event.detail}"


DSN_EVENT = "DeliveryStatusNotification"  # a bounce that came back by mail, not from SES
FAILURE_NOTE_CLASS = "emailrouter-delivery-failure"


def with_failure_note(description: str, event: SesEvent) -> str:
    """The email's body with the delivery failure appended where CRM users see it: the email
    table has no column for a failure reason. Applied once per email (a replayed event or a
    second bounce does not stack notes)."""
    if FAILURE_NOTE_CLASS in description:
        return description
    source = "the recipient's mail system" if event.event_type == DSN_EVENT else "Amazon SES"
    note = html.escape(f"Delivery failed ({event.event_type}, reported by {source}): {event.detail}")
    return description + '<hr><p class="' + FAILURE_NOTE_CLASS + '">' + note + "</p>"
