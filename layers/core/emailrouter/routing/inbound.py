"""The inbound worker's per-record and per-batch steps, as deliver_inbound calls them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emailrouter.observability import logger
from emailrouter.routing.acknowledge import acknowledge_mailbox
from emailrouter.sources.errors import SourceError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from emailrouter.queues.messages import InboundMessage
    from emailrouter.routing.outcomes import DeliveryResult
    from emailrouter.runtime import Runtime


def deliver_one(runtime: Runtime, message: InboundMessage, owner: str) -> DeliveryResult:
    return runtime.delivery.deliver(message, owner)


def acknowledge_batch(runtime: Runtime, delivered: Iterable[InboundMessage]) -> int:
    """Delete at the source what this batch finished, one session per mailbox.

    A failure here loses nothing: the ledger keeps the ack pending and the next poll retries it.
    """
    runtime.faults.reach("before_source_ack")
    mailboxes = sorted({(m.tenant_id, m.mailbox_id) for m in delivered})
    deleted = 0
    for tenant_id, mailbox_id in mailboxes:
        tenant = runtime.tenants.get(tenant_id)
        mailbox = tenant.mailbox(mailbox_id)
        if not mailbox.delete_after_processing:
            continue
        try:
            deleted += len(
                acknowledge_mailbox(
                    runtime.ledger,
                    tenant,
                    mailbox,
                    runtime.secrets,
                    allow_private=runtime.settings.local_mode,
                )
            )
        except SourceError as error:
            logger.warning(
                "acknowledgement deferred to the next poll", tenant_id=tenant_id, reason=str(error)
            )
    return deleted
