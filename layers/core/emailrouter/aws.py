"""The one place boto3 clients are built, so every module gets the same seam for tests."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)
# For the per-batch hot path: the service validates every request anyway, and botocore's own
# check of the request shape is about a tenth of its CPU per call.
_UNCHECKED = _CONFIG.merge(Config(parameter_validation=False))


def client(service: str, session: boto3.Session | None = None, *, validate: bool = True) -> Any:
    """A boto3 client with the project's retry settings. AWS_ENDPOINT_URL (local stack) is honoured."""
    return (session or boto3.Session()).client(service, config=_CONFIG if validate else _UNCHECKED)


def resource(service: str, session: boto3.Session | None = None) -> Any:
    return (session or boto3.Session()).resource(service, config=_CONFIG)
