"""The parsed form of an incoming message, as the rest of the pipeline sees it."""

from __future__ import annotations

from dataclasses import dataclass, field

from emailrouter.mime.html_text import html_to_text


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox from an address header: `email` is lower-cased and stripped."""

    email: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    mimetype: str
    content: bytes
    content_id: str | None = None  # without angle brackets
    inline: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    """One per-recipient block of a delivery status notification (RFC 3464)."""

    recipient: str  # Final-Recipient (else Original-Recipient) address, lower-cased
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str  # e.g. 5.1.1
    diagnostic: str = ""  # Diagnostic-Code text, decoded, one line
    original_recipient: str = ""  # Original-Recipient address when it differs (forwarding)


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """A multipart/report; report-type=delivery-status, reduced to what matching it needs."""

    statuses: tuple[DeliveryStatus, ...]
    original_message_id: str | None = None  # Message-ID of the returned message or headers
    original_references: tuple[str, ...] = ()  # its References, in order
    router_id: str | None = None  # its X-EmailRouter-Id, when it is mail we sent
    reporting_mta: str = ""


@dataclass(frozen=True, slots=True)
class FeedbackReport:
    """An abuse report (RFC 5965 ARF, multipart/report; report-type=feedback-report)."""

    feedback_type: str  # abuse, fraud, virus, other, not-spam, auth-failure, unspecified
    recipients: tuple[str, ...] = ()  # Original-Rcpt-To, else the reported message's To and Cc
    original_message_id: str | None = None
    original_references: tuple[str, ...] = ()
    router_id: str | None = None
    reporter: str = ""  # User-Agent or Reporting-MTA


@dataclass(slots=True)
class ParsedMessage:
    """What deliver_inbound needs from a raw message. Built by `mime.parse.parse_message`."""

    message_id: str | None  # with angle brackets, as in the header; None when absent
    subject: str
    sender: Address | None
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    bcc: list[Address] = field(default_factory=list)
    reply_to: list[Address] = field(default_factory=list)
    date: str | None = None  # ISO 8601 UTC, None when absent or unparseable
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    # The CRM description: the HTML body as it came (not sanitised: the CRM renders email
    # bodies as it does those Server-Side Synchronization stores), or the plain text as escaped HTML.
    html_body: str = ""
    # The plain-text body: the text parts, or (derived only when read) the HTML body as text.
    _text_body: str | None = ""
    _text_from_html: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # selected headers, decoded, first value
    defects: list[str] = field(default_factory=list)  # what the parser had to repair
    size: int = 0
    fingerprint: str = ""  # stable hash of headers and content; set only for messages without Message-ID
    content_digest: str = ""  # hash of every part's decoded content (mime/fingerprint.py)
    thread_index: bytes | None = None  # decoded Thread-Index (Outlook's conversation index)
    delivery_report: DeliveryReport | None = None  # set for delivery status notifications
    # The receiving server's Authentication-Results says DMARC failed for the From domain: the
    # sender is not resolved to a CRM user, nor made a contact (routing/deliver.py).
    dmarc_failed: bool = False
    over_limit: str = ""  # why the message is over a structure cap (parts, attachments): quarantined
    feedback_report: FeedbackReport | None = None  # set for abuse reports (ARF)

    @property
    def text_body(self) -> str:
        if self._text_body is None:
            self._text_body = html_to_text(self._text_from_html)
        return self._text_body
