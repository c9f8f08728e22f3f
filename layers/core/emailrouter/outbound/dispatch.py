"""dispatch_outbound's work: find CRM email waiting to be sent and queue one job per email, fairly.

Fairness is a property of this module, not only of the queue. SQS fair queues (MessageGroupId =
tenant) keep a noisy tenant from starving the others in AWS, but the local stack's moto delivers
in insertion order, and a queue can only be fair about what is in it. So each run

1. takes at most `outbound.max_jobs_per_dispatch` *new* jobs per tenant (oldest first, in pages),
   so a backlog of thousands enters the queue a slice per minute, not all at once; and
2. enqueues every tenant's jobs interleaved round-robin (A1, B1, C1, A2, B2, …), so within one
   run no tenant's backlog sits in front of another tenant's first email.

No duplicate jobs: the ledger's conditional `enqueue_outbound` records a job before it is queued
and refuses a second while the first is still queued.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import islice
from typing import TYPE_CHECKING, Any

from emailrouter.clock import iso, now
from emailrouter.crm.emails import STATUS_PENDING_SEND, STATUS_SENDING
from emailrouter.crm.errors import CrmError
from emailrouter.egress import ForbiddenHostError
from emailrouter.queues.messages import OutboundJob
from emailrouter.tenancy.errors import SecretAccessError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from emailrouter.crm.client import DataverseClient
    from emailrouter.crm.connections import CrmConnections
    from emailrouter.ledger.store import Ledger
    from emailrouter.queues.sender import QueueSender
    from emailrouter.tenancy.models import OutboundConfig, TenantConfig

# Rows read per tenant per run, queued or not: bounds the Dataverse requests (and ledger writes)
# one run spends paging past a backlog whose jobs are already waiting in the queue.
MAX_SCANNED_PER_RUN = 2000
# Page size is the tenant's cap, kept within these bounds: a tiny cap must not turn paging past
# queued rows into one request per row, and Dataverse pages hold at most 5,000 rows.
MIN_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Mailbox ids per `or` group in $filter: keeps each GET well under URL length limits.
MAILBOX_IDS_PER_QUERY = 50
# Server-Side Synchronization or Email Router (mailbox.outgoingemaildeliverymethod).
DELIVERY_ROUTER = 2

# What one tenant's setup can get wrong (CRM down or refusing us, bad secret, forbidden or
# unresolvable host): reported for that tenant; anything else is ours and fails the run.
TENANT_FAILURES = (CrmError, SecretAccessError, ForbiddenHostError, OSError)

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass
class DispatchResult:
    """One tenant's run: rows read, jobs found and queued, and why it stopped early, if it did."""

    tenant_id: str
    found: int = 0
    enqueued: int = 0
    error: str = ""
    jobs: list[OutboundJob] = field(default_factory=list, repr=False)


def dispatch_tenants(
    tenants: Iterable[TenantConfig],
    crm: CrmConnections,
    ledger: Ledger,
    queue: QueueSender,
    queue_url: str,
) -> list[DispatchResult]:
    """Collect every tenant's new jobs, then queue them round-robin across tenants.

    A tenant whose CRM or configuration fails is reported (``error``) and the others still
    dispatch. Jobs are recorded in the ledger as they are found, so whatever was collected is
    queued even when the run is interrupted: otherwise the ledger would hold those emails back
    for the sending-status delay.
    """
    results: list[DispatchResult] = []
    try:
        for tenant in tenants:
            results.append(result := DispatchResult(tenant.tenant_id))
            collect_jobs(tenant, crm, ledger, into=result)
    finally:
        enqueue_round_robin(queue, queue_url, [result.jobs for result in results])
    for result in results:
        result.enqueued = len(result.jobs)
    return results


def collect_jobs(
    tenant: TenantConfig, crm: CrmConnections, ledger: Ledger, into: DispatchResult | None = None
) -> DispatchResult:
    """Up to `max_jobs_per_dispatch` new jobs for one tenant, oldest email first.

    Emails stuck in Sending past the tenant's delay are picked up again: the send worker decides
    from the ledger whether they went out, and never sends twice. Jobs go into `into` as they
    are recorded, so a caller interrupted mid-way still holds them.
    """
    result = into or DispatchResult(tenant.tenant_id)
    config = tenant.outbound
    if not (tenant.enabled and config.enabled):
        return result
    delay_seconds = config.sending_status_delay_minutes * 60
    try:
        client = crm.for_tenant(tenant).client
        for row in islice(pending_emails(client, config), MAX_SCANNED_PER_RUN):
            result.found += 1
            email_id = str(row["activityid"])
            # A stuck email whose send intent is recorded gets a job once per delay period; the
            # worker settles the intent from SES's events instead of sending on a guess.
            stuck = row.get("statuscode") == STATUS_SENDING
            if ledger.enqueue_outbound(tenant.tenant_id, email_id, requeue_after_seconds=delay_seconds) or (
                stuck and ledger.requeue_stuck(tenant.tenant_id, email_id, delay_seconds)
            ):
                result.jobs.append(
                    OutboundJob(tenant_id=tenant.tenant_id, email_id=email_id, enqueued_at=iso())
                )
                if len(result.jobs) >= config.max_jobs_per_dispatch:
                    break
    except TENANT_FAILURES as error:
        result.error = f"{type(error).__name__}: {error}"
    return result


