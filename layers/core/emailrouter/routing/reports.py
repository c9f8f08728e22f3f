"""Delivery status notifications (multipart/report) that reach a tracked mailbox: matched to the
outbound email they report on and recorded there — the same way SES bounce events are — never
tracked as new mail."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emailrouter.ledger.threads import ThreadRef
from emailrouter.outbound.events import DSN_EVENT, SesEvent, apply_ses_event
from emailrouter.routing.correlate import reply_keys

if TYPE_CHECKING:
    from emailrouter.crm.connections import CrmConnections
    from emailrouter.ledger.store import Ledger
    from emailrouter.mime.models import DeliveryReport
    from emailrouter.tenancy.models import TenantConfig


class _OneTenant:
    """apply_ses_event looks tenants up by id; a report may only ever touch its own tenant."""

    def __init__(self, tenant: TenantConfig) -> None:
        self._tenant = tenant

    def get(self, tenant_id: str) -> TenantConfig:
        if tenant_id != self._tenant.tenant_id:
            raise KeyError(tenant_id)
        return self._tenant


def reported_email(report: DeliveryReport, tenant: TenantConfig, ledger: Ledger) -> str | None:
    """The id of the tenant's outbound email the report is about, or None."""
    if report.router_id and "/" in report.router_id:
        tenant_id, email_id = report.router_id.split("/", 1)
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


def apply_delivery_report(
    report: DeliveryReport, tenant: TenantConfig, ledger: Ledger, crm: CrmConnections
) -> str:
    """Record the report on the outbound email; the filter reason says what was done."""
    failed = [s for s in report.statuses if s.action == "failed"]
    shown = failed or list(report.statuses)
    detail = "; ".join(f"{s.recipient} {s.action} {s.status} {s.diagnostic}".strip() for s in shown)[:500]
    email_id = reported_email(report, tenant, ledger)
    if email_id is None:
        return f"delivery status notification for mail the router did not send: {detail or 'no status'}"
    permanent = any(s.status.startswith("5") for s in failed)
    event = SesEvent(
        DSN_EVENT,
        "",
        tenant.tenant_id,
        email_id,
        f"{report.reporting_mta or 'remote server'}: {detail}"[:500],
        permanent,
        tuple(s.recipient for s in failed if s.status.startswith("5") and s.recipient),
    )
    done = apply_ses_event(event, _OneTenant(tenant), ledger, crm)
    return f"delivery status notification for outbound email {email_id}: {done}"
