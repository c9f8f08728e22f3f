"""The log of repairs the parser made while reading one message.

Defect codes are short kebab-case strings, optionally followed by `:detail`
(`header-8bit:Subject`, `attachment-too-large:report.pdf:7340032`). They are
meant for operators and for the pipeline's decisions, so they are stable.
"""

from __future__ import annotations

import re

MAX_DEFECTS = 100  # hostile input must not turn the defect list into a memory sink
# Codes the pipeline acts on are kept even when the log is full.
ALWAYS_KEPT = frozenset({"attachment-too-large", "parts-too-many", "attachments-too-many"})
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class DefectLog:
    """An ordered, de-duplicated, bounded list of defect codes."""

    def __init__(self) -> None:
        self._items: list[str] = []
        self._seen: set[str] = set()

    def add(self, code: str, *details: object) -> None:
        """Record `code` (with `details` joined by `:`) once; drop it when the log is full."""
        entry = ":".join([code, *(_UNPRINTABLE.sub("", str(detail))[:120] for detail in details)])
        if entry in self._seen:
            return
        if len(self._items) >= MAX_DEFECTS and code not in ALWAYS_KEPT:
            if "defects-truncated" not in self._seen:
                self._seen.add("defects-truncated")
                self._items.append("defects-truncated")
            return
        self._seen.add(entry)
        self._items.append(entry)

    def as_list(self) -> list[str]:
        """The recorded defects, in the order they were found."""
        return list(self._items)

    def __contains__(self, entry: object) -> bool:
        return entry in self._seen
