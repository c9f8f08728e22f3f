"""poll_mailbox: one poll job → new messages of one mailbox handed off to the inbound queue."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.typing import LambdaContext

from emailrouter.crm.deadline import lambda_deadline
from emailrouter.observability import count, logger, metrics, tracer
from emailrouter.queues.messages import PollJobRecord
from emailrouter.runtime import get_runtime
from emailrouter.sources.jobs import run_poll_job

processor = BatchProcessor(event_type=EventType.SQS, model=PollJobRecord, raise_on_entire_batch_failure=False)


def record_handler(record: PollJobRecord) -> None:
    job = record.body
    logger.append_keys(tenant_id=job.tenant_id, mailbox_id=job.mailbox_id)
    result = run_poll_job(get_runtime(), job)
    logger.info("mailbox polled", fetched=result["fetched"], state=result["state"], reason=result["reason"])
    count("messages_fetched", job.tenant_id, result["fetched"])
    if result["oversize"]:  # too large to fetch: quarantined, left at the source
        count("inbound_quarantined", job.tenant_id, result["oversize"])
    if result["state"] == "failing":
        count("mailbox_poll_failed", job.tenant_id)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    runtime = get_runtime()
    runtime.register_context(context)
    with runtime.crm.within(lambda_deadline(context)):  # the approval check's CRM requests
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
