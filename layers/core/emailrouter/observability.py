"""Logger, metrics and tracer shared by every function; every metric carries tenant_id."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit, single_metric

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "emailrouter"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "EmailRouter"))
tracer = Tracer(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "emailrouter"))


def count(name: str, tenant_id: str, value: float = 1, **dimensions: str) -> None:
    """One metric with its own tenant_id dimension (a batch may hold several tenants)."""
    if os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() == "true":
        return
    with single_metric(name=name, unit=MetricUnit.Count, value=value, namespace=metrics.namespace) as metric:
        metric.add_dimension(name="tenant_id", value=tenant_id)
        for key, dimension in dimensions.items():
            metric.add_dimension(name=key, value=dimension)
