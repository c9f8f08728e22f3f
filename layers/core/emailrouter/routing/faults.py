"""Named step boundaries where tests inject a crash, to prove nothing is lost or doubled.

In production no point is armed and `reach` does nothing.
"""

from __future__ import annotations


class InjectedCrash(BaseException):
    """Stands for the process dying at a step boundary."""


class FaultPoints:
    def __init__(self) -> None:
        self._armed: dict[str, int] = {}
        self._every: dict[str, int] = {}
        self.reached: dict[str, int] = {}
        self.crashed: dict[str, int] = {}

    def arm(self, point: str, times: int = 1) -> None:
        """Crash the next `times` times `point` is reached."""
        self._armed[point] = times

    def arm_every(self, point: str, nth: int) -> None:
        """Crash every `nth` time `point` is reached (the nth, 2nth, …)."""
        self._every[point] = nth

    def reach(self, point: str) -> None:
        count = self.reached[point] = self.reached.get(point, 0) + 1
        remaining = self._armed.get(point, 0)
        every = self._every.get(point)
        if remaining > 0 or (every and count % every == 0):
            if remaining > 0:
                self._armed[point] = remaining - 1
            self.crashed[point] = self.crashed.get(point, 0) + 1
            raise InjectedCrash(point)


NO_FAULTS = FaultPoints()
