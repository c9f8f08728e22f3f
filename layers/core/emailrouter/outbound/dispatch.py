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

Time. A run has the Lambda's remaining time (less a margin, `crm.deadline`), and each tenant gets
a fair share of what is left when its turn comes: the time left divided by the tenants still to
go, so a fast tenant leaves its unused share to the others and a hung organization or tarpit URL
costs at most its own share. Its Dataverse client retries only within that share, and no page is
requested after it. A tenant whose CRM keeps timing out is skipped without a request while its
circuit breaker is open (`crm.breaker`). A job's ledger record is first a claim that lasts no
longer than the invocation can live, confirmed once SQS has the job: a run that Lambda kills
before queueing holds those emails back for a minute or so, not for the sending-status delay.
"""

from __future__ import annotations

import heapq
import re
import time
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import islice
from typing import TYPE_CHECKING, Any

from emailrouter.clock import iso, now
from emailrouter.crm.emails import STATUS_PENDING_SEND, STATUS_SENDING
from emailrouter.crm.errors import CrmError, CrmTimeoutError
from emailrouter.egress import ForbiddenHostError
from emailrouter.queues.messages import OutboundJob
from emailrouter.queues.sender import SQS_BATCH
from emailrouter.routing.faults import NO_FAULTS, FaultPoints
from emailrouter.tenancy.errors import SecretAccessError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from emailrouter.crm.breaker import CrmBreaker
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
    timed_out: bool = False  # the error is the CRM not answering in time
    jobs: list[OutboundJob] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class RunBudget:
    """When a dispatch run must be done (`deadline`, monotonic) and how long a job's ledger claim
    lasts before SQS confirms it (`claim_seconds`: as long as the invocation can live)."""

    deadline: float
    claim_seconds: int | None = None
    clock: Callable[[], float] = time.monotonic

    def share(self, tenants_left: int) -> float:
        """The moment the next tenant's turn ends: the time left divided among the tenants left."""
        now = self.clock()
        return now + max(0.0, self.deadline - now) / max(1, tenants_left)


def dispatch_tenants(
    tenants: Iterable[TenantConfig],
    crm: CrmConnections,
    ledger: Ledger,
    queue: QueueSender,
    queue_url: str,
    budget: RunBudget | None = None,
    breaker: CrmBreaker | None = None,
    faults: FaultPoints = NO_FAULTS,
) -> list[DispatchResult]:
    """Collect every tenant's new jobs, each tenant within its share of the run, then queue them
    round-robin across tenants.

    A tenant whose CRM or configuration fails, or whose breaker is open, is reported (``error``)
    and the others still dispatch. Whatever was collected is queued even when the run is
    interrupted, and each job's claim is confirmed once SQS accepted it.
    """
    active = [tenant for tenant in tenants if tenant.enabled and tenant.outbound.enabled]
    results: list[DispatchResult] = []
    try:
        for index, tenant in enumerate(active):
            results.append(result := DispatchResult(tenant.tenant_id))
            until = budget.share(len(active) - index) if budget is not None else None
            claim = budget.claim_seconds if budget is not None else None
            if breaker is None:
                collect_jobs(tenant, crm, ledger, into=result, until=until, claim_seconds=claim)
                continue
            refusal, health = breaker.refusal(tenant.tenant_id)
            if refusal is not None:
                result.error = refusal
                continue
            collect_jobs(tenant, crm, ledger, into=result, until=until, claim_seconds=claim)
            if result.timed_out:
                breaker.record_timeout(tenant.tenant_id, result.error)
            else:
                breaker.record_success(tenant.tenant_id, health)
    finally:
        faults.reach("before_outbound_enqueue")
        enqueue_round_robin(queue, queue_url, [result.jobs for result in results], ledger)
    for result in results:
        result.enqueued = len(result.jobs)
    return results


