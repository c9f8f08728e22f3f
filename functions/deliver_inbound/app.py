"""deliver_inbound: each queued message → one outcome (CRM email, duplicate, filtered, quarantined)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.typing import LambdaContext

from emailrouter.observability import count, logger, metrics, tracer
from emailrouter.queues.messages import InboundMessage, InboundRecord
from emailrouter.routing.inbound import acknowledge_batch, deliver_one
from emailrouter.runtime import get_runtime

processor = BatchProcessor(event_type=EventType.SQS, model=InboundRecord, raise_on_entire_batch_failure=False)
_delivered: list[InboundMessage] = []


def record_handler(record: InboundRecord) -> None:
    message = record.body
    logger.append_keys(tenant_id=message.tenant_id, mailbox_id=message.mailbox_id)
    result = deliver_one(get_runtime(), message, owner=record.messageId)
    logger.info(
        "message delivered", outcome=result.outcome, reason=result.reason, crm_email_id=result.crm_email_id
    )
    count(f"inbound_{result.outcome.value}", message.tenant_id)
    _delivered.append(message)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    _delivered.clear()
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    acknowledge_batch(get_runtime(), _delivered)
    return response
