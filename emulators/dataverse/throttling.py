"""Service protection: a per-token request limit over a sliding window (fact sheet §9.3).

Dataverse counts every request, including each operation inside a ``$batch``, against
6,000 requests per 300 s per user; over the limit it answers 429 with an integer ``Retry-After``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    requests: int
    window_seconds: float


class RequestRateLimiter:
    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = {}

    def admit(self, token: str, cost: int = 1) -> int | None:
        """Record ``cost`` requests for ``token`` and return None, or return the whole seconds to wait
        until enough earlier requests leave the window (nothing is recorded then)."""
        now = self._clock()
        with self._lock:
            window = self._windows.setdefault(token, deque())
            while window and window[0] <= now - self.limit.window_seconds:
                window.popleft()
            if len(window) + cost > self.limit.requests:
                if cost > self.limit.requests:
                    blocking = window[-1] if window else now
                else:
                    blocking = window[len(window) + cost - self.limit.requests - 1]
                return max(1, math.ceil(blocking + self.limit.window_seconds - now))
            window.extend([now] * cost)
            return None

    def remaining(self, token: str) -> int:
        with self._lock:
            return max(0, self.limit.requests - len(self._windows.get(token, ())))
