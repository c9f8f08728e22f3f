"""Every ledger transition, taken where it is allowed and refused where it is not, against moto's
DynamoDB; and the ones workers race for, taken by several at once."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest

from emailrouter.ledger.models import OutboundState, Outcome
from emailrouter.ledger.store import ClaimBusyError, Ledger
from tests.helpers import run_concurrently


@pytest.fixture
def ledger(aws: boto3.Session) -> Ledger:
    ddb = aws.client("dynamodb")
    ddb.create_table(
        TableName="ledger",
        AttributeDefinitions=[
            {"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk", "gsi1pk", "gsi1sk")
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_outcome",
                "KeySchema": [
                    {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                    {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    return Ledger("ledger", ddb)


def _state(ledger: Ledger, email_id: str = "e1") -> OutboundState | None:
    record = ledger.get_outbound("t", email_id)
    return None if record is None else record.state


def _in(ledger: Ledger, state: OutboundState, email_id: str = "e1") -> None:
    """Put email `email_id` in `state` by the transitions that lead there."""
    assert ledger.enqueue_outbound("t", email_id, 600)
    if state is OutboundState.QUEUED:
        return
    if state is OutboundState.FAILED:
        assert ledger.record_failed("t", email_id, "refused")
        return
    assert ledger.begin_send("t", email_id, "<m@x>")
    if state is OutboundState.SENT:
        assert ledger.record_sent("t", email_id, "ses-1", "<ses-1@x>")
    assert _state(ledger, email_id) is state


# ---- outbound: intent ---------------------------------------------------------------------
def test_an_intent_is_recorded_for_a_new_or_queued_email(ledger: Ledger) -> None:
    assert ledger.begin_send("t", "fresh", "<m1@x>")
    _in(ledger, OutboundState.QUEUED)
    assert ledger.begin_send("t", "e1", "<m2@x>")

    for email_id, message_id in (("fresh", "<m1@x>"), ("e1", "<m2@x>")):
        record = ledger.get_outbound("t", email_id)
        assert record is not None
        assert (record.state, record.message_id, record.attempts) == (OutboundState.SENDING, message_id, 1)


@pytest.mark.parametrize("state", [OutboundState.SENDING, OutboundState.SENT, OutboundState.FAILED])
def test_a_second_intent_is_refused_unless_the_email_is_queued(ledger: Ledger, state: OutboundState) -> None:
    _in(ledger, state)
    before = ledger.get_outbound("t", "e1")

    assert not ledger.begin_send("t", "e1", "<other@x>")
    after = ledger.get_outbound("t", "e1")
    assert after is not None and before is not None
    assert (after.state, after.message_id, after.attempts) == (state, before.message_id, before.attempts)


def test_of_several_intents_at_once_exactly_one_is_recorded(ledger: Ledger) -> None:
    _in(ledger, OutboundState.QUEUED)
    ids = [f"<m{i}@x>" for i in range(4)]

    outcome = run_concurrently([lambda mid=mid: ledger.begin_send("t", "e1", mid) for mid in ids])
    assert outcome.raised() == []
    assert sorted(outcome.results) == [False, False, False, True]
    record = ledger.get_outbound("t", "e1")
    assert record is not None and record.message_id == ids[outcome.results.index(True)]
    assert record.attempts == 1


# ---- outbound: sent -----------------------------------------------------------------------
def test_sent_is_recorded_after_an_intent(ledger: Ledger) -> None:
    _in(ledger, OutboundState.SENDING)
    assert ledger.record_sent("t", "e1", "ses-9", "<ses-9@x>")
    record = ledger.get_outbound("t", "e1")
    assert record is not None
    assert (record.state, record.ses_message_id, record.ses_header_message_id) == (
        OutboundState.SENT,
        "ses-9",
        "<ses-9@x>",
    )


@pytest.mark.parametrize("state", [OutboundState.QUEUED, OutboundState.SENT, OutboundState.FAILED])
def test_sent_is_refused_without_a_live_intent(ledger: Ledger, state: OutboundState) -> None:
    _in(ledger, state)
    assert not ledger.record_sent("t", "e1", "ses-other", "<ses-other@x>")
    record = ledger.get_outbound("t", "e1")
    assert record is not None and record.state is state
    assert record.ses_message_id == ("ses-1" if state is OutboundState.SENT else None)


def test_sent_is_refused_for_an_email_the_ledger_never_saw(ledger: Ledger) -> None:
    assert not ledger.record_sent("t", "unknown", "ses-1", "<ses-1@x>")
    assert ledger.get_outbound("t", "unknown") is None


# ---- outbound: release --------------------------------------------------------------------
def test_a_release_takes_an_intent_back_to_queued_and_a_throttle_gives_the_attempt_back(
    ledger: Ledger,
) -> None:
    _in(ledger, OutboundState.SENDING)
    assert ledger.release_send("t", "e1", "throttled", counts_as_attempt=False)
    record = ledger.get_outbound("t", "e1")
    assert record is not None and (record.state, record.attempts, record.reason) == (
        OutboundState.QUEUED,
        0,
        "throttled",
    )

    assert ledger.begin_send("t", "e1", "<m2@x>")
    assert ledger.release_send("t", "e1", "not accepted", counts_as_attempt=True)
    record = ledger.get_outbound("t", "e1")
    assert record is not None and (record.state, record.attempts) == (OutboundState.QUEUED, 1)


@pytest.mark.parametrize("counts", [True, False])
@pytest.mark.parametrize("state", [OutboundState.QUEUED, OutboundState.SENT, OutboundState.FAILED])
def test_a_release_is_refused_without_an_intent(ledger: Ledger, state: OutboundState, counts: bool) -> None:
    _in(ledger, state)
    assert not ledger.release_send("t", "e1", "late release", counts_as_attempt=counts)
    record = ledger.get_outbound("t", "e1")
    assert record is not None and record.state is state and record.reason != "late release"


# ---- outbound: requeue of an interrupted send ---------------------------------------------
@pytest.mark.parametrize("state", [OutboundState.SENDING, OutboundState.SENT])
def test_a_stale_intent_is_requeued_once_per_delay(ledger: Ledger, state: OutboundState) -> None:
    _in(ledger, state)
    time.sleep(1.1)  # the ledger's clock counts whole seconds: the intent is now older than 0.5 s
    assert ledger.requeue_stuck("t", "e1", 0.5)
    assert not ledger.requeue_stuck("t", "e1", 0.5)  # one job per delay period
    assert _state(ledger) is state  # a requeue only records the job; the state stays


def test_a_fresh_intent_is_not_requeued(ledger: Ledger) -> None:
    _in(ledger, OutboundState.SENDING)
    assert not ledger.requeue_stuck("t", "e1", 600)


@pytest.mark.parametrize("state", [OutboundState.QUEUED, OutboundState.FAILED])
def test_a_requeue_is_refused_without_an_intent(ledger: Ledger, state: OutboundState) -> None:
    _in(ledger, state)
    # stale_after -5: any intent, however new, would count as stale; there is none.
    assert not ledger.requeue_stuck("t", "e1", -5)
    assert not ledger.requeue_stuck("t", "never-seen", -5)


def test_of_several_requeues_at_once_exactly_one_is_taken(ledger: Ledger) -> None:
    _in(ledger, OutboundState.SENDING)
    time.sleep(1.1)
    outcome = run_concurrently([lambda: ledger.requeue_stuck("t", "e1", 0.5) for _ in range(4)])
    assert outcome.raised() == []
    assert sorted(outcome.results) == [False, False, False, True]


# ---- outbound: failed ---------------------------------------------------------------------
@pytest.mark.parametrize("state", [OutboundState.QUEUED, OutboundState.SENDING])
def test_failed_is_recorded_for_a_queued_email_or_an_intent(ledger: Ledger, state: OutboundState) -> None:
    _in(ledger, state)
    assert ledger.record_failed("t", "e1", "SES refused")
    record = ledger.get_outbound("t", "e1")
    assert record is not None and (record.state, record.reason) == (OutboundState.FAILED, "SES refused")


@pytest.mark.parametrize("state", [OutboundState.SENT, OutboundState.FAILED])
def test_failed_is_refused_once_the_email_is_finished(ledger: Ledger, state: OutboundState) -> None:
    _in(ledger, state)
    assert not ledger.record_failed("t", "e1", "late failure")
    record = ledger.get_outbound("t", "e1")
    assert record is not None and record.state is state and record.reason != "late failure"


def test_sent_after_failed_and_failed_after_sent_are_both_refused(ledger: Ledger) -> None:
    _in(ledger, OutboundState.SENDING)
    assert ledger.record_failed("t", "e1", "gave up")
    assert not ledger.record_sent("t", "e1", "ses-late", "<ses-late@x>")
    assert _state(ledger) is OutboundState.FAILED

    _in(ledger, OutboundState.SENT, "e2")
    assert not ledger.record_failed("t", "e2", "late")
    assert _state(ledger, "e2") is OutboundState.SENT


# ---- inbound: claim -----------------------------------------------------------------------
def test_a_claim_of_a_finished_message_reports_its_outcome_and_changes_nothing(ledger: Ledger) -> None:
    ledger.claim("t", "k1", "w1", 60, {})
    ledger.complete("t", "k1", "w1", Outcome.CREATED, crm_email_id="crm-1")

    claimed, finished = ledger.claim("t", "k1", "w2", -1, {})
    assert claimed is None and finished is not None
    record = ledger.get("t", "k1")
    assert record is not None
    assert (record.status, record.outcome, record.attempts, record.crm_email_id) == (
        "done",
        Outcome.CREATED,
        1,
        "crm-1",
    )


def test_of_several_claims_at_once_exactly_one_owns_the_message(ledger: Ledger) -> None:
    def claim(owner: str) -> str:
        try:
            claimed, _ = ledger.claim("t", "k1", owner, 60, {})
        except ClaimBusyError:
            return "busy"
        return "claimed" if claimed is not None else "finished"

    owners = [f"w{i}" for i in range(4)]
    outcome = run_concurrently([lambda o=o: claim(o) for o in owners])
    assert outcome.raised() == []
    assert sorted(outcome.results) == ["busy", "busy", "busy", "claimed"]
    record = ledger.get("t", "k1")
    assert record is not None and record.attempts == 1
    winner = owners[outcome.results.index("claimed")]
    for owner in owners:  # only the owner may record the outcome
        if owner != winner:
            with pytest.raises(ledger._ddb.exceptions.ConditionalCheckFailedException):
                ledger.complete("t", "k1", owner, Outcome.CREATED)
    ledger.complete("t", "k1", winner, Outcome.CREATED)


def test_concurrent_claims_of_overlapping_batches_give_each_message_one_owner(ledger: Ledger) -> None:
    """Two workers claim batches that share messages: the shared ones go to one of them (the
    batch transaction, or message by message once it is refused), never to both."""
    first: list[tuple[str, str, str, dict[str, Any]]] = [("t", f"k{i}", "batch-a", {}) for i in (1, 2, 3, 4)]
    second: list[tuple[str, str, str, dict[str, Any]]] = [("t", f"k{i}", "batch-b", {}) for i in (3, 4, 5, 6)]
    outcome = run_concurrently([lambda: ledger.claim_many(first, 60), lambda: ledger.claim_many(second, 60)])
    assert outcome.raised() == []
    answers = {
        (claims[i][1], claims[i][2]): answer
        for claims, batch in zip((first, second), outcome.results, strict=True)
        for i, answer in enumerate(batch)
    }
    for key in ("k3", "k4"):
        won = [owner for owner in ("batch-a", "batch-b") if answers[(key, owner)] is None]
        busy = [
            owner for owner in ("batch-a", "batch-b") if isinstance(answers[(key, owner)], ClaimBusyError)
        ]
        assert len(won) == 1 and len(busy) == 1, (key, answers)
        record = ledger.get("t", key)
        assert record is not None and record.attempts == 1
        assert (
            ledger._ddb.get_item(
                TableName="ledger", Key={"pk": {"S": "TENANT#t"}, "sk": {"S": f"MSG#{key}"}}
            )["Item"]["claim_owner"]["S"]
            == won[0]
        )
    for key, owner in (("k1", "batch-a"), ("k2", "batch-a"), ("k5", "batch-b"), ("k6", "batch-b")):
        assert answers[(key, owner)] is None


# ---- inbound: complete --------------------------------------------------------------------
def test_complete_is_refused_without_a_claim(ledger: Ledger) -> None:
    with pytest.raises(ledger._ddb.exceptions.ConditionalCheckFailedException):
        ledger.complete("t", "never-claimed", "w1", Outcome.CREATED)
    assert ledger.get("t", "never-claimed") is None


def test_complete_is_refused_to_a_worker_that_does_not_own_the_claim(ledger: Ledger) -> None:
    ledger.claim("t", "k1", "w1", 60, {})
    with pytest.raises(ledger._ddb.exceptions.ConditionalCheckFailedException):
        ledger.complete("t", "k1", "w2", Outcome.FILTERED)
    record = ledger.get("t", "k1")
    assert record is not None and (record.status, record.outcome) == ("claimed", None)

    ledger.complete("t", "k1", "w1", Outcome.CREATED, crm_email_id="crm-1")
    record = ledger.get("t", "k1")
    assert record is not None
    assert (record.status, record.outcome, record.crm_email_id) == ("done", Outcome.CREATED, "crm-1")


def test_a_second_complete_by_the_owner_is_refused(ledger: Ledger) -> None:
    ledger.claim("t", "k1", "w1", 60, {})
    ledger.complete("t", "k1", "w1", Outcome.CREATED, crm_email_id="crm-1")
    with pytest.raises(ledger._ddb.exceptions.ConditionalCheckFailedException):
        ledger.complete("t", "k1", "w1", Outcome.QUARANTINED, reason="again")
    record = ledger.get("t", "k1")
    assert record is not None and (record.outcome, record.crm_email_id) == (Outcome.CREATED, "crm-1")


# ---- inbound: reopen ----------------------------------------------------------------------
def test_a_quarantined_message_is_reopened_once_for_a_replay(ledger: Ledger) -> None:
    ledger.claim("t", "k1", "w1", 60, {})
    ledger.complete("t", "k1", "w1", Outcome.QUARANTINED, reason="CRM refused")

    reopened = ledger.reopen("t", "k1", "replay-1", 60)
    assert reopened.status == "claimed"
    with pytest.raises(ledger._ddb.exceptions.ConditionalCheckFailedException):
        ledger.reopen("t", "k1", "replay-2", 60)  # the replay is itself claimed once
    with pytest.raises(ClaimBusyError):
        ledger.claim("t", "k1", "w3", 60, {})
    ledger.complete("t", "k1", "replay-1", Outcome.CREATED, crm_email_id="crm-1")
    record = ledger.get("t", "k1")
    assert record is not None and (record.status, record.outcome) == ("done", Outcome.CREATED)


@pytest.mark.parametrize(
    "outcome", [Outcome.CREATED, Outcome.CORRELATED, Outcome.DUPLICATE, Outcome.FILTERED]
)
def test_a_message_that_is_not_quarantined_is_not_reopened(ledger: Ledger, outcome: Outcome) -> None:
    ledger.claim("t", "k1", "w1", 60, {})
    ledger.complete("t", "k1", "w1", outcome)
    with pytest.raises(ledger._ddb.exceptions.ConditionalCheckFailedException):
        ledger.reopen("t", "k1", "replay", 60)
    record = ledger.get("t", "k1")
    assert record is not None and (record.status, record.outcome) == ("done", outcome)


def test_a_claimed_discarded_or_unknown_message_is_not_reopened(ledger: Ledger) -> None:
    ledger.claim("t", "claimed", "w1", 60, {})
    ledger.claim("t", "discarded", "w1", 60, {})
    ledger.complete("t", "discarded", "w1", Outcome.QUARANTINED)
    ledger.discard("t", "discarded", "given up")

    for key in ("claimed", "discarded", "unknown"):
        with pytest.raises(ledger._ddb.exceptions.ConditionalCheckFailedException):
            ledger.reopen("t", key, "replay", 60)
    claimed = ledger.get("t", "claimed")
    discarded = ledger.get("t", "discarded")
    assert claimed is not None and discarded is not None
    assert (claimed.status, discarded.status) == ("claimed", "done")


def test_of_several_reopens_at_once_exactly_one_replays(ledger: Ledger) -> None:
    ledger.claim("t", "k1", "w1", 60, {})
    ledger.complete("t", "k1", "w1", Outcome.QUARANTINED)
    owners = [f"replay-{i}" for i in range(4)]
    outcome = run_concurrently([lambda o=o: ledger.reopen("t", "k1", o, 60) for o in owners])
    assert len(outcome.raised()) == 3
    assert all(
        isinstance(e, ledger._ddb.exceptions.ConditionalCheckFailedException) for e in outcome.raised()
    )


# ---- leases -------------------------------------------------------------------------------
def test_a_lease_is_held_by_one_owner_until_released_or_expired(ledger: Ledger) -> None:
    assert ledger.take_lease("t", "poll#m", "a", 60)
    assert ledger.take_lease("t", "poll#m", "a", 60)  # its holder renews it
    assert not ledger.take_lease("t", "poll#m", "b", 60)
    assert ledger.take_lease("t", "poll#other", "b", 60)  # leases are per name
    assert ledger.take_lease("u", "poll#m", "b", 60)  # and per tenant

    ledger.release_lease("t", "poll#m", "b")  # not b's: still a's
    assert not ledger.take_lease("t", "poll#m", "c", 60)
    ledger.release_lease("t", "poll#m", "a")
    assert ledger.take_lease("t", "poll#m", "c", -1)  # taken, and already expired
    assert ledger.take_lease("t", "poll#m", "d", 60)


def test_of_several_lease_takers_at_once_exactly_one_holds_it(ledger: Ledger) -> None:
    outcome = run_concurrently([lambda o=o: ledger.take_lease("t", "poll#m", o, 60) for o in "abcd"])
    assert outcome.raised() == []
    assert sorted(outcome.results) == [False, False, False, True]
