"""LocalSesEventPublisher: the SES events the mailbox simulator would produce, published to the
stack's SesEventsTopic and delivered by moto's SNS to the SesEventsQueue.

Expectations are the documented ones:
- mailbox simulator outcomes: https://docs.aws.amazon.com/ses/latest/DeveloperGuide/mailbox-simulator.html
- event JSON: https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-examples.html
- SNS→SQS without raw delivery: the SQS body is the SNS Notification envelope, event in `Message`.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from emailrouter.local.ses_events import LocalSesEventPublisher, simulator_scenario
from emailrouter.local.stack import LocalStack, StackEndpoints
from emailrouter.outbound.events import parse_ses_event
from emailrouter.outbound.router_id import deployment_keys, sign

SENDER = "uma@acme.example"
SUCCESS = "success@simulator.amazonses.com"
BOUNCE = "bounce@simulator.amazonses.com"

RAW = (
    "From: Uma Example <uma@acme.example>\r\n"
    "To: Success <success@simulator.amazonses.com>\r\n"
    "Cc: bounce@simulator.amazonses.com\r\n"
    "Subject: Quote for you CRM:0001001\r\n"
    "Message-ID: <e-1.acme@router.example>\r\n"
    "Date: Fri, 27 Nov 2026 05:00:00 +0000\r\n"
    "X-EmailRouter-Id: acme/e-1\r\n"
    "References: <e-1.acme@router.example>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Hello\r\n"
)


def _raw(to: str, cc: str | None = None, extra: str = "") -> bytes:
    lines = [
        "From: Uma Example <uma@acme.example>",
        f"To: {to}",
        *([f"Cc: {cc}"] if cc else []),
        "Subject: Status",
        "X-EmailRouter-Id: acme/e-2",
        *([extra] if extra else []),
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "Hi",
        "",
    ]
    return "\r\n".join(lines).encode()


def _sesv2() -> Any:
    client = boto3.client("sesv2")  # the stack points AWS_ENDPOINT_URL and the region at moto
    client.create_email_identity(EmailIdentity="acme.example")
    return client


def _send(client: Any, raw: bytes, recipients: list[str]) -> str:
    response = client.send_email(
        FromEmailAddress=SENDER,
        Destination={"ToAddresses": recipients},
        Content={"Raw": {"Data": raw}},
    )
    return str(response["MessageId"])


def _endpoints(stack: LocalStack) -> StackEndpoints:
    assert stack.endpoints is not None
    return stack.endpoints


def _publisher(stack: LocalStack) -> LocalSesEventPublisher:
    endpoints = _endpoints(stack)
    return LocalSesEventPublisher(
        endpoints.aws_endpoint, endpoints.resources["SesEventsTopic"], endpoints.region
    )


def _ses_events_queue(stack: LocalStack) -> str:
    assert stack.runner is not None
    (binding,) = [q for q in stack.runner.queues if q.function == "SesEventsFunction"]
    return binding.queue_url


def _receive_all(queue_url: str, expected: int) -> list[dict[str, Any]]:
    """Every message on the queue (deleted as read), failing if the count is not `expected`."""
    sqs = boto3.client("sqs")
    bodies: list[dict[str, Any]] = []
    for _ in range(20):
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not messages:
            break
        for message in messages:
            bodies.append({"raw": message["Body"], **json.loads(message["Body"])})
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    assert len(bodies) == expected, [json.loads(b["Message"])["eventType"] for b in bodies]
    return bodies


def _events(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(body["Message"]) for body in bodies]


def _outcomes(events: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(eventType, recipient) for every per-recipient event."""
    pairs: set[tuple[str, str]] = set()
    for event in events:
        kind = event["eventType"]
        if kind == "Delivery":
            pairs.update((kind, r) for r in event["delivery"]["recipients"])
        elif kind == "Bounce":
            pairs.update((kind, r["emailAddress"]) for r in event["bounce"]["bouncedRecipients"])
        elif kind == "Complaint":
            pairs.update((kind, r["emailAddress"]) for r in event["complaint"]["complainedRecipients"])
    return pairs


# ---- the simulator outcomes, end to end through SNS and SQS -----------------------------------


