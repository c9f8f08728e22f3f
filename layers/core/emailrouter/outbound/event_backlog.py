"""Whether SES events may still be on their way: the ses-events queue and its DLQ.

An interrupted send is resent only when no Send event for it came within the tenant's delay
(outbound.send). That reasoning holds only if events reach the ledger: during a DynamoDB or
ses_events outage they wait in the ses-events queue, or dead-letter. So while either queue
holds anything, no interrupted send is resent; it is settled once the events are applied
(after the outage, or after the operator redrives the DLQ: `emailrouter dlq redrive ses-events`).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from emailrouter import aws

_DEPTH = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


class SesEventBacklog:
    """Reads the depth of the ses-events queue and its DLQ (SQS GetQueueAttributes).

    With neither URL set (a deployment without them) every check says events may be waiting:
    an unknown backlog never allows a resend.
    """

    def __init__(self, queue_url: str, dlq_url: str, client: Any | None = None) -> None:
        self._queues = {"ses-events queue": queue_url, "ses-events DLQ": dlq_url}
        self._sqs = client

    def waiting(self) -> str | None:
        """Why SES events may still arrive (the queue or DLQ that holds some), or None."""
        for name, url in self._queues.items():
            if not url:
                return f"the {name} is not configured (SES_EVENTS_QUEUE_URL / SES_EVENTS_DLQ_URL)"
            try:
                depth = self._depth(url)
            except (BotoCoreError, ClientError) as error:
                return f"the {name}'s depth cannot be read ({type(error).__name__})"
            if depth:
                return f"the {name} holds {depth} message(s)"
        return None

    def _depth(self, url: str) -> int:
        if self._sqs is None:
            self._sqs = aws.client("sqs")
        attributes = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=_DEPTH)["Attributes"]
        return sum(int(attributes.get(name, 0)) for name in _DEPTH)
