"""In-memory rows per entity set, behind one lock, with undo-journal transactions.

Rows are plain dicts keyed by column name and are never mutated in place: every write stores a new
dict. That makes reads safe without copying and lets a transaction roll back by restoring the
previous dicts it journaled (deep inserts and ``$batch`` change sets are all-or-nothing).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from emulators.dataverse.schema import TABLES

Row = dict[str, Any]


def utc_now_text() -> str:
    """Dataverse's wire format for date-times: UTC, second precision, ``Z`` suffix."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Store:
    """All rows of all tables. Hold ``lock`` (re-entrant) across any read-modify-write sequence."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._tables: dict[str, dict[str, Row]] = {name: {} for name in TABLES}
        self._extra_columns: dict[str, set[str]] = {name: set() for name in TABLES}
        self._journal: list[tuple[str, str, Row | None]] | None = None
        self._version = 1_000_000

    def clear(self) -> None:
        with self.lock:
            for name in self._tables:
                self._tables[name] = {}
                self._extra_columns[name] = set()
            self._version = 1_000_000

    def next_version(self) -> int:
        """A database-wide row version, like SQL ``rowversion``: it only ever grows."""
        with self.lock:
            self._version += 1
            return self._version

    def get(self, set_name: str, key: str) -> Row | None:
        with self.lock:
            return self._tables[set_name].get(key.lower())

    def all(self, set_name: str) -> list[Row]:
        with self.lock:
            return list(self._tables[set_name].values())

    def put(self, set_name: str, key: str, row: Row) -> None:
        with self.lock:
            table = self._tables[set_name]
            key = key.lower()
            if self._journal is not None:
                self._journal.append((set_name, key, table.get(key)))
            table[key] = row

    def delete(self, set_name: str, key: str) -> Row | None:
        with self.lock:
            table = self._tables[set_name]
            key = key.lower()
            previous = table.pop(key, None)
            if previous is not None and self._journal is not None:
                self._journal.append((set_name, key, previous))
            return previous

    def find_logical_target(self, key: str, candidates: list[str]) -> str | None:
        """Which of ``candidates`` (set names) holds a row with this key: used to type seeded lookups."""
        with self.lock:
            for set_name in candidates:
                if key.lower() in self._tables[set_name]:
                    return set_name
            return None

    def register_columns(self, set_name: str, columns: set[str]) -> None:
        """Columns introduced by seeding become queryable, like custom columns in a real org."""
        with self.lock:
            self._extra_columns[set_name] |= columns

    def extra_columns(self, set_name: str) -> set[str]:
        with self.lock:
            return set(self._extra_columns[set_name])

    def known_columns(self, set_name: str) -> list[str]:
        """Declared columns in schema order, then seeded extras: the table's property list."""
        declared = list(TABLES[set_name].columns)
        with self.lock:
            extras = sorted(self._extra_columns[set_name] - set(declared))
        return declared + extras

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside succeed together or are undone together; nests (inner failures unwind to
        the inner start and re-raise)."""
        with self.lock:
            outermost = self._journal is None
            if outermost:
                self._journal = []
            assert self._journal is not None
            mark = len(self._journal)
            try:
                yield
            except BaseException:
                self._undo_to(mark)
                raise
            finally:
                if outermost:
                    self._journal = None

    def _undo_to(self, mark: int) -> None:
        assert self._journal is not None
        while len(self._journal) > mark:
            set_name, key, previous = self._journal.pop()
            if previous is None:
                self._tables[set_name].pop(key, None)
            else:
                self._tables[set_name][key] = previous
