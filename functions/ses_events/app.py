"""ses_events: SES bounce/complaint/delivery events (SNS → SQS) applied to the CRM email and ledger."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from emailrouter.crm.deadline import lambda_deadline
from emailrouter.observability import count, logger, metrics, tracer
from emailrouter.outbound.jobs import handle_ses_event
from emailrouter.runtime import get_runtime

processor = BatchProcessor(
    event_type=EventType.SQS, model=SqsRecordModel, raise_on_entire_batch_failure=False
)


def record_handler(record: SqsRecordModel) -> None:
    event, outcome = handle_ses_event(get_runtime(), record.body)
    if event.tenant_id:
        logger.append_keys(tenant_id=event.tenant_id, email_id=event.email_id)
        count(f"ses_{event.event_type.lower()}", event.tenant_id)
    logger.info("SES event", event_type=event.event_type, outcome=outcome)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    runtime = get_runtime()
    runtime.register_context(context)
    with runtime.crm.within(lambda_deadline(context)):
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
