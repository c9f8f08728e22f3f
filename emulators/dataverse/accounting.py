"""Request accounting for benchmarks and tests: how many Web API requests arrived, of which kinds,
when, and every 429 issued with its Retry-After — so a test can prove a client waited it out.

A ``$batch`` counts as one HTTP request but each inner operation counts as one API request, as
service protection counts them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RequestLog:
    total_requests: int = 0
    http_requests: int = 0
    batch_requests: int = 0
    batch_operations: int = 0
    throttled: int = 0
    by_method: Counter[str] = field(default_factory=Counter)
    by_set: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    request_times: list[float] = field(default_factory=list)
    throttles: list[tuple[float, int]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(
        self,
        at: float,
        method: str,
        path: str,
        set_name: str,
        status: int,
        operations: list[tuple[str, str]] | None = None,
    ) -> None:
        """One HTTP request; ``operations`` lists (method, set) of a batch's inner operations."""
        with self._lock:
            self.http_requests += 1
            self.request_times.append(at)
            self.by_status[status] += 1
            self.requests.append(
                {
                    "time": at,
                    "method": method,
                    "path": path,
                    "status": status,
                    "operations": len(operations) if operations is not None else 1,
                }
            )
            if operations is None:
                self.total_requests += 1
                self.by_method[method] += 1
                self.by_set[set_name] += 1
                return
            self.batch_requests += 1
            self.batch_operations += len(operations)
            self.total_requests += len(operations)
            for inner_method, inner_set in operations:
                self.by_method[inner_method] += 1
                self.by_set[inner_set] += 1

    def record_throttle(self, at: float, retry_after: int) -> None:
        with self._lock:
            self.throttled += 1
            self.throttles.append((at, retry_after))

    def record_fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total_requests": self.total_requests,
                "http_requests": self.http_requests,
                "batch_requests": self.batch_requests,
                "batch_operations": self.batch_operations,
                "throttled": self.throttled,
                "by_method": dict(self.by_method),
                "by_set": dict(self.by_set),
                "by_status": {str(k): v for k, v in self.by_status.items()},
                "faults": dict(self.faults),
                "throttles": [[t, r] for t, r in self.throttles],
                "request_times": list(self.request_times),
                "requests": [dict(r) for r in self.requests],
                "now": time.time(),
            }

    def reset(self) -> None:
        with self._lock:
            fresh = RequestLog()
            for name in (
                "total_requests",
                "http_requests",
                "batch_requests",
                "batch_operations",
                "throttled",
            ):
                setattr(self, name, 0)
            self.by_method, self.by_set, self.by_status, self.faults = (
                fresh.by_method,
                fresh.by_set,
                fresh.by_status,
                fresh.faults,
            )
            self.request_times, self.throttles, self.requests = [], [], []
