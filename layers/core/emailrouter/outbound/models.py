"""An email composed in the CRM, in the shape the renderer takes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Recipient:
    email: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class OutboundAttachment:
    filename: str
    mimetype: str
    content: bytes
    content_id: str | None = None  # set for inline images referenced as cid: in the HTML


@dataclass(slots=True)
class OutboundEmail:
    """Everything needed to render one CRM email as MIME."""

    tenant_id: str
    email_id: str  # the CRM activityid
    sender: Recipient
    subject: str
    html_body: str
    to: list[Recipient] = field(default_factory=list)
    cc: list[Recipient] = field(default_factory=list)
    bcc: list[Recipient] = field(default_factory=list)
    attachments: list[OutboundAttachment] = field(default_factory=list)
    message_id: str = ""  # ours, with angle brackets; generated when empty
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    tracking_token: str | None = None
