"""The inbound worker's batch steps, as deliver_inbound calls them."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from emailrouter import aws
from emailrouter.observability import count, logger
from emailrouter.routing.acknowledge import acknowledge_mailbox
from emailrouter.routing.outcomes import DeliveryResult, TenantDisabledError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from emailrouter.queues.messages import InboundMessage
    from emailrouter.runtime import Runtime


def deliver_messages(
    runtime: Runtime, items: list[tuple[InboundMessage, str]], deadline: Callable[[], float] | None = None
) -> list[DeliveryResult | BaseException]:
    """Deliver a batch of (message, owner); log each outcome and count them per tenant."""
    results = runtime.delivery.deliver_batch(items, deadline)
    counts: Counter[tuple[str, str]] = Counter()
    for (message, _owner), result in zip(items, results, strict=True):
        if isinstance(result, DeliveryResult):
            logger.info(
                "message delivered",
                tenant_id=message.tenant_id,
                mailbox_id=message.mailbox_id,
                message_key=result.message_key,
                outcome=result.outcome,
                reason=result.reason,
                correlation=result.correlation,
                crm_email_id=result.crm_email_id,
            )
            counts[(message.tenant_id, f"inbound_{result.outcome.value}")] += 1
            if result.correlation:
                counts[
                    (message.tenant_id, f"inbound_correlated_by_{result.correlation.replace('-', '_')}")
                ] += 1
        else:
            logger.warning(
                "message returned to its queue",
                tenant_id=message.tenant_id,
                mailbox_id=message.mailbox_id,
                reason=f"{type(result).__name__}: {result}"[:300],
            )
            counts[(message.tenant_id, "inbound_retried")] += 1
    for (tenant_id, name), value in counts.items():
        count(name, tenant_id, value)
    return results


def hold_for_disabled_tenants(
    runtime: Runtime, items: list[tuple[InboundMessage, str]], results: list[DeliveryResult | BaseException]
) -> set[str]:
    """Queue again, delayed, the messages of tenants disabled since they were fetched; returns
    the owners (SQS message ids) of those queued again, which are then done in this batch.

    A disabled tenant's mail is neither delivered nor lost: it comes back every
    `disabled_tenant_retry_seconds` until the tenant is enabled again (as a new message, so its
    receive count never reaches the dead-letter queue). A message that cannot be queued again
    stays failed and returns to the queue the ordinary way.
    """
    held: set[str] = set()
    delay = runtime.settings.disabled_tenant_retry_seconds
    for (message, owner), result in zip(items, results, strict=True):
        if not isinstance(result, TenantDisabledError):
            continue
        try:
            aws.client("sqs").send_message(
                QueueUrl=runtime.settings.inbound_queue_url,
                MessageBody=message.model_dump_json(),
                MessageGroupId=message.tenant_id,
                DelaySeconds=delay,
            )
        except Exception as error:
            logger.warning("disabled tenant's message not queued again", reason=str(error)[:300])
            continue
        held.add(owner)
        count("inbound_held", message.tenant_id)
        logger.info(
            "message held: its tenant is disabled",
            tenant_id=message.tenant_id,
            mailbox_id=message.mailbox_id,
            retry_seconds=delay,
        )
    return held


def acknowledge_batch(runtime: Runtime, delivered: Iterable[InboundMessage]) -> int:
    """Delete at the source what this batch finished, one session per mailbox.

    Best effort, after the outcomes are committed: a failure here, of whatever kind, loses nothing
    (the ledger keeps the ack pending and the next poll retries it) and must not send a batch of
    finished messages, other tenants' among them, back to the queue to be delivered again.
    """
    runtime.faults.reach("before_source_ack")
    mailboxes = sorted({(m.tenant_id, m.mailbox_id) for m in delivered})
    deleted = 0
    for tenant_id, mailbox_id in mailboxes:
        try:
            tenant = runtime.tenant_cache.get(tenant_id)
            mailbox = tenant.mailbox(mailbox_id)
            if not mailbox.delete_after_processing:
                continue
            deleted += len(
                acknowledge_mailbox(
                    runtime.ledger,
                    tenant,
                    mailbox,
                    runtime.secrets,
                    allow_private=runtime.settings.local_mode,
                )
            )
        except Exception as error:
            logger.warning(
                "acknowledgement deferred to the next poll",
                tenant_id=tenant_id,
                mailbox_id=mailbox_id,
                reason=f"{type(error).__name__}: {error}"[:300],
            )
    return deleted