def pending_emails(client: DataverseClient, config: OutboundConfig) -> Iterator[dict[str, Any]]:
    """Outgoing emails to send (Pending Send, or stuck in Sending), oldest first, read lazily.

    With `only_router_mailboxes`, only emails whose sending mailbox delivers outgoing mail
    through the router; Dataverse cannot join in $filter, so the mailbox ids go in `or` groups,
    one query per group, and the groups' streams are merged back into one oldest-first order.
    """
    stuck_before = iso(now() - timedelta(minutes=config.sending_status_delay_minutes))
    status = (
        f"(statuscode eq {STATUS_PENDING_SEND} or "
        f"(statuscode eq {STATUS_SENDING} and modifiedon lt {stuck_before}))"
    )
    base_filter = f"directioncode eq true and {status}"
    page_size = min(max(config.max_jobs_per_dispatch, MIN_PAGE_SIZE), MAX_PAGE_SIZE)
    if not config.only_router_mailboxes:
        return _pages(client, _email_query(base_filter), page_size)
    mailbox_ids = router_mailbox_ids(client)
    streams = [
        _pages(client, _email_query(f"{base_filter} and ({_any_mailbox(group)})"), page_size)
        for group in _chunks(mailbox_ids, MAILBOX_IDS_PER_QUERY)
    ]
    return heapq.merge(*streams, key=_age)


def router_mailbox_ids(client: DataverseClient) -> list[str]:
    """The organization's mailboxes whose outgoing mail goes through the router (one request)."""
    rows = client.get_all(
        f"mailboxes?$select=mailboxid&$filter=outgoingemaildeliverymethod eq {DELIVERY_ROUTER}",
        page_size=5000,
    )
    # Only GUIDs reach the next $filter, whatever the organization returned.
    return [str(row["mailboxid"]) for row in rows if _GUID.match(str(row.get("mailboxid", "")))]


def interleave[T](groups: Sequence[Sequence[T]]) -> list[T]:
    """Round-robin: every group's 1st item, then every group's 2nd, and so on.

    >>> interleave([["a1", "a2", "a3"], ["b1"], ["c1", "c2"]])
    ['a1', 'b1', 'c1', 'a2', 'c2', 'a3']
    """
    longest = max((len(group) for group in groups), default=0)
    return [group[index] for index in range(longest) for group in groups if index < len(group)]


def enqueue_round_robin(queue: QueueSender, queue_url: str, groups: Sequence[Sequence[OutboundJob]]) -> None:
    """Queue the jobs interleaved across tenants, each with its tenant as message group, ten
    per request."""
    queue.send_grouped(queue_url, [(job.tenant_id, job) for job in interleave(groups)])


def _email_query(filter_text: str) -> str:
    # activityid breaks createdon ties (second precision), so paging is stable.
    return f"emails?$select=activityid,createdon,statuscode&$orderby=createdon asc,activityid asc&$filter={filter_text}"


def _any_mailbox(mailbox_ids: Sequence[str]) -> str:
    return " or ".join(f"_sendermailboxid_value eq {mailbox_id}" for mailbox_id in mailbox_ids)


def _pages(client: DataverseClient, query: str, page_size: int) -> Iterator[dict[str, Any]]:
    """Rows of a query, one page at a time, following @odata.nextLink only as far as read."""
    next_url: str | None = query
    while next_url:
        body = client.get(next_url, headers={"Prefer": f"odata.maxpagesize={page_size}"})
        yield from body.get("value", [])
        next_url = body.get("@odata.nextLink")


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _age(row: dict[str, Any]) -> tuple[str, str]:
    """Sort key matching the query's $orderby; Dataverse's date-times are uniform UTC text."""
    return (str(row.get("createdon") or ""), str(row.get("activityid") or ""))
