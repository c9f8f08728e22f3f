"""send_outbound: one job → the CRM email sent once through SES and marked Sent (or Failed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.typing import LambdaContext

from emailrouter.crm.deadline import lambda_deadline
from emailrouter.observability import count, logger, metrics, tracer
from emailrouter.outbound.jobs import send_one
from emailrouter.queues.messages import OutboundRecord
from emailrouter.runtime import get_runtime

# This invocation's CRM deadline: the jobs of a batch run one after another, each only if there is
# time left for it.
_deadline: Callable[[], float] | None = None

processor = BatchProcessor(
    event_type=EventType.SQS, model=OutboundRecord, raise_on_entire_batch_failure=False
)


def record_handler(record: OutboundRecord) -> None:
    job = record.body
    logger.append_keys(tenant_id=job.tenant_id, email_id=job.email_id)
    result = send_one(get_runtime(), job, _deadline)
    logger.info(
        "outbound email processed",
        state=result.state,
        reason=result.reason,
        ses_message_id=result.ses_message_id,
    )
    count(f"outbound_{result.state}", job.tenant_id)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    global _deadline
    _deadline = lambda_deadline(context)
    with get_runtime().crm.within(_deadline):
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
