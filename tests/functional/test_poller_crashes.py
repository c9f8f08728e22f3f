"""The poller dies around the hand-off, against Dovecot and the local stack.

The order is the promise: messages go to the queue first, the cursor moves after. A crash
after SQS took the batch but before the cursor was saved re-sends that batch on the next
poll, and the ledger turns the second arrival into a duplicate: every message ends in the CRM
once. A crash before SQS took it must leave the cursor where it was, or the batch is lost.
The crash is the process stopping (InjectedCrash, a BaseException the poll does not catch),
raised from botocore's own event hooks on the real SQS call.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from emailrouter import aws
from emailrouter.ledger.models import InboundRecord, Outcome
from emailrouter.local.stack import LocalStack
from emailrouter.queues.messages import InboundMessage
from emailrouter.routing.faults import InjectedCrash
from emailrouter.runtime import Runtime, reset_runtime
from emailrouter.sources.base import MailboxCursor
from emailrouter.tenancy.store import TenantStore
from tests.helpers import TENANT, add_tenant, crm_get, dovecot_mailbox, raw_mail, seed_org

pytestmark = [pytest.mark.dovecot, pytest.mark.timeout(300)]

MESSAGES = 3


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(
        workdir=tmp_path_factory.mktemp("poller-crashes") / "local", time_scale=0.005, with_dovecot=True
    )
    stack.start()
    seed_org(stack)
    yield stack
    stack.stop()


def _mailbox_with_mail(stack: LocalStack, protocol: str) -> tuple[str, list[str]]:
    assert stack.dovecot is not None
    name = f"{protocol}crash{secrets.token_hex(4)}"
    add_tenant(stack, [dovecot_mailbox(stack, name, protocol)])
    message_ids = [f"<crash-{n}-{name}@client.example>" for n in range(MESSAGES)]
    for n, message_id in enumerate(message_ids):
        stack.dovecot.deliver(name, raw_mail(subject=f"Crash {n} {name}", message_id=message_id))
    return name, message_ids


def _crash_on_hand_off(runtime: Runtime, when: str) -> dict[str, int]:
    """The process stops once, `when` ("before" or "after") SQS answers the first hand-off."""
    calls = {"batches": 0}

    def crash(**_: Any) -> None:
        calls["batches"] += 1
        if calls["batches"] == 1:
            raise InjectedCrash(f"{when} the hand-off")

    runtime.queue._sqs.meta.events.register(f"{when}-call.sqs.SendMessageBatch", crash)
    return calls


def _records(mailbox: str) -> list[InboundRecord]:
    return [r for r in reset_runtime().ledger.list_messages(TENANT) if r.mailbox_id == mailbox]


def _take_inbound(stack: LocalStack, count: int) -> list[InboundMessage]:
    """The next `count` messages on the inbound queue, taken off it (the worker's part, by hand)."""
    assert stack.endpoints is not None
    url = stack.endpoints.environment["INBOUND_QUEUE_URL"]
    sqs, taken = aws.client("sqs"), list[InboundMessage]()
    deadline = time.monotonic() + 20
    while len(taken) < count and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            taken.append(InboundMessage.model_validate_json(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert len(taken) == count, taken
    return taken


def _crm_emails_with(stack: LocalStack, message_id: str) -> int:
    body = crm_get(stack, f"emails?$filter=messageid eq '{message_id}'&$select=activityid")
    return len(body["value"])


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_crash_after_the_hand_off_before_the_cursor_save_loses_nothing_and_delivers_once(
    stack: LocalStack, protocol: str
) -> None:
    assert stack.runner is not None
    mailbox, message_ids = _mailbox_with_mail(stack, protocol)
    runtime = reset_runtime()
    calls = _crash_on_hand_off(runtime, "after")

    with pytest.raises(InjectedCrash):
        runtime.poller.poll(TENANT, mailbox)

    assert calls["batches"] == 1
    # SQS holds the batch; the cursor never moved.
    assert TenantStore().get_cursor(TENANT, mailbox) == MailboxCursor()
    assert stack.runner.drain(60)
    assert [_crm_emails_with(stack, m) for m in message_ids] == [1] * MESSAGES

    first = {r.message_id: r for r in _records(mailbox)}
    retry = reset_runtime().poller.poll(TENANT, mailbox)
    assert (retry.state, retry.fetched) == ("ok", MESSAGES), retry  # the same batch, handed off again
    # Each second arrival's own outcome, from the handler: a duplicate of the email it made.
    arrivals = _take_inbound(stack, MESSAGES)
    results = reset_runtime().delivery.deliver_batch([(m, f"retry-{m.source_ref}") for m in arrivals])
    assert all(not isinstance(r, BaseException) for r in results), results
    seen = {(r.outcome, r.crm_email_id) for r in results if not isinstance(r, BaseException)}
    assert seen == {(Outcome.DUPLICATE, first[m].crm_email_id) for m in message_ids}
    after = reset_runtime().poller.poll(TENANT, mailbox)
    assert (after.state, after.fetched) == ("ok", 0), after

    # Nothing twice: one CRM email per message; the ledger keeps each one's first outcome.
    assert [_crm_emails_with(stack, m) for m in message_ids] == [1] * MESSAGES
    records = _records(mailbox)
    assert sorted(r.message_id or "" for r in records) == sorted(message_ids)
    assert {r.outcome for r in records} == {Outcome.CREATED}


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_a_crash_before_sqs_took_the_batch_leaves_the_cursor_where_it_was(
    stack: LocalStack, protocol: str
) -> None:
    """Fails if the cursor is saved before the hand-off: the next poll would skip the batch."""
    assert stack.runner is not None
    mailbox, message_ids = _mailbox_with_mail(stack, protocol)
    runtime = reset_runtime()
    _crash_on_hand_off(runtime, "before")

    with pytest.raises(InjectedCrash):
        runtime.poller.poll(TENANT, mailbox)

    assert TenantStore().get_cursor(TENANT, mailbox) == MailboxCursor()

    assert stack.runner.drain(60)
    assert [_crm_emails_with(stack, m) for m in message_ids] == [0] * MESSAGES  # nothing was handed off
    retry = reset_runtime().poller.poll(TENANT, mailbox)
    assert (retry.state, retry.fetched) == ("ok", MESSAGES), retry
    assert stack.runner.drain(60)
    assert [_crm_emails_with(stack, m) for m in message_ids] == [1] * MESSAGES
