"""A performance fix for moto's DynamoDB TransactWriteItems in the local stack.

moto snapshots a table for rollback by deep-copying it once per *item* of a transaction, so a
ten-message batch against a ledger of a few thousand items spends seconds copying. The snapshot
is taken once per table instead; what moto does with it (restore on failure) is unchanged, so
the transaction's behaviour — all or nothing, cancellation reasons — is moto's own.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

_lock = threading.Lock()
_applied = False


class _OnePerObject:
    """`copy` as moto's module sees it during one transaction: the same table is copied once."""

    def __init__(self, table_type: type) -> None:
        self._table_type = table_type
        self._copies: dict[int, Any] = {}

    def deepcopy(self, value: Any, memo: dict[int, Any] | None = None) -> Any:
        if not isinstance(value, self._table_type):
            return copy.deepcopy(value, memo)
        key = id(value)
        if key not in self._copies:
            self._copies[key] = copy.deepcopy(value, memo)
        return self._copies[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


def apply() -> None:
    """Patch moto's DynamoDB backend in this process (idempotent)."""
    global _applied
    with _lock:
        if _applied:
            return
        from moto.dynamodb import models

        original = models.DynamoDBBackend.transact_write_items

        def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
            with _lock:  # the module's `copy` is swapped for the duration of one transaction
                models.copy = _OnePerObject(models.Table)  # type: ignore[assignment]
                try:
                    return original(self, transact_items)
                finally:
                    models.copy = copy

        models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
        _applied = True
