"""deliver_inbound: each queued message → one outcome (CRM email, duplicate, filtered, quarantined).

The batch is delivered together (one ledger transaction, one CRM `$batch` per tenant); Powertools'
batch processor then reports the messages that must return to the queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from emailrouter.crm.deadline import lambda_deadline
from emailrouter.observability import logger, metrics, tracer
from emailrouter.queues.messages import InboundMessage, InboundRecord
from emailrouter.routing.inbound import acknowledge_batch, deliver_messages, hold_for_disabled_tenants
from emailrouter.routing.outcomes import DeliveryResult
from emailrouter.runtime import get_runtime

processor = BatchProcessor(event_type=EventType.SQS, model=InboundRecord, raise_on_entire_batch_failure=False)


def _reporter(outcomes: dict[str, object]) -> Callable[[InboundRecord], None]:
    """The batch processor's record handler: raises for the messages that go back to the queue."""

    def record_handler(record: InboundRecord) -> None:
        outcome = outcomes.get(record.messageId)
        if isinstance(outcome, BaseException):
            raise outcome

    return record_handler


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    runtime = get_runtime()
    items: list[tuple[InboundMessage, str]] = []
    for raw in event.get("Records", []):
        try:
            items.append((InboundRecord.model_validate(raw).body, raw["messageId"]))
        except (ValidationError, KeyError):
            continue  # the batch processor reports it as failed when it parses it again
    deadline = lambda_deadline(context)
    with runtime.crm.within(deadline):
        results = deliver_messages(runtime, items, deadline)
    held = hold_for_disabled_tenants(runtime, items, results)
    outcomes: dict[str, object] = {
        owner: result for (_message, owner), result in zip(items, results, strict=True) if owner not in held
    }
    response = process_partial_response(
        event=event, record_handler=_reporter(outcomes), processor=processor, context=context
    )
    delivered = [m for (m, _owner), r in zip(items, results, strict=True) if isinstance(r, DeliveryResult)]
    acknowledge_batch(runtime, delivered)
    return response
