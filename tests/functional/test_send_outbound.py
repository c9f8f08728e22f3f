"""Pending Send → SES (moto, raw) → Sent, through dispatch_outbound and send_outbound."""

from __future__ import annotations

import time
from email import policy
from email.parser import BytesParser
from typing import Any

import pytest
import requests

from emailrouter import aws
from emailrouter.clock import iso
from emailrouter.ledger.models import OutboundState
from emailrouter.ledger.store import Ledger
from emailrouter.local.sqs_events import schedule_event, sqs_event
from emailrouter.local.stack import LocalStack
from emailrouter.outbound.ses import ses_assigned_message_id
from emailrouter.routing.faults import FaultPoints
from emailrouter.runtime import reset_runtime
from tests.helpers import add_tenant, crm_get, pending_send, seed_org


def _pending_send(stack: LocalStack, subject: str, to: str = "carl@client.example") -> str:
    return pending_send(stack, subject, to)


def _ses_sent(stack: LocalStack) -> list[dict[str, Any]]:
    assert stack.endpoints is not None
    data = requests.get(f"{stack.endpoints.aws_endpoint}/moto-api/data.json", timeout=10).json()
    sent: list[dict[str, Any]] = []
    for service in ("ses", "sesv2"):
        for name, items in (data.get(service) or {}).items():
            if "Message" in name and isinstance(items, list):
                sent += items
    return sent


def _prepare(stack: LocalStack) -> None:
    seed_org(stack)
    add_tenant(stack)
    aws.client("sesv2").create_email_identity(EmailIdentity="acme.example")


def test_pending_send_email_goes_out_once_and_is_marked_sent(local_stack: LocalStack) -> None:
    _prepare(local_stack)
    email_id = _pending_send(local_stack, "Your order")

    assert local_stack.runner is not None and local_stack.runner.run_until_idle(rounds=2, max_seconds=60)

    sent = _ses_sent(local_stack)
    assert len(sent) == 1
    message = BytesParser(policy=policy.default).parsebytes(
        sent[0]["raw_data"].encode() if isinstance(sent[0]["raw_data"], str) else sent[0]["raw_data"]
    )
    assert message["Subject"] == "Your order"
    assert message["To"].addresses[0].addr_spec == "carl@client.example"
    assert message["From"].addresses[0].addr_spec == "uma@acme.example"
    row = crm_get(local_stack, f"emails({email_id})?$select=statecode,statuscode,messageid")
    assert (row["statecode"], row["statuscode"]) == (1, 3)
    # Once SES accepted it, the CRM email keeps the Message-ID SES gave it (what replies carry).
    assert row["messageid"] == ses_assigned_message_id(sent[0]["id"], "eu-west-1")


def test_crash_right_after_ses_accepted_before_sent_is_recorded_never_sends_twice(
    local_stack: LocalStack,
) -> None:
    """The worker dies between SES's answer and the ledger's Sent: the intent has no SES id.
    SES's Send event (published by the stack's stand-in) settles it; no second send, ever."""
    seed_org(local_stack)
    add_tenant(local_stack, outbound={"sending_status_delay_minutes": 0.02})  # 1.2 s
    aws.client("sesv2").create_email_identity(EmailIdentity="acme.example")
    email_id = _pending_send(local_stack, "Only once, SES answered")
    faults = FaultPoints()
    faults.arm("after_ses_accepted")
    reset_runtime(faults)
    runner = local_stack.runner
    assert runner is not None and runner.run_until_idle(rounds=1, max_seconds=60)
    assert runner.stats.crashed_invocations == 1 and faults.crashed == {"after_ses_accepted": 1}
    # More dispatches well past the sending-status delay, as the minute schedule would make them.
    for _ in range(3):
        time.sleep(1.5)
        runner.fire_due_schedules(force=True)
        assert runner.drain(60)

    (sent,) = _ses_sent(local_stack)
    record = Ledger().get_outbound("acme", email_id)
    assert record is not None and record.state is OutboundState.SENT
    assert record.ses_message_id == sent["id"]
    row = crm_get(local_stack, f"emails({email_id})?$select=statecode,statuscode,messageid")
    assert (row["statecode"], row["statuscode"]) == (1, 3)
    assert row["messageid"] == ses_assigned_message_id(sent["id"], "eu-west-1")


def test_crash_after_sent_is_recorded_never_sends_twice(local_stack: LocalStack) -> None:
    _prepare(local_stack)
    email_id = _pending_send(local_stack, "Only once")
    faults = FaultPoints()
    faults.arm("before_mark_sent")
    reset_runtime(faults)

    assert local_stack.runner is not None and local_stack.runner.run_until_idle(rounds=2, max_seconds=60)

    assert local_stack.runner.stats.crashed_invocations == 1
    assert len(_ses_sent(local_stack)) == 1
    row = crm_get(local_stack, f"emails({email_id})?$select=statecode,statuscode")
    assert (row["statecode"], row["statuscode"]) == (1, 3)


