"""Several invocations of one function at once, as Lambda runs them: each worker has its own
Runtime (its own clients and caches, as a separate instance would), against the local stack's
moto, Dataverse emulator and Dovecot. Where the race needs both workers past a read before
either writes, they wait for each other there (a barrier in an injected callback), so the
interleaving is the one under test, every run."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

from emailrouter import aws
from emailrouter.clock import iso
from emailrouter.config import get_settings
from emailrouter.ledger.models import OutboundState, Outcome
from emailrouter.ledger.store import ClaimBusyError, Ledger
from emailrouter.local.stack import LocalStack
from emailrouter.outbound.jobs import send_one
from emailrouter.outbound.send import SendResult
from emailrouter.queues.messages import InboundMessage, OutboundJob, PollJob
from emailrouter.routing.faults import FaultPoints
from emailrouter.routing.outcomes import DeliveryResult
from emailrouter.runtime import Runtime
from emailrouter.sources.jobs import run_poll_job
from tests.helpers import (
    TENANT,
    StepBarrier,
    add_tenant,
    crm_get,
    dataverse_journal,
    dovecot_mailbox,
    incoming_emails,
    pending_send,
    raw_mail,
    run_concurrently,
    seed_org,
)

pytestmark = pytest.mark.timeout(120)


def _ses_messages(stack: LocalStack) -> list[str]:
    """The raw messages moto's SES accepted."""
    assert stack.endpoints is not None
    data = requests.get(f"{stack.endpoints.aws_endpoint}/moto-api/data.json", timeout=10).json()
    return [str(message["raw_data"]) for message in (data.get("ses") or {}).get("RawMessage", [])]


def _worker(faults: FaultPoints | None = None) -> Runtime:
    """A worker as a separate Lambda instance has it: its own runtime, clients and caches."""
    return Runtime(get_settings(), faults or FaultPoints())


def _hold_before_first(runtime: Runtime, operation: str, barrier: threading.Barrier) -> None:
    """The worker's first ledger `operation` (a DynamoDB operation name) waits at `barrier`."""
    waited = threading.Event()

    def hold(**_: Any) -> None:
        if not waited.is_set():
            waited.set()
            barrier.wait()

    runtime.ledger._ddb.meta.events.register(f"before-call.dynamodb.{operation}", hold)


def _prepare_outbound(stack: LocalStack) -> None:
    seed_org(stack)
    add_tenant(stack, mailboxes=[])
    aws.client("sesv2").create_email_identity(EmailIdentity="acme.example")


def _job(email_id: str) -> OutboundJob:
    return OutboundJob(tenant_id=TENANT, email_id=email_id, enqueued_at=iso())


def test_two_senders_of_one_pending_send_email_the_stale_etag_gets_412_and_sends_nothing(
    local_stack: LocalStack,
) -> None:
    _prepare_outbound(local_stack)
    email_id = pending_send(local_stack, "Raced once")
    workers = [_worker(), _worker()]
    # Both have read the email (the same ETag) before either claims it: each waits at its first
    # suppression lookup, the step between reading the email and the If-Match claim.
    both_read = threading.Barrier(2, timeout=10)
    for worker in workers:
        _hold_before_first(worker, "BatchGetItem", both_read)

    outcome = run_concurrently([lambda w=w: send_one(w, _job(email_id)) for w in workers])

    assert outcome.raised() == []
    results: list[SendResult] = outcome.results
    assert sorted(r.state for r in results) == ["sent", "skipped"]
    loser = next(r for r in results if r.state == "skipped")
    assert loser.reason == "claimed by another worker"
    claims = [
        e
        for e in dataverse_journal(local_stack)
        if e["method"] == "PATCH" and email_id in e["path"] and e["status"] == 412
    ]
    assert len(claims) == 1, claims
    sent = _ses_messages(local_stack)
    assert len(sent) == 1 and "Subject: Raced once" in sent[0]
    record = Ledger().get_outbound(TENANT, email_id)
    assert record is not None and (record.state, record.attempts) == (OutboundState.SENT, 1)
    row = crm_get(local_stack, f"emails({email_id})?$select=statecode,statuscode")
    assert (row["statecode"], row["statuscode"]) == (1, 3)


