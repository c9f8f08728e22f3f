"""Abuse reports (RFC 5965 ARF inside an RFC 6522 multipart/report) → `FeedbackReport`.

A mailbox provider's feedback loop sends one when a recipient marks mail as spam:
`multipart/report; report-type=feedback-report` with a human-readable part, a
`message/feedback-report` part of fields (Feedback-Type, User-Agent, Version,
Original-Rcpt-To, …) and the reported message (message/rfc822) or its headers
(text/rfc822-headers). Read here:

- feedback_type: the first word of Feedback-Type, lower-cased (abuse, fraud, virus,
  other, not-spam, auth-failure); "unspecified" without one;
- recipients: every Original-Rcpt-To address (providers often redact it); without
  one, the reported message's To and Cc — the router then keeps only addresses
  the email was really sent to;
- the reported message's Message-ID, References and X-EmailRouter-Id, as for
  delivery reports (mime/dsn.py), and the reporter (User-Agent or Reporting-MTA).

`read_feedback_report` never raises; defects: `arf-fields-missing` (no
feedback-report part), `arf-original-missing`, `arf-unreadable:<error>`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emailrouter.mime.addresses import parse_address_list, within_smtp_limits
from emailrouter.mime.bodies import children_of
from emailrouter.mime.defects import DefectLog
from emailrouter.mime.dsn import (
    _address,
    _blocks,
    _part_text,
    _part_type,
    _returned_headers,
    _returned_part,
)
from emailrouter.mime.headers import (
    RawHeaders,
    clean_line,
    decode_unstructured,
    parse_message_id,
    parse_references,
)
from emailrouter.mime.models import FeedbackReport
from emailrouter.mime.params import parse_content_header

if TYPE_CHECKING:
    from email.message import Message

    from emailrouter.mime.params import ContentHeader

FEEDBACK_PART = "message/feedback-report"
MAX_RECIPIENTS = 100


def is_feedback_report(content_type: ContentHeader) -> bool:
    """Whether a top-level Content-Type announces an ARF abuse report."""
    report_type = content_type.params.get("report-type", "").strip().lower()
    return content_type.value == "multipart/report" and report_type == "feedback-report"


def read_feedback_report(message: Message, defects: DefectLog) -> FeedbackReport | None:
    """The abuse report of `message`; None when it is not one (or cannot be read at all)."""
    raw_type = RawHeaders.of(message).first("content-type")
    if raw_type is None or not is_feedback_report(parse_content_header(raw_type, "Content-Type", defects)):
        return None
    try:
        return _read(message, defects)
    except Exception as error:  # a report we cannot read must not cost the rest of the message
        defects.add("arf-unreadable", type(error).__name__)
        return None


def _read(message: Message, defects: DefectLog) -> FeedbackReport:
    parts = children_of(message) or []
    index = next((i for i, part in enumerate(parts) if _part_type(part, defects) == FEEDBACK_PART), None)
    fields: list[tuple[str, str]] = []
    if index is None:
        defects.add("arf-fields-missing")
    else:
        fields = [field for block in _blocks(_part_text(parts[index], defects)) for field in block]
    first = {name: value for name, value in reversed(fields)}
    words = first.get("feedback-type", "").split()
    recipients = [_address(value) for name, value in fields if name == "original-rcpt-to"]
    returned = _returned_part(parts, index)
    scratch = DefectLog()  # the reported message's own flaws are not this message's defects
    headers = _returned_headers(returned, defects) if returned is not None else None
    if headers is None:
        defects.add("arf-original-missing")
    elif not any(recipients):
        recipients = [
            a.email for name in ("To", "Cc") for a in parse_address_list(headers.all(name), name, scratch)
        ]
    raw_router_id = headers.first("x-emailrouter-id") if headers is not None else None
    kept = [a for a in dict.fromkeys(recipients) if a and within_smtp_limits(a)][:MAX_RECIPIENTS]
    return FeedbackReport(
        feedback_type=words[0].lower()[:40] if words else "unspecified",
        recipients=tuple(kept),
        original_message_id=parse_message_id(headers.first("message-id"), "Message-ID", scratch)
        if headers is not None
        else None,
        original_references=tuple(parse_references(headers.all("references"), scratch))
        if headers is not None
        else (),
        router_id=(decode_unstructured(raw_router_id, "X-EmailRouter-Id", scratch) or None)
        if raw_router_id
        else None,
        reporter=clean_line(first.get("user-agent") or first.get("reporting-mta") or "")[:200],
    )
