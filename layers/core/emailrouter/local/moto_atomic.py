"""DynamoDB's per-item atomicity for moto's threaded server in the local stack.

DynamoDB checks a ConditionExpression and applies the write as one step: of two conditional
writes to one item, the second sees the first. moto's server answers each request on its own
thread and checks and writes without a lock, so two workers racing for a claim or a send intent
can both pass the same condition — a race the router's ledger never loses against DynamoDB
would be lost against the local stack. Here every item read and write of moto's DynamoDB
backend runs under one lock: requests are applied one after another, each whole, which is what
the router relies on (and stricter than DynamoDB, which serialises per item).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_lock = threading.RLock()
_applied = False
_OPERATIONS = (
    "get_item",
    "put_item",
    "update_item",
    "delete_item",
    "batch_get_item",
    "batch_write_item",
    "transact_get_items",
    "transact_write_items",
    "execute_statement",
    "execute_transaction",
    "batch_execute_statement",
)


def apply() -> None:
    """Patch moto's DynamoDB backend in this process (idempotent)."""
    global _applied
    with _lock:
        if _applied:
            return
        from moto.dynamodb import models

        for name in _OPERATIONS:
            original = getattr(models.DynamoDBBackend, name, None)
            if original is None:
                continue

            @functools.wraps(original)
            def serialised(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
                with _lock:
                    return __original(self, *args, **kwargs)

            setattr(models.DynamoDBBackend, name, serialised)
        _applied = True
