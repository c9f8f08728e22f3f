"""Misbehaviour on demand: throttling, server errors, refused requests (400), redirects, latency
and dropped connections.

Rules match requests by method and a path substring and fire either with a probability (seeded, so
a run is repeatable) or for the first N matching requests, or both. By default (``scope``
``request``) faults act on HTTP requests as they arrive at ``/api/data`` (a ``$batch`` is one
request here), after authentication. With ``scope`` ``operation`` they act on each operation inside
a ``$batch`` instead (method and path filters see the inner request), which answers that one part
with the error and leaves the others alone (with ``odata.continue-on-error``).

Failing rules (everything but latency) that carry a probability share one random draw per
request, each owning its own slice of it in rule order, so their fractions do not interfere:
``429`` at 0.3 and ``503`` at 0.05 answer 30 % and 5 % of the requests they match (not 30 % and
5 % of the remaining 70 %). When the probabilities add up past 1 the later rules get what is left.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, replace
from typing import Any, Literal

FaultKind = Literal["429", "503", "500", "400", "redirect", "latency", "drop"]
KINDS: frozenset[str] = frozenset({"429", "503", "500", "400", "redirect", "latency", "drop"})
FaultScope = Literal["request", "operation"]
SCOPES: frozenset[str] = frozenset({"request", "operation"})


@dataclass(frozen=True)
class FaultRule:
    kind: FaultKind
    probability: float = 1.0
    count: int | None = None  # fire at most this many times (None: unlimited)
    retry_after: int = 1  # seconds, for 429 (and 503 when set)
    delay_ms: int = 0  # for latency
    method: str | None = None
    path_contains: str | None = None
    scope: FaultScope = "request"  # "operation": each operation inside a $batch
    location: str = ""  # for redirect: where the 307 points

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultRule:
        kind = str(data.get("kind"))
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(KINDS)}")
        probability = 1.0 if data.get("probability") is None else float(data["probability"])
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be between 0 and 1, not {probability}")
        count = data.get("count")
        retry_after = 1 if data.get("retry_after") is None else int(data["retry_after"])
        if retry_after < 0:
            raise ValueError(f"retry_after is whole seconds, at least 0, not {retry_after}")
        scope = str(data.get("scope") or "request")
        if scope not in SCOPES:
            raise ValueError(f"unknown fault scope {scope!r}; expected one of {sorted(SCOPES)}")
        if scope == "operation" and kind in ("drop", "redirect"):
            raise ValueError(f"a {kind} fault answers the whole $batch: use scope 'request'")
        location = str(data.get("location") or "")
        if kind == "redirect" and not location:
            raise ValueError("a redirect fault needs the location it points to")
        return cls(
            kind=kind,  # type: ignore[arg-type]
            probability=probability,
            count=None if count is None else int(count),
            retry_after=retry_after,
            delay_ms=int(data.get("delay_ms") or 0),
            method=(data.get("method") or None) and str(data["method"]).upper(),
            path_contains=data.get("path_contains") or None,
            scope=scope,  # type: ignore[arg-type]
            location=location,
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

    def pick(self, method: str, path: str, scope: FaultScope = "request") -> list[FaultRule]:
        """Every latency rule of ``scope`` that fires, then at most one failing rule (the first that fires)."""
        chosen: list[FaultRule] = []
        failure_chosen = False
        draw: float | None = None  # the request's one draw for probabilistic failing rules
        slice_start = 0.0
        with self._lock:
            for index, rule in enumerate(self._rules):
                if rule.scope != scope or not rule.matches(method, path):
                    continue
                if rule.count is not None and self._fired[index] >= rule.count:
                    continue
                if rule.kind == "latency":
                    fires = rule.probability >= 1.0 or self._random.random() < rule.probability
                elif failure_chosen:
                    continue
                elif rule.probability >= 1.0:
                    fires = True
                else:
                    if draw is None:
                        draw = self._random.random()
                    slice_end = slice_start + rule.probability
                    fires = slice_start <= draw < slice_end
                    slice_start = slice_end
                if not fires:
                    continue
                self._fired[index] += 1
                chosen.append(replace(rule))
                failure_chosen = failure_chosen or rule.kind != "latency"
        return sorted(chosen, key=lambda r: r.kind != "latency")
