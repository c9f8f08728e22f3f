"""What the ledger records about each message, inbound and outbound."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


class Outcome(StrEnum):
    """Every inbound message ends with exactly one of these."""

    CREATED = "created"
    CORRELATED = "correlated"
    DUPLICATE = "duplicate"
    FILTERED = "filtered"
    QUARANTINED = "quarantined"


class InboundRecord(BaseModel):
    tenant_id: str
    message_key: str
    status: str  # claimed | done
    mailbox_id: str = ""
    source_ref: str = ""
    message_id: str | None = None
    content_digest: str | None = None  # of the message's content: a reused Message-ID tells apart
    subject: str = ""
    outcome: Outcome | None = None
    reason: str = ""
    crm_email_id: str | None = None
    correlation: str | None = None
    raw_s3_key: str | None = None
    discarded_at: str | None = None  # a quarantined message the operator gave up on
    party_addresses: list[str] = []  # every address the CRM email has as a party
    attempts: int = 0
    created_at: str = ""
    updated_at: str = ""


class OutboundState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"  # intent recorded: SES may or may not have accepted
    SENT = "sent"
    FAILED = "failed"


class OutboundRecord(BaseModel):
    tenant_id: str
    email_id: str
    state: OutboundState
    attempts: int = 0
    message_id: str | None = None
    ses_message_id: str | None = None
    ses_header_message_id: str | None = None
    reason: str = ""
    last_event: str | None = None
    accepted_ses_id: str | None = None  # from an SES event: proof SES accepted the message
    queued_at: str = ""
    updated_at: str = ""


class Suppression(BaseModel):
    """A recipient the tenant does not send to until `expires_at` (epoch seconds)."""

    tenant_id: str
    address: str
    reason: str = ""
    updated_at: str = ""
    expires_at: int | None = None  # None: stored before suppression expired (kept until lifted)
