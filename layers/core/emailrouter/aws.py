"""The one place boto3 clients are built, so every module gets the same seam for tests."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)


def client(service: str, session: boto3.Session | None = None) -> Any:
    """A boto3 client with the project's retry settings. AWS_ENDPOINT_URL (local stack) is honoured."""
    return (session or boto3.Session()).client(service, config=_CONFIG)


def resource(service: str, session: boto3.Session | None = None) -> Any:
    return (session or boto3.Session()).resource(service, config=_CONFIG)
