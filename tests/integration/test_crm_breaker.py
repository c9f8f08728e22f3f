"""The CRM circuit breaker's states in DynamoDB (moto): closed → open → half-open → closed/open.

The clock is the one thing mocked: cool-downs are minutes in production.
"""

from __future__ import annotations

import boto3
import pytest

from emailrouter.crm.breaker import CrmBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(aws: boto3.Session, clock: Clock) -> CrmBreaker:
    ddb = aws.client("dynamodb")
    ddb.create_table(
        TableName="tenants",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return CrmBreaker("tenants", ddb, threshold=3, cooldown_seconds=300, clock=clock)


def test_it_opens_only_after_the_threshold_of_consecutive_timeouts(breaker: CrmBreaker) -> None:
    breaker.record_timeout("t", "ReadTimeout")
    breaker.record_timeout("t", "ReadTimeout")
    assert breaker.refusal("t")[0] is None  # two are not enough

    breaker.record_timeout("t", "ConnectTimeout")

    refusal, health = breaker.refusal("t")
    assert refusal is not None and "3 consecutive timeouts" in refusal and "ConnectTimeout" in refusal
    assert health.state == "open"


def test_an_answer_in_between_makes_timeouts_no_longer_consecutive(breaker: CrmBreaker) -> None:
    breaker.record_timeout("t", "ReadTimeout")
    breaker.record_timeout("t", "ReadTimeout")
    breaker.record_success("t", breaker.health("t"))
    breaker.record_timeout("t", "ReadTimeout")
    breaker.record_timeout("t", "ReadTimeout")

    assert breaker.refusal("t")[0] is None
    assert breaker.health("t").consecutive_timeouts == 2


def test_after_the_cool_down_one_caller_tries_and_a_timeout_opens_it_again_at_once(
    breaker: CrmBreaker, clock: Clock
) -> None:
    for _ in range(3):
        breaker.record_timeout("t", "ReadTimeout")
    clock.now += 299
    assert breaker.refusal("t")[0] is not None  # still cooling down
    clock.now += 1

    first, _ = breaker.refusal("t")
    second, _ = breaker.refusal("t")

    assert first is None  # this caller makes the trial request
    assert second is not None and "trial" in second  # nobody else meanwhile
    breaker.record_timeout("t", "ReadTimeout")  # the trial timed out: open for a new cool-down
    clock.now += 299
    assert breaker.refusal("t")[0] is not None
    clock.now += 1
    trial, health = breaker.refusal("t")
    assert trial is None
    breaker.record_success("t", health)  # the trial got an answer
    assert breaker.health("t").state == "closed" and breaker.refusal("t")[0] is None


def test_tenants_have_breakers_of_their_own(breaker: CrmBreaker) -> None:
    for _ in range(3):
        breaker.record_timeout("slow", "ReadTimeout")

    assert breaker.refusal("slow")[0] is not None
    assert breaker.refusal("fast")[0] is None
