"""Named step boundaries where tests inject a crash, to prove nothing is lost or doubled.

In production no point is armed and `reach` does nothing.
"""

from __future__ import annotations


class InjectedCrash(BaseException):
    """Stands for the process dying at a step boundary."""


class FaultPoints:
    def __init__(self) -> None:
        self._armed: dict[str, int] = {}

    def arm(self, point: str, times: int = 1) -> None:
        self._armed[point] = times

    def reach(self, point: str) -> None:
        remaining = self._armed.get(point, 0)
        if remaining > 0:
            self._armed[point] = remaining - 1
            raise InjectedCrash(point)


NO_FAULTS = FaultPoints()