def test_success_and_bounce_recipients_get_send_delivery_and_permanent_bounce(
    local_stack: LocalStack,
) -> None:
    client = _sesv2()
    message_id = _send(client, RAW.encode(), [SUCCESS, BOUNCE])

    published = _publisher(local_stack).pump()

    assert published == 3  # Send, Delivery (success), Bounce (bounce)
    bodies = _receive_all(_ses_events_queue(local_stack), 3)
    for body in bodies:
        assert body["Type"] == "Notification"
        assert body["TopicArn"] == _endpoints(local_stack).resources["SesEventsTopic"]
    events = _events(bodies)
    assert sorted(e["eventType"] for e in events) == ["Bounce", "Delivery", "Send"]
    assert _outcomes(events) == {("Delivery", SUCCESS), ("Bounce", BOUNCE)}
    (send,) = [e for e in events if e["eventType"] == "Send"]
    assert send["send"] == {}
    (delivery,) = [e for e in events if e["eventType"] == "Delivery"]
    assert delivery["delivery"]["smtpResponse"].startswith("250 ")
    (bounce,) = [e for e in events if e["eventType"] == "Bounce"]
    assert bounce["bounce"]["bounceType"] == "Permanent"
    assert bounce["bounce"]["bounceSubType"] == "General"
    assert bounce["bounce"]["bouncedRecipients"] == [
        {
            "emailAddress": BOUNCE,
            "action": "failed",
            "status": "5.1.1",
            "diagnosticCode": "smtp; 550 5.1.1 user unknown",
        }
    ]
    assert all(e["mail"]["messageId"] == message_id for e in events)


def test_mail_object_carries_the_sendemail_id_and_the_submitted_headers(local_stack: LocalStack) -> None:
    client = _sesv2()
    message_id = _send(client, RAW.encode(), [SUCCESS, BOUNCE])

    _publisher(local_stack).pump()

    events = _events(_receive_all(_ses_events_queue(local_stack), 3))
    mail = events[0]["mail"]
    assert mail["messageId"] == message_id
    assert mail["source"] == SENDER
    assert mail["destination"] == [SUCCESS, BOUNCE]  # moto's appended header copies are not recipients
    assert mail["headersTruncated"] is False
    assert mail["sendingAccountId"] == "123456789012"
    assert mail["timestamp"].endswith("Z") and len(mail["timestamp"]) == len("2026-11-27T05:00:00.000Z")
    assert [h["name"] for h in mail["headers"]] == [
        "From",
        "To",
        "Cc",
        "Subject",
        "Message-ID",
        "Date",
        "X-EmailRouter-Id",
        "References",
        "MIME-Version",
        "Content-Type",
    ]
    assert {"name": "X-EmailRouter-Id", "value": "acme/e-1"} in mail["headers"]
    assert mail["commonHeaders"] == {
        "from": ["Uma Example <uma@acme.example>"],
        "date": "Fri, 27 Nov 2026 05:00:00 +0000",
        "to": ["Success <success@simulator.amazonses.com>"],
        "cc": ["bounce@simulator.amazonses.com"],
        "messageId": message_id,  # SES's id, documented; not the submitted Message-ID
        "subject": "Quote for you CRM:0001001",
    }
    assert mail["tags"]["ses:from-domain"] == ["acme.example"]
    assert mail["tags"]["ses:configuration-set"] == [
        _endpoints(local_stack).environment["SES_CONFIGURATION_SET"]
    ]
    assert "tenant_id" not in mail["tags"]  # moto drops SendEmail's EmailTags


def test_parse_ses_event_reads_the_published_events(local_stack: LocalStack) -> None:
    client = _sesv2()
    # Without SES's message tags (moto drops them), the router's signed header names the email.
    signed = RAW.replace("acme/e-1", sign("acme", "e-1", deployment_keys().signing_key()))
    message_id = _send(client, signed.encode(), [SUCCESS, BOUNCE])

    _publisher(local_stack).pump()

    parsed = {
        e.event_type: e
        for e in (parse_ses_event(b["raw"]) for b in _receive_all(_ses_events_queue(local_stack), 3))
    }
    assert set(parsed) == {"Send", "Delivery", "Bounce"}
    for event in parsed.values():
        assert (event.tenant_id, event.email_id, event.ses_message_id) == ("acme", "e-1", message_id)
    assert parsed["Send"].permanent_failure is False
    assert parsed["Delivery"].permanent_failure is False
    assert parsed["Bounce"].permanent_failure is True
    assert parsed["Bounce"].suppress == (BOUNCE,)


