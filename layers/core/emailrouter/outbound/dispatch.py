"""dispatch_outbound's work: find CRM email waiting to be sent and queue one job per email."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from emailrouter.clock import iso, now
from emailrouter.crm.emails import STATUS_PENDING_SEND, STATUS_SENDING
from emailrouter.queues.messages import OutboundJob

if TYPE_CHECKING:
    from emailrouter.crm.connections import CrmConnections
    from emailrouter.ledger.store import Ledger
    from emailrouter.queues.sender import QueueSender
    from emailrouter.tenancy.models import TenantConfig

MAX_PER_RUN = 2000


@dataclass
class DispatchResult:
    tenant_id: str
    found: int = 0
    enqueued: int = 0


def dispatch_tenant(
    tenant: TenantConfig, crm: CrmConnections, ledger: Ledger, queue: QueueSender, queue_url: str
) -> DispatchResult:
    """Oldest first. Emails stuck in Sending past the tenant's delay are queued again: the
    send worker decides from the ledger whether they went out, and never sends twice."""
    result = DispatchResult(tenant.tenant_id)
    if not (tenant.enabled and tenant.outbound.enabled):
        return result
    client = crm.for_tenant(tenant).client
    delay = tenant.outbound.sending_status_delay_minutes
    stuck_before = iso(now() - timedelta(minutes=delay))
    query = (
        "emails?$select=activityid,createdon&$orderby=createdon asc&$filter=directioncode eq true and "
        f"(statuscode eq {STATUS_PENDING_SEND} or (statuscode eq {STATUS_SENDING} and modifiedon lt {stuck_before}))"
    )
    rows = client.get_all(query)[:MAX_PER_RUN]
    result.found = len(rows)
    jobs = []
    for row in rows:
        email_id = str(row["activityid"])
        if ledger.enqueue_outbound(tenant.tenant_id, email_id, requeue_after_seconds=delay * 60):
            jobs.append(OutboundJob(tenant_id=tenant.tenant_id, email_id=email_id, enqueued_at=iso()))
    queue.send(queue_url, tenant.tenant_id, jobs)
    result.enqueued = len(jobs)
    return result