def test_two_send_intents_for_one_email_only_one_wins_and_one_message_goes_out(
    local_stack: LocalStack,
) -> None:
    """The email is already Sending (a claim whose worker stopped before its intent): no CRM
    claim stands between the two workers, only the ledger intent."""
    _prepare_outbound(local_stack)
    email_id = pending_send(local_stack, "Intent raced")
    assert local_stack.endpoints is not None
    requests.patch(
        f"{local_stack.endpoints.dataverse_url}/api/data/v9.2/emails({email_id})",
        json={"statecode": 1, "statuscode": 7},
        headers={"Authorization": f"Bearer {local_stack.endpoints.dataverse_token}"},
        timeout=10,
    ).raise_for_status()
    both_claimed = StepBarrier("after_claim", 2)
    workers = [_worker(both_claimed), _worker(both_claimed)]

    outcome = run_concurrently([lambda w=w: send_one(w, _job(email_id)) for w in workers])

    assert outcome.raised() == []
    results: list[SendResult] = outcome.results
    assert sorted((r.state, r.reason) for r in results) == [
        ("sent", ""),
        ("skipped", "a send is already recorded"),
    ]
    assert len(_ses_messages(local_stack)) == 1
    record = Ledger().get_outbound(TENANT, email_id)
    winner = next(r for r in results if r.state == "sent")
    assert record is not None and record.state is OutboundState.SENT
    assert (record.ses_message_id, record.attempts) == (winner.ses_message_id, 1)


def _inbound(raw: bytes, mailbox_id: str, source_ref: str) -> InboundMessage:
    import base64

    return InboundMessage(
        tenant_id=TENANT,
        mailbox_id=mailbox_id,
        source_ref=source_ref,
        fetched_at=iso(),
        size=len(raw),
        raw_b64=base64.b64encode(raw).decode(),
    )


@pytest.mark.parametrize(
    "sources",
    [(("help", "ref-1"), ("help", "ref-1")), (("help", "ref-1"), ("sales", "ref-9"))],
    ids=["one-mailbox-redelivered", "two-mailboxes"],
)
def test_two_deliveries_of_one_message_at_once_make_one_crm_email_and_one_duplicate(
    local_stack: LocalStack, sources: tuple[tuple[str, str], tuple[str, str]]
) -> None:
    """The same message in two queue deliveries (two batches, two owners; the same mailbox's
    message delivered twice, or one message that reached two mailboxes) claimed at the same
    moment: one creates the CRM email; the other is refused the claim and goes back to its
    queue, and on its redelivery is recorded a duplicate of the first. Each outcome is read
    from its own delivery's result and from the ledger."""
    seed_org(local_stack)
    mailbox = {"protocol": "pop3", "host": "127.0.0.1", "port": 1, "security": "none", "tracking": "all"}
    add_tenant(
        local_stack,
        [
            {
                **mailbox,
                "mailbox_id": m,
                "address": f"{m}@acme.example",
                "credential_secret": f"emailrouter/{TENANT}/{m}",
            }
            for m in ("help", "sales")
        ],
    )
    raw = raw_mail(subject="Delivered twice", message_id="<race-1@client.example>")
    messages = [_inbound(raw, mailbox_id, ref) for mailbox_id, ref in sources]
    # Each waits, right after its claim, until both have claimed: the claims meet.
    both_claimed = StepBarrier("after_claim", 2)
    workers = [_worker(both_claimed), _worker(both_claimed)]
    owners = ["sqs-delivery-a", "sqs-delivery-b"]

    def deliver(index: int) -> DeliveryResult | BaseException:
        return workers[index].delivery.deliver_batch([(messages[index], owners[index])])[0]

    outcome = run_concurrently([lambda i=i: deliver(i) for i in range(2)])

    assert outcome.raised() == []
    created = [r for r in outcome.results if isinstance(r, DeliveryResult) and r.outcome is Outcome.CREATED]
    assert len(created) == 1, outcome.results
    first = created[0]
    other_index = 1 - outcome.results.index(first)
    other = outcome.results[other_index]
    # Refused while the first held the claim: back to its queue, then redelivered.
    assert isinstance(other, ClaimBusyError), other
    again = workers[other_index].delivery.deliver_batch([(messages[other_index], owners[other_index])])[0]
    assert isinstance(again, DeliveryResult), again
    assert again.outcome is Outcome.DUPLICATE and again.message_key == first.message_key
    assert again.crm_email_id == first.crm_email_id

    emails = incoming_emails(local_stack)
    assert [e["activityid"] for e in emails] == [first.crm_email_id]
    record = Ledger().get(TENANT, first.message_key)
    assert record is not None
    assert (record.status, record.outcome, record.crm_email_id) == (
        "done",
        Outcome.CREATED,
        first.crm_email_id,
    )