def test_a_second_pump_publishes_nothing(local_stack: LocalStack) -> None:
    client = _sesv2()
    _send(client, RAW.encode(), [SUCCESS])
    publisher = _publisher(local_stack)
    assert publisher.pump() == 2

    assert publisher.pump() == 0

    queue = _ses_events_queue(local_stack)
    _receive_all(queue, 2)
    _send(client, _raw(SUCCESS), [SUCCESS])
    assert publisher.pump() == 2  # only the new message
    _receive_all(queue, 2)


def test_complaint_suppressionlist_and_ooto_addresses(local_stack: LocalStack) -> None:
    client = _sesv2()
    complaint, suppressed, ooto = (
        "complaint@simulator.amazonses.com",
        "suppressionlist@simulator.amazonses.com",
        "ooto@simulator.amazonses.com",
    )
    _send(client, _raw(f"{complaint}, {suppressed}, {ooto}"), [complaint, suppressed, ooto])

    assert _publisher(local_stack).pump() == 5  # Send, Delivery+Complaint, Bounce, Delivery

    events = _events(_receive_all(_ses_events_queue(local_stack), 5))
    assert _outcomes(events) == {
        ("Delivery", complaint),
        ("Complaint", complaint),
        ("Bounce", suppressed),
        ("Delivery", ooto),
    }
    (complained,) = [e["complaint"] for e in events if e["eventType"] == "Complaint"]
    assert complained["complaintFeedbackType"] == "abuse"
    assert complained["complainedRecipients"] == [{"emailAddress": complaint}]
    (bounce,) = [e["bounce"] for e in events if e["eventType"] == "Bounce"]
    assert (bounce["bounceType"], bounce["bounceSubType"]) == ("Permanent", "OnAccountSuppressionList")
    parsed = [parse_ses_event(json.dumps(e)) for e in events]
    assert {p.event_type: p.suppress for p in parsed if p.suppress} == {
        "Complaint": (complaint,),
        "Bounce": (suppressed,),
    }


def test_envelope_is_the_destination_deduplicated_without_display_names(local_stack: LocalStack) -> None:
    client = _sesv2()
    # Header To names a second address that is not in the envelope: SES does not deliver to it.
    raw = _raw("Carl <carl@client.example>, Success <success@simulator.amazonses.com>")
    _send(client, raw, ["Success <SUCCESS@simulator.amazonses.com>", "success@simulator.amazonses.com"])

    assert _publisher(local_stack).pump() == 2

    events = _events(_receive_all(_ses_events_queue(local_stack), 2))
    assert events[0]["mail"]["destination"] == ["SUCCESS@simulator.amazonses.com"]
    assert events[0]["mail"]["commonHeaders"]["to"] == [
        "Carl <carl@client.example>",
        "Success <success@simulator.amazonses.com>",
    ]


def test_without_destination_the_header_recipients_are_the_envelope(local_stack: LocalStack) -> None:
    client = _sesv2()
    client.send_email(
        FromEmailAddress=SENDER, Content={"Raw": {"Data": _raw("carl@client.example", cc=BOUNCE)}}
    )

    assert _publisher(local_stack).pump() == 3

    events = _events(_receive_all(_ses_events_queue(local_stack), 3))
    assert _outcomes(events) == {("Delivery", "carl@client.example"), ("Bounce", BOUNCE)}


def test_x_ses_headers_set_configuration_set_and_tags(local_stack: LocalStack) -> None:
    client = _sesv2()
    raw = _raw(
        SUCCESS,
        extra="X-SES-CONFIGURATION-SET: other-set\r\nX-SES-MESSAGE-TAGS: tenant_id=acme, email_id=e-9",
    )
    _send(client, raw, [SUCCESS])

    _publisher(local_stack).pump()

    (send, _delivery) = _events(_receive_all(_ses_events_queue(local_stack), 2))
    assert send["mail"]["tags"] == {
        "tenant_id": ["acme"],
        "email_id": ["e-9"],
        "ses:configuration-set": ["other-set"],
        "ses:from-domain": ["acme.example"],
    }
    assert parse_ses_event(json.dumps(send)).email_id == "e-9"  # tags win over the header


# ---- address classification (no I/O) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "scenario"),
    [
        ("success@simulator.amazonses.com", "success"),
        ("Bounce+label1@Simulator.AmazonSES.com", "bounce"),  # labels are documented
        ("complaint+x@simulator.amazonses.com", "complaint"),
        ("bounce@example.com", None),
        ("bounce@simulator.amazonses.com.example", None),
    ],
)
def test_simulator_scenario(address: str, scenario: str | None) -> None:
    assert simulator_scenario(address) == scenario
