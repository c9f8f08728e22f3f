"""Delivery status notifications and abuse reports (ARF) that reach a tracked mailbox: matched to
the outbound email they report on and recorded there — the same way SES bounce and complaint
events are — never tracked as new mail.

Anyone can send a tracked mailbox a report, and every recipient of our mail knows its headers,
so a report is believed only as far as it can be checked:

- it names the email by a signed ``X-EmailRouter-Id`` (outbound/router_id.py) of the mailbox's
  own tenant, or by the Message-ID the email went out with (ours or the one SES assigned) in
  the returned message's Message-ID or References; an unsigned or wrongly signed id names
  nothing;
- only its statuses for addresses the email was sent to count (Final-Recipient, or
  Original-Recipient for a forward): only those are suppressed, and only a permanent failure of
  one of them marks the email Failed. Statuses for other addresses are listed in the reason.
- an abuse report is recorded on the email as a Complaint and suppresses the complaining
  addresses it names that the email was sent to; the email stays Sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emailrouter.ledger.threads import ThreadRef
from emailrouter.outbound.compose import recipients_of
from emailrouter.outbound.events import DSN_EVENT, SesEvent, apply_ses_event
from emailrouter.outbound.router_id import deployment_keys, verify
from emailrouter.routing.correlate import reply_keys

if TYPE_CHECKING:
    from emailrouter.crm.connections import CrmConnections
    from emailrouter.ledger.store import Ledger
    from emailrouter.mime.models import DeliveryReport, DeliveryStatus, FeedbackReport, ParsedMessage
    from emailrouter.tenancy.models import TenantConfig

_SHOWN_OUTSIDERS = 5


class _OneTenant:
    """apply_ses_event looks tenants up by id; a report may only ever touch its own tenant."""

    def __init__(self, tenant: TenantConfig) -> None:
        self._tenant = tenant

    def get(self, tenant_id: str) -> TenantConfig:
        if tenant_id != self._tenant.tenant_id:
            raise KeyError(tenant_id)
        return self._tenant


COMPLAINT_EVENT = "Complaint"  # as SES names its complaint events


def is_report(parsed: ParsedMessage) -> bool:
    """Whether the message is a delivery report or an abuse report (never tracked as mail)."""
    return parsed.delivery_report is not None or parsed.feedback_report is not None


def apply_report(parsed: ParsedMessage, tenant: TenantConfig, ledger: Ledger, crm: CrmConnections) -> str:
    """Record the message's report on the outbound email it names; the filter reason."""
    if parsed.delivery_report is not None:
        return apply_delivery_report(parsed.delivery_report, tenant, ledger, crm)
    assert parsed.feedback_report is not None
    return apply_feedback_report(parsed.feedback_report, tenant, ledger, crm)


def reported_email(
    report: DeliveryReport | FeedbackReport, tenant: TenantConfig, ledger: Ledger
) -> str | None:
    """The id of the tenant's outbound email the report is about, or None."""
    if report.router_id:
        named = verify(report.router_id, deployment_keys().accepted())
        tenant_id, email_id = named or ("", "")
        if tenant_id == tenant.tenant_id and ledger.get_outbound(tenant_id, email_id) is not None:
            return email_id
    ids = [i for i in (report.original_message_id, *reversed(report.original_references)) if i]
    if not ids:
        return None
    # Our rendered Message-ID, or the one SES gave the message (what the recipient's server saw).
    keys = [key for message_id in ids for key in reply_keys(message_id)]
    found = ledger.get_many([(tenant.tenant_id, key) for key in keys])
    for key in keys:
        item = found.get((tenant.tenant_id, key))
        if item is not None:
            email_id = ThreadRef.from_item(item).email_id
            if ledger.get_outbound(tenant.tenant_id, email_id) is not None:
                return email_id
    return None