def test_unverified_sender_marks_email_failed_with_reason(local_stack: LocalStack) -> None:
    from emailrouter.ledger.store import Ledger

    seed_org(local_stack)
    add_tenant(local_stack)  # no SES identity verified
    email_id = _pending_send(local_stack, "Will bounce at SES")

    assert local_stack.runner is not None and local_stack.runner.run_until_idle(rounds=2, max_seconds=60)

    assert _ses_sent(local_stack) == []
    row = crm_get(local_stack, f"emails({email_id})?$select=statecode,statuscode")
    assert (row["statecode"], row["statuscode"]) == (0, 8)
    record = Ledger().get_outbound("acme", email_id)
    assert record is not None and "MessageRejected" in record.reason


def test_tenant_tracking_tokens_go_on_the_subject_and_the_crm_email(local_stack: LocalStack) -> None:
    seed_org(local_stack)
    add_tenant(local_stack, tracking_token={"enabled": True, "prefix": "CRM", "base": 0})
    aws.client("sesv2").create_email_identity(EmailIdentity="acme.example")
    first = _pending_send(local_stack, "Quote A")
    second = _pending_send(local_stack, "Quote B")

    assert local_stack.runner is not None and local_stack.runner.run_until_idle(rounds=2, max_seconds=60)

    subjects = sorted(
        str(BytesParser(policy=policy.default).parsebytes(m["raw_data"].encode())["Subject"])
        for m in _ses_sent(local_stack)
    )
    assert subjects == ["Quote A CRM:0001001", "Quote B CRM:0001002"] or subjects == [
        "Quote A CRM:0001002",
        "Quote B CRM:0001001",
    ]
    tokens = {
        crm_get(local_stack, f"emails({e})?$select=trackingtoken")["trackingtoken"] for e in (first, second)
    }
    assert tokens == {"CRM:0001001", "CRM:0001002"}


@pytest.mark.timeout(600)
def test_a_batch_of_sends_to_a_hung_crm_ends_within_the_invocations_remaining_time(
    local_stack: LocalStack,
) -> None:
    """Three jobs in one batch, the organization answering nothing for 8 s: the invocation ends
    inside the time it has, and every job goes back to its queue (none lost, none sent)."""
    _prepare(local_stack)
    ids = [_pending_send(local_stack, f"Hung #{n}") for n in range(3)]
    runner, endpoints = local_stack.runner, local_stack.endpoints
    assert runner is not None and endpoints is not None
    runner.invoke("DispatchOutboundFunction", schedule_event("dispatch-outbound", endpoints.region, iso()))
    binding = next(b for b in runner.queues if b.function == "SendOutboundFunction")
    messages = aws.client("sqs").receive_message(
        QueueUrl=binding.queue_url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=600,
        AttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    )["Messages"]
    assert len(messages) == 3
    local_stack.dataverse.set_faults([{"kind": "latency", "delay_ms": 8_000}])
    asked_before = local_stack.dataverse.stats()["http_requests"]

    started = time.monotonic()
    response = runner.invoke(
        "SendOutboundFunction",
        sqs_event(messages, binding.queue_arn, endpoints.region),
        timeout_seconds=6,
    )
    elapsed = time.monotonic() - started

    assert elapsed < 6
    time.sleep(8)  # the organization's late answer is counted once it is written
    assert local_stack.dataverse.stats()["http_requests"] > asked_before  # the CRM was asked
    failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
    assert failed == {m["MessageId"] for m in messages}  # every job back to its queue
    assert _ses_sent(local_stack) == []
    local_stack.dataverse.clear_faults()
    for email_id in ids:
        assert crm_get(local_stack, f"emails({email_id})?$select=statuscode")["statuscode"] == 6


@pytest.mark.timeout(300)
def test_a_queued_send_of_a_tenant_whose_crm_breaker_is_open_asks_nothing_and_goes_out_after_it_closes(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_BREAKER_THRESHOLD", "1")
    monkeypatch.setenv("CRM_BREAKER_COOLDOWN_SECONDS", "3")
    reset_runtime()
    _prepare(local_stack)
    email_id = _pending_send(local_stack, "After the outage")
    runner, endpoints = local_stack.runner, local_stack.endpoints
    assert runner is not None and endpoints is not None
    dispatch = schedule_event("dispatch-outbound", endpoints.region, iso())
    assert runner.invoke("DispatchOutboundFunction", dispatch)["enqueued"] == 1  # the job is queued
    local_stack.dataverse.set_faults([{"kind": "latency", "delay_ms": 2_500}])
    errors = runner.invoke("DispatchOutboundFunction", dispatch, timeout_seconds=2)["errors"]
    assert "CrmTimeoutError" in errors[0]  # the breaker opens
    local_stack.dataverse.clear_faults()
    send = next(b for b in runner.queues if b.function == "SendOutboundFunction")
    polled_at = time.monotonic()  # the emulator's journal runs on this process's monotonic clock

    assert runner.poll_queue(send) == 1

    time.sleep(2.6)  # requests of the timed-out dispatch are journaled once answered
    assert [e for e in local_stack.dataverse.journal_entries() if e.arrived >= polled_at] == []
    assert _ses_sent(local_stack) == []
    time.sleep(0.5)  # the cool-down is over
    assert runner.invoke("DispatchOutboundFunction", dispatch)["enqueued"] == 1  # the trial run
    assert runner.poll_queue(send) == 1
    assert len(_ses_sent(local_stack)) == 1
    assert crm_get(local_stack, f"emails({email_id})?$select=statuscode")["statuscode"] == 3
