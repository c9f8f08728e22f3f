"""How long a Lambda invocation may spend on Dataverse retries: its remaining time less a margin.

A handler calls ``client.set_deadline(lambda_deadline(context))`` when the invocation starts. The
client then refuses any Retry-After wait or back-off that would end past the deadline and raises
CrmTransientError, so the message goes back to its queue instead of being cut off mid-write.

The margin is what the invocation still needs after the last CRM call: record the outcome in the
ledger, report batch item failures and return. It is 10 % of the time left, at most 5 s — 5 s for
a 60 s function, 3 s for 30 s, 1 s for 10 s — so short functions keep most of their budget and
long ones do not waste more than a few DynamoDB writes need.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

MARGIN_FRACTION = 0.10
MARGIN_MAX_SECONDS = 5.0


class RemainingTime(Protocol):
    """What a Lambda context offers (the local runner's context too)."""

    def get_remaining_time_in_millis(self) -> int: ...


def safety_margin(budget_seconds: float) -> float:
    """Seconds kept back from a budget: 10 % of it, at most 5 s.

    >>> safety_margin(60), safety_margin(30), safety_margin(0)
    (5.0, 3.0, 0.0)
    """
    return min(MARGIN_MAX_SECONDS, MARGIN_FRACTION * max(0.0, budget_seconds))


def time_left(deadline: Callable[[], float], *, clock: Callable[[], float] = time.monotonic) -> float:
    """Seconds until `deadline()`; zero or less once it has passed."""
    return deadline() - clock()


def lambda_deadline(
    context: RemainingTime, *, clock: Callable[[], float] = time.monotonic
) -> Callable[[], float]:
    """A deadline function for :meth:`DataverseClient.set_deadline`: it returns the monotonic time
    (on ``clock``) by which every CRM retry must be over.

    Call it at the start of the invocation: the margin is taken from the time left then, which is
    the function's timeout less the cold start. The deadline is fixed at that moment.

    >>> client.set_deadline(lambda_deadline(context))  # in a 60 s function: ~55 s from now
    """
    remaining = max(0, context.get_remaining_time_in_millis()) / 1000
    deadline = clock() + remaining - safety_margin(remaining)
    return lambda: deadline