def sent_recipients(tenant: TenantConfig, email_id: str, crm: CrmConnections) -> set[str]:
    """The addresses the email was sent to (To, Cc, Bcc), lower-cased, read from the CRM as the
    send read them."""
    client = crm.for_tenant(tenant).client
    return {r.email.strip().lower() for r in recipients_of(client, email_id)}


def _addressed(status: DeliveryStatus, recipients: set[str]) -> str | None:
    """The address of ours the status is about: its Final-Recipient, else its Original-Recipient."""
    for address in (status.recipient, status.original_recipient):
        if address and address in recipients:
            return address
    return None


def _line(status: DeliveryStatus) -> str:
    return f"{status.recipient} {status.action} {status.status} {status.diagnostic}".strip()


def apply_delivery_report(
    report: DeliveryReport, tenant: TenantConfig, ledger: Ledger, crm: CrmConnections
) -> str:
    """Record the report on the outbound email; the filter reason says what was done."""
    email_id = reported_email(report, tenant, ledger)
    if email_id is None:
        reported = [s for s in report.statuses if s.action == "failed"] or list(report.statuses)
        detail = "; ".join(_line(s) for s in reported)[:500]
        return f"delivery status notification for mail the router did not send: {detail or 'no status'}"
    recipients = sent_recipients(tenant, email_id, crm) if report.statuses else set()
    ours = [(s, a) for s in report.statuses if (a := _addressed(s, recipients)) is not None]
    outsiders = sorted({s.recipient for s in report.statuses if _addressed(s, recipients) is None})
    outside = ""
    if outsiders:
        shown = ", ".join(outsiders[:_SHOWN_OUTSIDERS]) + (" …" if len(outsiders) > _SHOWN_OUTSIDERS else "")
        outside = f" (ignored, not a recipient of it: {shown})"
    if not ours:
        return f"delivery status notification for outbound email {email_id}: nothing recorded{outside}"[:900]
    failed = [(s, a) for s, a in ours if s.action == "failed"]
    permanent = [address for s, address in failed if s.status.startswith("5")]
    detail = "; ".join(_line(s) for s, _ in failed or ours)
    event = SesEvent(
        DSN_EVENT,
        "",
        tenant.tenant_id,
        email_id,
        f"{report.reporting_mta or 'remote server'}: {detail}"[:500],
        bool(permanent),
        tuple(dict.fromkeys(permanent)),
    )
    done = apply_ses_event(event, _OneTenant(tenant), ledger, crm)
    return f"delivery status notification for outbound email {email_id}: {done}{outside}"[:900]


def apply_feedback_report(
    report: FeedbackReport, tenant: TenantConfig, ledger: Ledger, crm: CrmConnections
) -> str:
    """Record an abuse report as a complaint on the outbound email; the filter reason."""
    kind = f"abuse report ({report.feedback_type}{', ' + report.reporter if report.reporter else ''})"
    email_id = reported_email(report, tenant, ledger)
    if email_id is None:
        return f"{kind} for mail the router did not send"[:900]
    recipients = sent_recipients(tenant, email_id, crm) if report.recipients else set()
    complaining = [a for a in report.recipients if a in recipients]
    outsiders = [a for a in report.recipients if a not in recipients]
    outside = ""
    if outsiders:
        shown = ", ".join(outsiders[:_SHOWN_OUTSIDERS]) + (" …" if len(outsiders) > _SHOWN_OUTSIDERS else "")
        outside = f" (ignored, not a recipient of it: {shown})"
    if outsiders and not complaining:
        return f"{kind} for outbound email {email_id}: nothing recorded{outside}"[:900]
    detail = f"complaint: {report.feedback_type} (by mail from {report.reporter or 'a feedback loop'})"
    event = SesEvent(COMPLAINT_EVENT, "", tenant.tenant_id, email_id, detail[:500], False, tuple(complaining))
    done = apply_ses_event(event, _OneTenant(tenant), ledger, crm)
    return f"{kind} for outbound email {email_id}: {done}{outside}"[:900]
