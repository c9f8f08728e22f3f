"""dispatch_outbound (every minute): one send job per CRM email in Pending Send, per tenant."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from emailrouter.observability import count, logger, metrics, tracer
from emailrouter.outbound.jobs import dispatch_all_tenants


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    from emailrouter.runtime import get_runtime

    results = dispatch_all_tenants(get_runtime(), context)
    for result in results:
        count("outbound_enqueued", result.tenant_id, result.enqueued)
    logger.info("outbound dispatched", tenants=len(results), enqueued=sum(r.enqueued for r in results))
    return {"enqueued": sum(r.enqueued for r in results), "errors": [r.error for r in results if r.error]}
