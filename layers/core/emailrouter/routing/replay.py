"""Replaying a quarantined message from its kept raw MIME, once, after a fix; or discarding it.

A quarantined message stays at its source (it is not acknowledged) and its raw copy stays under
`quarantine/` in the raw mail bucket, until one of the two happens: a replay that ends in another
outcome acknowledges it like any delivered message, a discard lets the next poll delete it there
(for mailboxes with delete_after_processing) and removes the raw copy.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from emailrouter.clock import iso
from emailrouter.ledger.models import InboundRecord, Outcome
from emailrouter.queues.messages import InboundMessage
from emailrouter.routing.deliver import CLAIM_TTL_SECONDS
from emailrouter.routing.outcomes import DeliveryResult

if TYPE_CHECKING:
    from emailrouter.runtime import Runtime


class ReplayError(Exception):
    pass


def replay_quarantined(runtime: Runtime, tenant_id: str, message_key: str) -> DeliveryResult:
    """Re-run the pipeline on the kept raw message. Reopening is conditional on the record
    still being quarantined, so two replays cannot both run."""
    record = runtime.ledger.get(tenant_id, message_key)
    if record is None:
        raise ReplayError(f"tenant {tenant_id} has no message {message_key}")
    if record.outcome is not Outcome.QUARANTINED or not record.raw_s3_key:
        raise ReplayError(
            f"message {message_key} is {record.outcome or record.status}, not quarantined with raw kept"
        )
    owner = f"replay:{uuid.uuid4()}"
    try:
        runtime.ledger.reopen(tenant_id, message_key, owner, CLAIM_TTL_SECONDS)
    except Exception as error:
        raise ReplayError(
            f"message {message_key} could not be reopened (replayed already?): {error}"
        ) from None
    size = runtime.raw_store.size(tenant_id, record.raw_s3_key)
    message = InboundMessage(
        tenant_id=tenant_id,
        mailbox_id=record.mailbox_id,
        source_ref=record.source_ref or f"replay-{message_key}",
        fetched_at=iso(),
        size=size,
        raw_s3_key=record.raw_s3_key,
        replay_of=message_key,
    )
    result = runtime.delivery.deliver(message, owner)
    if result.message_key != message_key:
        # The fixed pipeline identifies the message differently: close the old record, pointing at the new one.
        runtime.ledger.complete(
            tenant_id,
            message_key,
            owner,
            Outcome.QUARANTINED,
            reason=f"replayed as {result.message_key}: {result.outcome.value}",
            raw_s3_key=record.raw_s3_key,
        )
    return result


def discard_quarantined(runtime: Runtime, tenant_id: str, message_key: str, note: str = "") -> InboundRecord:
    """Give up on a quarantined message: it can no longer be replayed, its raw copy is removed,
    and its arrival is released for deletion at the source. Runs once (a conditional update)."""
    record = runtime.ledger.get(tenant_id, message_key)
    if record is None:
        raise ReplayError(f"tenant {tenant_id} has no message {message_key}")
    if record.outcome is not Outcome.QUARANTINED or record.status != "done" or record.discarded_at:
        state = "discarded already" if record.discarded_at else (record.outcome or record.status)
        raise ReplayError(f"message {message_key} is {state}, not a quarantined message to discard")
    reason = f"{record.reason} (discarded{': ' + note if note else ''})"[:500]
    try:
        runtime.ledger.discard(tenant_id, message_key, reason)
    except Exception as error:
        raise ReplayError(
            f"message {message_key} could not be discarded (replayed or discarded?): {error}"
        ) from None
    if record.raw_s3_key:
        runtime.raw_store.delete(tenant_id, record.raw_s3_key)
    if record.mailbox_id and record.source_ref:
        runtime.ledger.release_source(tenant_id, record.mailbox_id, record.source_ref)
    discarded = runtime.ledger.get(tenant_id, message_key)
    assert discarded is not None
    return discarded
