"""Outbound steps as the functions call them: dispatch per tenant, send one, apply an SES event."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.idempotency import idempotent_function

from emailrouter.crm.deadline import lambda_deadline, time_left
from emailrouter.crm.errors import CrmTimeoutError
from emailrouter.observability import logger
from emailrouter.outbound.dispatch import RunBudget, dispatch_tenants
from emailrouter.outbound.events import apply_ses_event, parse_ses_event
from emailrouter.outbound.send import SendResult
from emailrouter.routing.outcomes import RetryLater

if TYPE_CHECKING:
    from collections.abc import Callable

    from emailrouter.crm.deadline import RemainingTime
    from emailrouter.outbound.dispatch import DispatchResult
    from emailrouter.outbound.events import SesEvent
    from emailrouter.queues.messages import OutboundJob
    from emailrouter.runtime import Runtime


def dispatch_all_tenants(runtime: Runtime, context: RemainingTime | None = None) -> list[DispatchResult]:
    """Every tenant's new send jobs, queued round-robin across tenants (see outbound.dispatch),
    within the invocation's remaining time when `context` gives it.

    A tenant whose CRM is unreachable is reported and skipped; the others still dispatch.
    """
    budget = None
    if context is not None:
        # A job's claim lasts as long as this invocation can live: past that it was queued or lost.
        claim_seconds = math.ceil(max(0, context.get_remaining_time_in_millis()) / 1000) + 1
        budget = RunBudget(lambda_deadline(context)(), claim_seconds)
    results = dispatch_tenants(
        runtime.tenants.all(),
        runtime.crm,
        runtime.ledger,
        runtime.queue,
        runtime.settings.outbound_queue_url,
        budget,
        runtime.breaker,
        runtime.faults,
    )
    for result in results:
        if result.error:
            logger.warning("outbound dispatch failed", tenant_id=result.tenant_id, reason=result.error)
    return results


def send_one(runtime: Runtime, job: OutboundJob, deadline: Callable[[], float] | None = None) -> SendResult:
    """Send one job's email, if the invocation has time left for it (`deadline`, monotonic):
    otherwise the job goes back to its queue (RetryLater) without a request."""
    if deadline is not None and time_left(deadline) <= 0:
        raise RetryLater("no time left in this invocation for another send")
    tenant = runtime.tenants.get(job.tenant_id)
    if not (tenant.enabled and tenant.outbound.enabled):
        # Disabled after the job was queued: not sent. The email stays Pending Send, and its
        # ledger record no longer holds it back, so the first dispatch after re-enabling takes it.
        runtime.ledger.release_queued(job.tenant_id, job.email_id)
        return SendResult(job.tenant_id, job.email_id, "skipped", "tenant or its outbound mail is disabled")
    refusal, health = runtime.breaker.refusal(job.tenant_id)
    if refusal is not None:
        # Not a request to an organization that keeps timing out; dispatch queues the email
        # again once the breaker lets it through (a job returned to its queue would reach the DLQ).
        runtime.ledger.release_queued(job.tenant_id, job.email_id)
        return SendResult(job.tenant_id, job.email_id, "skipped", refusal)
    try:
        result = runtime.outbound.send(tenant, job.email_id)
    except CrmTimeoutError as error:
        runtime.breaker.record_timeout(job.tenant_id, f"{type(error).__name__}: {error}")
        raise
    runtime.breaker.record_success(job.tenant_id, health)
    return result


def handle_ses_event(runtime: Runtime, body: str) -> tuple[SesEvent, str]:
    """Apply each SES event once, keyed on SES's message id and the event type and time."""
    event = parse_ses_event(body)
    kit = runtime.idempotency

    @idempotent_function(data_keyword_argument="key", persistence_store=kit.persistence, config=kit.config)
    def _apply(key: dict[str, Any]) -> str:
        return apply_ses_event(event, runtime.tenants, runtime.ledger, runtime.crm)

    outcome = _apply(key={"ses": event.ses_message_id, "type": event.event_type, "detail": event.detail})
    return event, outcome
