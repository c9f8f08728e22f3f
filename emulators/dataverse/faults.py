"""Misbehaviour on demand: throttling, server errors, latency and dropped connections.

Rules match requests by method and a path substring and fire either with a probability (seeded, so
a run is repeatable) or for the first N matching requests, or both. Faults act on HTTP requests as
they arrive at ``/api/data`` (a ``$batch`` is one request here), after authentication.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, replace
from typing import Any, Literal

FaultKind = Literal["429", "503", "500", "latency", "drop"]
KINDS: frozenset[str] = frozenset({"429", "503", "500", "latency", "drop"})


@dataclass(frozen=True)
class FaultRule:
    kind: FaultKind
    probability: float = 1.0
    count: int | None = None  # fire at most this many times (None: unlimited)
    retry_after: int = 1  # seconds, for 429 (and 503 when set)
    delay_ms: int = 0  # for latency
    method: str | None = None
    path_contains: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultRule:
        kind = str(data.get("kind"))
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(KINDS)}")
        probability = data.get("probability")
        count = data.get("count")
        return cls(
            kind=kind,  # type: ignore[arg-type]
            probability=1.0 if probability is None else float(probability),
            count=None if count is None else int(count),
            retry_after=int(data.get("retry_after") or 1),
            delay_ms=int(data.get("delay_ms") or 0),
            method=(data.get("method") or None) and str(data["method"]).upper(),
            path_contains=data.get("path_contains") or None,
        )

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method.upper():
            return False
        return self.path_contains is None or self.path_contains in path


class FaultInjector:
    """Decides, per request, which faults fire. Thread-safe; the RNG is seeded for repeatability."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._fired: list[int] = []
        self._random = random.Random()

    def configure(self, rules: list[FaultRule], seed: int | None = None) -> None:
        with self._lock:
            self._rules = list(rules)
            self._fired = [0] * len(rules)
            self._random = random.Random(seed)

    def clear(self) -> None:
        self.configure([])

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def pick(self, method: str, path: str) -> list[FaultRule]:
        """Every latency rule that fires, then at most one failing rule (the first that fires)."""
        chosen: list[FaultRule] = []
        failure_chosen = False
        with self._lock:
            for index, rule in enumerate(self._rules):
                if rule.kind != "latency" and failure_chosen:
                    continue
                if not rule.matches(method, path):
                    continue
                if rule.count is not None and self._fired[index] >= rule.count:
                    continue
                if rule.probability < 1.0 and self._random.random() >= rule.probability:
                    continue
                self._fired[index] += 1
                chosen.append(replace(rule))
                failure_chosen = failure_chosen or rule.kind != "latency"
        return sorted(chosen, key=lambda r: r.kind != "latency")