def collect_jobs(
    tenant: TenantConfig,
    crm: CrmConnections,
    ledger: Ledger,
    into: DispatchResult | None = None,
    until: float | None = None,
    claim_seconds: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> DispatchResult:
    """Up to `max_jobs_per_dispatch` new jobs for one tenant, oldest email first, all requests
    made before `until` (monotonic) and retried only until then.

    Emails stuck in Sending past the tenant's delay are picked up again: the send worker decides
    from the ledger whether they went out, and never sends twice. Jobs go into `into` as they
    are recorded, so a caller interrupted mid-way still holds them.
    """
    result = into or DispatchResult(tenant.tenant_id)
    config = tenant.outbound
    if not (tenant.enabled and config.enabled):
        return result
    delay_seconds = config.sending_status_delay_minutes * 60
    client: DataverseClient | None = None
    try:
        client = crm.for_tenant(tenant).client
        if until is not None:
            client.set_deadline(lambda: until)
        rows = pending_emails(client, config, until, clock)
        for row in islice(rows, MAX_SCANNED_PER_RUN):
            result.found += 1
            email_id = str(row["activityid"])
            # A stuck email whose send intent is recorded gets a job once per delay period; the
            # worker settles the intent from SES's events instead of sending on a guess.
            stuck = row.get("statuscode") == STATUS_SENDING
            if ledger.enqueue_outbound(
                tenant.tenant_id, email_id, requeue_after_seconds=delay_seconds, claim_seconds=claim_seconds
            ) or (stuck and ledger.requeue_stuck(tenant.tenant_id, email_id, delay_seconds)):
                result.jobs.append(
                    OutboundJob(tenant_id=tenant.tenant_id, email_id=email_id, enqueued_at=iso())
                )
                if len(result.jobs) >= config.max_jobs_per_dispatch:
                    break
    except TENANT_FAILURES as error:
        result.error = f"{type(error).__name__}: {error}"
        result.timed_out = isinstance(error, CrmTimeoutError)
    finally:
        if client is not None and until is not None:
            client.set_deadline(None)
    return result


def pending_emails(
    client: DataverseClient,
    config: OutboundConfig,
    until: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[dict[str, Any]]:
    """Outgoing emails to send (Pending Send, or stuck in Sending), oldest first, read lazily;
    no page is requested at or after `until` (monotonic).

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
        return _pages(client, _email_query(base_filter), page_size, until, clock)
    mailbox_ids = router_mailbox_ids(client)
    streams = [
        _pages(client, _email_query(f"{base_filter} and ({_any_mailbox(group)})"), page_size, until, clock)
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


def enqueue_round_robin(
    queue: QueueSender,
    queue_url: str,
    groups: Sequence[Sequence[OutboundJob]],
    ledger: Ledger | None = None,
) -> None:
    """Queue the jobs interleaved across tenants, each with its tenant as message group, ten
    per request; with `ledger`, each job's claim is confirmed once SQS accepted its request."""
    jobs = interleave(groups)
    for start in range(0, len(jobs), SQS_BATCH):
        chunk = jobs[start : start + SQS_BATCH]
        queue.send_grouped(queue_url, [(job.tenant_id, job) for job in chunk])
        if ledger is not None:
            for job in chunk:
                ledger.confirm_enqueued(job.tenant_id, job.email_id)


def _email_query(filter_text: str) -> str:
    # activityid breaks createdon ties (second precision), so paging is stable.
    return f"emails?$select=activityid,createdon,statuscode&$orderby=createdon asc,activityid asc&$filter={filter_text}"


def _any_mailbox(mailbox_ids: Sequence[str]) -> str:
    return " or ".join(f"_sendermailboxid_value eq {mailbox_id}" for mailbox_id in mailbox_ids)


def _pages(
    client: DataverseClient,
    query: str,
    page_size: int,
    until: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[dict[str, Any]]:
    """Rows of a query, one page at a time, following @odata.nextLink only as far as read and
    only while there is time left before `until`."""
    next_url: str | None = query
    while next_url:
        if until is not None and clock() >= until:
            return  # the tenant's share of the run is used up; the next run goes on from here
        body = client.get(next_url, headers={"Prefer": f"odata.maxpagesize={page_size}"})
        yield from body.get("value", [])
        next_url = body.get("@odata.nextLink")


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _age(row: dict[str, Any]) -> tuple[str, str]:
    """Sort key matching the query's $orderby; Dataverse's date-times are uniform UTC text."""
    return (str(row.get("createdon") or ""), str(row.get("activityid") or ""))
