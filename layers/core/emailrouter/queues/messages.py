"""Bodies of the messages on our queues. Each carries tenant_id and is validated on receipt."""

from __future__ import annotations

from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from pydantic import BaseModel, ConfigDict, Field, Json


class PollJob(BaseModel):
    """Poll one mailbox now. Sent by dispatch each minute (MessageGroupId = tenant)."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: str
    mailbox_id: str
    job_id: str  # tenant/mailbox/slot: the idempotency key of this poll
    scheduled_at: str


class InboundMessage(BaseModel):
    """One raw message handed off by a poller: inline when small, else a claim check in S3."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: str
    mailbox_id: str
    source_ref: str
    fetched_at: str
    size: int = Field(ge=0)
    raw_b64: str | None = None
    raw_s3_key: str | None = None
    replay_of: str | None = None  # ledger key when an operator replays a quarantined message
    source_identity: str | None = None  # header hash at fetch: checked before deleting at the source


class OutboundJob(BaseModel):
    """Send one CRM email that was found in Pending Send."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: str
    email_id: str
    enqueued_at: str


class PollJobRecord(SqsRecordModel):
    """An SQS record whose body is a PollJob (Powertools parser validates it on receipt)."""

    body: Json[PollJob]


class InboundRecord(SqsRecordModel):
    body: Json[InboundMessage]


class OutboundRecord(SqsRecordModel):
    body: Json[OutboundJob]
