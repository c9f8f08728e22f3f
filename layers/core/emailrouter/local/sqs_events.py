"""SQS messages as Lambda's SQS event source hands them to a function."""

from __future__ import annotations

import hashlib
from typing import Any


def sqs_event(messages: list[dict[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """The `Records` event Lambda builds from a ReceiveMessage batch."""
    records = []
    for message in messages:
        attributes = dict(message.get("Attributes", {}))
        records.append(
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": attributes,
                "messageAttributes": message.get("MessageAttributes", {}),
                "md5OfBody": message.get("MD5OfBody") or hashlib.md5(message["Body"].encode()).hexdigest(),  # noqa: S324
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
        )
    return {"Records": records}


def schedule_event(schedule_name: str, region: str, time_iso: str) -> dict[str, Any]:
    """What EventBridge Scheduler delivers to a Lambda target by default."""
    return {
        "version": "0",
        "id": schedule_name,
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler",
        "account": "000000000000",
        "time": time_iso,
        "region": region,
        "resources": [f"arn:aws:scheduler:{region}:000000000000:schedule/default/{schedule_name}"],
        "detail": {},
    }