def _handed_off(stack: LocalStack) -> list[tuple[str, str]]:
    """(mailbox_id, source_ref) of every message on the inbound queue, taken off it."""
    assert stack.endpoints is not None
    sqs = aws.client("sqs")
    url = stack.endpoints.environment["INBOUND_QUEUE_URL"]
    found: list[tuple[str, str]] = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300).get(
            "Messages", []
        )
        if not batch:
            return found
        for message in batch:
            body = InboundMessage.model_validate_json(message["Body"])
            found.append((body.mailbox_id, body.source_ref))


def _polled_mailbox(stack: LocalStack, protocol: str, count: int) -> str:
    assert stack.dovecot is not None
    seed_org(stack)
    mailbox = f"{protocol}race"
    add_tenant(stack, [dovecot_mailbox(stack, mailbox, protocol)])
    for n in range(count):
        stack.dovecot.deliver(
            mailbox, raw_mail(subject=f"Polled {n}", message_id=f"<poll-{n}@client.example>")
        )
    return mailbox


@pytest.mark.dovecot
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_one_poll_job_run_twice_at_once_hands_each_message_off_once(
    full_stack: LocalStack, protocol: str
) -> None:
    """SQS delivers a poll job twice and two instances take it at once: one polls, the other
    is refused by the job's idempotency record while the first is in progress (or, when the
    first has finished, answers its result without polling)."""
    mailbox = _polled_mailbox(full_stack, protocol, 5)
    job = PollJob(
        tenant_id=TENANT,
        mailbox_id=mailbox,
        job_id=f"{TENANT}/{mailbox}/2026-12-08T00:00",
        scheduled_at=iso(),
    )
    workers = [_worker(), _worker()]

    outcome = run_concurrently([lambda w=w: run_poll_job(w, job) for w in workers])

    for error in outcome.raised():
        assert isinstance(error, IdempotencyAlreadyInProgressError), error
    answered = [r for r in outcome.results if r is not None]
    assert answered and all(r["fetched"] == 5 for r in answered), outcome.results
    refs = _handed_off(full_stack)
    assert len(refs) == 5 and len(set(refs)) == 5, refs


@pytest.mark.dovecot
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_two_polls_of_one_mailbox_at_once_hand_each_message_off_once(
    full_stack: LocalStack, protocol: str
) -> None:
    """Two poll jobs of one mailbox (a slow poll still running when the next minute's job
    arrives): the second starts while the first is inside its poll, and skips; every message
    is handed off once. The mailbox is free again once the first is done."""
    mailbox = _polled_mailbox(full_stack, protocol, 5)
    first, second = _worker(), _worker()
    first_inside, second_done = threading.Event(), threading.Event()

    def hold_first(**_: Any) -> None:  # after the first worker's first ledger write
        if not first_inside.is_set():
            first_inside.set()
            second_done.wait(10)

    first.ledger._ddb.meta.events.register("after-call.dynamodb.UpdateItem", hold_first)

    def second_poll() -> Any:
        assert first_inside.wait(10)
        try:
            return second.poller.poll(TENANT, mailbox)
        finally:
            second_done.set()

    outcome = run_concurrently([lambda: first.poller.poll(TENANT, mailbox), second_poll])

    assert outcome.raised() == []
    by_first, by_second = outcome.results
    assert (by_first.state, by_first.fetched) == ("ok", 5), by_first
    assert (by_second.state, by_second.reason, by_second.fetched) == (
        "skipped",
        "another poll of this mailbox is running",
        0,
    ), by_second
    refs = _handed_off(full_stack)
    assert len(refs) == 5 and len(set(refs)) == 5, refs
    later = _worker().poller.poll(TENANT, mailbox)
    assert (later.state, later.fetched) == ("ok", 0), later
