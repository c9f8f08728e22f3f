"""dispatch (every minute): one poll job per enabled mailbox of every tenant."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from emailrouter.observability import logger, metrics, tracer
from emailrouter.runtime import get_runtime
from emailrouter.sources.jobs import dispatch_poll_jobs


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    jobs = dispatch_poll_jobs(get_runtime(), scheduled_at=str(event.get("time") or ""))
    logger.info("poll jobs dispatched", jobs=jobs)
    return {"jobs": jobs}
