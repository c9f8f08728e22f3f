"""Never twice when SES's events cannot reach the ledger for a long time (a DynamoDB or
ses_events outage): the Send event that proves an interrupted send was accepted may sit in the
ses-events DLQ, and the CRM email itself keeps SES's message id once SES has answered."""

from __future__ import annotations

import json
import time
from typing import Any

import requests
from botocore.exceptions import EndpointConnectionError

from emailrouter import aws
from emailrouter.ledger.models import OutboundState
from emailrouter.ledger.store import Ledger
from emailrouter.local.stack import LocalStack
from emailrouter.outbound.ses import ses_assigned_message_id
from emailrouter.routing.faults import FaultPoints
from emailrouter.runtime import get_runtime, reset_runtime
from tests.helpers import add_tenant, crm_get, pending_send, seed_org

DELAY_MINUTES = 0.1  # the tenant's sending-status delay, shortened: 6 s (a retried job comes back sooner)


def _ses_sent(stack: LocalStack) -> list[dict[str, Any]]:
    assert stack.endpoints is not None
    data = requests.get(f"{stack.endpoints.aws_endpoint}/moto-api/data.json", timeout=10).json()
    return list(data.get("ses", {}).get("RawMessage", []))


def _without_event_publishing(stack: LocalStack) -> None:
    """SES's events stop reaching the queue (the stand-in publisher is the runner's only pump)."""
    assert stack.runner is not None
    stack.runner.pumps.clear()


def _send_event(ses_message_id: str, email_id: str) -> str:
    event = {
        "eventType": "Send",
        "mail": {
            "timestamp": "2026-12-07T10:00:00.000Z",
            "messageId": ses_message_id,
            "tags": {"tenant_id": ["acme"], "email_id": [email_id]},
        },
        "send": {},
    }
    return json.dumps({"Type": "Notification", "MessageId": "n-1", "Message": json.dumps(event)})


def _dispatch_again(stack: LocalStack) -> None:
    assert stack.runner is not None
    time.sleep(DELAY_MINUTES * 60 + 0.5)  # past the delay, as the minute schedule would be
    stack.runner.fire_due_schedules(force=True)
    assert stack.runner.drain(60)


def test_no_resend_while_the_send_event_is_in_the_ses_events_dlq(local_stack: LocalStack) -> None:
    seed_org(local_stack)
    add_tenant(local_stack, outbound={"sending_status_delay_minutes": DELAY_MINUTES})
    aws.client("sesv2").create_email_identity(EmailIdentity="acme.example")
    _without_event_publishing(local_stack)
    email_id = pending_send(local_stack, "Only once, outage or not")
    faults = FaultPoints()
    faults.arm("after_ses_accepted")  # the worker dies before it can record SES's answer
    reset_runtime(faults)
    assert local_stack.runner is not None and local_stack.runner.run_until_idle(rounds=1, max_seconds=60)
    sent = _ses_sent(local_stack)
    assert len(sent) == 1
    # SES published the Send event, but ses_events failed on it until it dead-lettered.
    queues = local_stack.endpoints.resources  # type: ignore[union-attr]
    sqs = aws.client("sqs")
    sqs.send_message(QueueUrl=queues["SesEventsDLQ"], MessageBody=_send_event(sent[0]["id"], email_id))

    _dispatch_again(local_stack)

    assert len(_ses_sent(local_stack)) == 1  # held: the event that settles it may be in the DLQ
    record = Ledger().get_outbound("acme", email_id)
    assert record is not None and record.state is OutboundState.SENDING
    # The operator redrives the DLQ once the outage is over; the event settles the send.
    message = sqs.receive_message(QueueUrl=queues["SesEventsDLQ"])["Messages"][0]
    sqs.send_message(QueueUrl=queues["SesEventsQueue"], MessageBody=message["Body"])
    sqs.delete_message(QueueUrl=queues["SesEventsDLQ"], ReceiptHandle=message["ReceiptHandle"])
    assert local_stack.runner.drain(60)
    _dispatch_again(local_stack)

    assert len(_ses_sent(local_stack)) == 1
    row = crm_get(local_stack, f"emails({email_id})?$select=statuscode")
    assert row["statuscode"] == 3
    after = Ledger().get_outbound("acme", email_id)
    assert after is not None and after.state is OutboundState.SENT


def test_no_resend_while_the_ses_events_queue_is_backed_up(local_stack: LocalStack) -> None:
    seed_org(local_stack)
    add_tenant(local_stack, outbound={"sending_status_delay_minutes": DELAY_MINUTES})
    aws.client("sesv2").create_email_identity(EmailIdentity="acme.example")
    _without_event_publishing(local_stack)
    email_id = pending_send(local_stack, "Events are late")
    faults = FaultPoints()
    faults.arm("after_ses_accepted")
    reset_runtime(faults)
    assert local_stack.runner is not None and local_stack.runner.run_until_idle(rounds=1, max_seconds=60)
    queues = local_stack.endpoints.resources  # type: ignore[union-attr]
    # Events waiting in the queue that ses_events has not taken yet (its consumer is behind).
    local_stack.runner.queues = [q for q in local_stack.runner.queues if q.function != "SesEventsFunction"]
    aws.client("sqs").send_message(QueueUrl=queues["SesEventsQueue"], MessageBody=_send_event("x", "y"))

    _dispatch_again(local_stack)

    assert len(_ses_sent(local_stack)) == 1
    record = Ledger().get_outbound("acme", email_id)
    assert record is not None and record.state is OutboundState.SENDING


def test_ses_message_id_reaches_the_crm_email_when_the_ledger_is_down(local_stack: LocalStack) -> None:
    seed_org(local_stack)
    add_tenant(local_stack, outbound={"sending_status_delay_minutes": DELAY_MINUTES})
    aws.client("sesv2").create_email_identity(EmailIdentity="acme.example")
    _without_event_publishing(local_stack)
    email_id = pending_send(local_stack, "Ledger down right after SES")
    runtime = get_runtime()
    outage = {"failures_left": 0}

    def ses_answered(**_: Any) -> None:
        outage["failures_left"] = 2  # DynamoDB is unreachable for a while the moment SES accepted

    def dynamodb_down(**_: Any) -> None:
        if outage["failures_left"] > 0:
            outage["failures_left"] -= 1
            raise EndpointConnectionError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com")

    runtime.outbound._ses._client.meta.events.register("after-call.sesv2.SendEmail", ses_answered)
    runtime.ledger._ddb.meta.events.register("before-call.dynamodb", dynamodb_down)
    assert local_stack.runner is not None
    local_stack.runner.run_until_idle(rounds=1, max_seconds=60)

    sent = _ses_sent(local_stack)
    assert len(sent) == 1
    row = crm_get(local_stack, f"emails({email_id})?$select=statuscode,messageid")
    assert row["messageid"] == ses_assigned_message_id(sent[0]["id"], runtime.region)
    assert row["statuscode"] == 3

    _dispatch_again(local_stack)  # DynamoDB is back; no Send event ever arrives

    assert len(_ses_sent(local_stack)) == 1
    after = Ledger().get_outbound("acme", email_id)
    assert after is not None and after.state is OutboundState.SENT and after.ses_message_id == sent[0]["id"]
