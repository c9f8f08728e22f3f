"""Ledger claims: one owner at a time, a crashed owner's claim can be taken over, one outcome."""

from __future__ import annotations

import boto3
import pytest

from emailrouter.ledger.models import Outcome
from emailrouter.ledger.store import ClaimBusyError, Ledger


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


def test_second_worker_is_refused_while_the_first_holds_a_live_claim(ledger: Ledger) -> None:
    claimed, _ = ledger.claim("t", "k1", "worker-a", 60, {"mailbox_id": "m"})
    assert claimed is not None and claimed.attempts == 1

    with pytest.raises(ClaimBusyError):
        ledger.claim("t", "k1", "worker-b", 60, {})


def test_the_same_queue_message_retaking_its_claim_after_a_crash_proceeds(ledger: Ledger) -> None:
    ledger.claim("t", "k1", "sqs-msg-1", 60, {})
    again, finished = ledger.claim("t", "k1", "sqs-msg-1", 60, {})
    assert finished is None and again is not None and again.attempts == 2


def test_an_expired_claim_can_be_taken_over(ledger: Ledger) -> None:
    ledger.claim("t", "k1", "worker-a", -1, {})  # already expired
    claimed, _ = ledger.claim("t", "k1", "worker-b", 60, {})
    assert claimed is not None


def test_a_finished_message_reports_its_outcome_and_cannot_be_completed_twice(ledger: Ledger) -> None:
    ledger.claim("t", "k1", "worker-a", 60, {})
    ledger.complete("t", "k1", "worker-a", Outcome.CREATED, crm_email_id="e-1")

    claimed, finished = ledger.claim("t", "k1", "worker-b", 60, {})
    assert claimed is None and finished is not None
    assert (finished.outcome, finished.crm_email_id) == (Outcome.CREATED, "e-1")
    with pytest.raises(ledger._ddb.exceptions.ConditionalCheckFailedException):
        ledger.complete("t", "k1", "worker-a", Outcome.FILTERED)
    assert [r.outcome for r in ledger.list_messages("t", Outcome.CREATED)] == [Outcome.CREATED]


def test_claims_are_per_tenant(ledger: Ledger) -> None:
    ledger.claim("alpha", "same-key", "w", 60, {})
    ledger.complete("alpha", "same-key", "w", Outcome.CREATED)

    claimed, finished = ledger.claim("beta", "same-key", "w", 60, {})
    assert claimed is not None and finished is None
    assert list(ledger.list_messages("gamma")) == []
    assert [r.tenant_id for r in ledger.list_messages("beta")] == ["beta"]


def test_pending_deletions_carry_the_fetched_identity_and_old_items_their_message_id(ledger: Ledger) -> None:
    ledger.claim("t", "k-new", "w", 60, {"message_id": "<new@x>"})
    ledger.claim("t", "k-old", "w", 60, {"message_id": "<old@x>"})
    ledger.record_source("t", "m", "7:1", "k-new", True, "sha256:abc")
    ledger.record_source("t", "m", "2", "k-old", True)  # as items were written before identities
    ledger.record_source("t", "m", "7:3", "k-new", False, "sha256:def")

    pending = {p.source_ref: p for p in ledger.pending_deletions("t", "m")}
    ledger.deletions_dropped("t", "m", {"7:1": "UIDVALIDITY changed"})

    assert set(pending) == {"7:1", "2"}
    assert (pending["7:1"].identity, pending["7:1"].message_id) == ("sha256:abc", None)
    assert (pending["2"].identity, pending["2"].message_id) == (None, "<old@x>")
    assert [p.source_ref for p in ledger.pending_deletions("t", "m")] == ["2"]
