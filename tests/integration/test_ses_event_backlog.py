"""SesEventBacklog against moto's SQS: a resend is allowed only when both queues are known,
readable and empty."""

from __future__ import annotations

from typing import Any

import boto3

from emailrouter.outbound.event_backlog import SesEventBacklog


def _queues(aws: boto3.Session) -> tuple[Any, str, str]:
    sqs = aws.client("sqs")
    return (
        sqs,
        sqs.create_queue(QueueName="ses-events")["QueueUrl"],
        sqs.create_queue(QueueName="ses-events-dlq")["QueueUrl"],
    )


def test_empty_queues_allow_a_resend_and_any_message_holds_it(aws: boto3.Session) -> None:
    sqs, queue, dlq = _queues(aws)
    backlog = SesEventBacklog(queue, dlq, sqs)
    assert backlog.waiting() is None

    sqs.send_message(QueueUrl=dlq, MessageBody="event")

    assert backlog.waiting() == "the ses-events DLQ holds 1 message(s)"


def test_a_message_in_flight_in_the_queue_still_holds_the_resend(aws: boto3.Session) -> None:
    sqs, queue, dlq = _queues(aws)
    sqs.send_message(QueueUrl=queue, MessageBody="event")
    sqs.receive_message(QueueUrl=queue, VisibilityTimeout=60)  # ses_events retrying it

    assert SesEventBacklog(queue, dlq, sqs).waiting() == "the ses-events queue holds 1 message(s)"


def test_unknown_or_unreadable_queues_never_allow_a_resend(aws: boto3.Session) -> None:
    sqs, queue, _ = _queues(aws)

    assert "not configured" in (SesEventBacklog(queue, "", sqs).waiting() or "")
    missing = queue.rsplit("/", 1)[0] + "/no-such-queue"
    assert "cannot be read" in (SesEventBacklog(missing, missing, sqs).waiting() or "")
