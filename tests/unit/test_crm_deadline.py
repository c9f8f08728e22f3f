"""The CRM retry deadline a Lambda context gives: remaining time less min(5 s, 10 %)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from emailrouter.crm.deadline import lambda_deadline, safety_margin
from emailrouter.local.lambda_context import LocalLambdaContext


@dataclass
class FakeContext:
    remaining_ms: int

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.mark.parametrize(
    ("remaining_ms", "expected_seconds_from_now"),
    [
        (60_000, 55.0),  # 10 % would be 6 s: the 5 s cap applies
        (30_000, 27.0),  # 10 %
        (50_000, 45.0),  # 10 % and the cap agree
        (900_000, 895.0),  # a 15-minute function still keeps only 5 s
        (2_000, 1.8),
        (0, 0.0),  # out of time: the deadline is now, so nothing is retried
        (-5, 0.0),  # never later than now either
    ],
)
def test_deadline_is_remaining_time_less_the_smaller_of_5s_and_10_percent(
    remaining_ms: int, expected_seconds_from_now: float
) -> None:
    deadline = lambda_deadline(FakeContext(remaining_ms), clock=lambda: 1000.0)

    assert deadline() == pytest.approx(1000.0 + expected_seconds_from_now)


def test_deadline_is_fixed_when_taken_not_recomputed_on_each_call() -> None:
    context = FakeContext(20_000)
    deadline = lambda_deadline(context, clock=lambda: 50.0)

    context.remaining_ms = 1_000  # time passes inside the invocation

    assert deadline() == pytest.approx(50.0 + 18.0)


def test_margin_is_capped_at_five_seconds() -> None:
    assert [safety_margin(s) for s in (10, 49, 50, 51, 600)] == pytest.approx([1.0, 4.9, 5.0, 5.0, 5.0])


def test_local_runner_context_gives_a_deadline_on_the_monotonic_clock() -> None:
    before = time.monotonic()
    deadline = lambda_deadline(
        LocalLambdaContext(function_name="DeliverInboundFunction", timeout_seconds=60)
    )()

    assert before + 54.9 <= deadline <= time.monotonic() + 55.0
