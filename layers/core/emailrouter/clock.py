"""Time in one place: UTC ISO strings as stored in DynamoDB and Dataverse."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None = None) -> str:
    """`2026-11-27T05:00:00Z`, the format Dataverse and the ledger use."""
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch() -> int:
    return int(time.time())
