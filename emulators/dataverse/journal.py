"""The request journal: one entry per Web API request, in arrival order, on the monotonic clock.

Where ``stats`` counts, the journal lets a test prove ordering: when each request arrived, who
sent it, what it was answered and, for a 429, the Retry-After it was given. Times are
``time.monotonic()`` on the server (system-wide on Linux, so an in-process test or another local
process can compare them with its own readings); ``answered`` is when the response was ready, so
a request that arrived before a 429 was answered was certainly sent before the client could know.

The caller is a fingerprint of the bearer token (service protection counts per user, and a token
stands for one user here), not the token itself: the journal is readable without auth.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import asdict, dataclass


def caller_of(token: str | None) -> str | None:
    """The journal's name for whoever presented ``token``; None for a request without a valid one.

    >>> caller_of("test-token") == caller_of("test-token") != caller_of("other-token")
    True
    """
    if not token:
        return None
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    arrived: float  # monotonic seconds, when the request reached the Web API
    answered: float  # monotonic seconds, when its response was ready (or the connection dropped)
    caller: str | None
    method: str
    path: str
    status: int  # 0 for a dropped connection
    retry_after: int | None  # seconds: of a 429 (or injected 503), or the longest of a $batch's 429 parts
    fault: str | None  # the injected failure that answered it, if one did ("429", "503", "drop", …)
    operations: int  # inner operations of a $batch, else 1
    operation_statuses: list[int] | None  # a $batch's inner statuses in order, else None

    @property
    def throttled(self) -> bool:
        """Answered 429, itself or in one of its $batch parts."""
        return self.status == 429 or 429 in (self.operation_statuses or ())


class RequestJournal:
    """Thread-safe, append-only until ``reset``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[JournalEntry] = []

    def record(
        self,
        *,
        arrived: float,
        answered: float,
        caller: str | None,
        method: str,
        path: str,
        status: int,
        retry_after: int | None = None,
        fault: str | None = None,
        operations: int = 1,
        operation_statuses: list[int] | None = None,
    ) -> None:
        with self._lock:
            self._entries.append(
                JournalEntry(
                    arrived,
                    answered,
                    caller,
                    method,
                    path,
                    status,
                    retry_after,
                    fault,
                    operations,
                    None if operation_statuses is None else list(operation_statuses),
                )
            )

    def entries(self) -> list[JournalEntry]:
        """Every entry so far, by arrival."""
        with self._lock:
            return sorted(self._entries, key=lambda entry: entry.arrived)

    def as_json(self) -> list[dict[str, object]]:
        return [{**asdict(entry), "throttled": entry.throttled} for entry in self.entries()]

    def reset(self) -> None:
        with self._lock:
            self._entries = []
