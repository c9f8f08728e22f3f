"""Raw RFC 5322 / MIME bytes → `ParsedMessage`.

`parse_message` is the only entry point. It never raises for mail that is
merely broken: it repairs what it can and lists each repair in `defects`
(the codes are listed in `emailrouter.mime`). Input that is not mail at all (empty,
not bytes, no header block) raises `MalformedMessageError`.

Outlook's Thread-Index is decoded by `mime.thread_index`, TNEF parts are opened
by the body walker (`mime.tnef`), and delivery status notifications are read
by `mime.dsn`; the last two only run when the message has such a part.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from emailrouter.mime.addresses import parse_address_list
from emailrouter.mime.bodies import BodyWalker
from emailrouter.mime.bounces import read_text_bounce
from emailrouter.mime.defects import DefectLog
from emailrouter.mime.dsn import read_delivery_report
from emailrouter.mime.errors import MalformedMessageError
from emailrouter.mime.feedback import read_feedback_report
from emailrouter.mime.fingerprint import message_fingerprint
from emailrouter.mime.headers import (
    RawHeaders,
    decode_unstructured,
    parse_date,
    parse_message_id,
    parse_references,
)
from emailrouter.mime.models import ParsedMessage
from emailrouter.mime.thread_index import decode_thread_index
from emailrouter.mime.tree import parse_tree

if TYPE_CHECKING:
    from email.message import Message

    from emailrouter.mime.models import Address, DeliveryReport, FeedbackReport

# Headers kept in `ParsedMessage.headers`, decoded, first value only.
SELECTED_HEADERS = (
    "Thread-Index",
    "Thread-Topic",
    "Auto-Submitted",
    "X-Auto-Response-Suppress",
    "Precedence",
    "List-Id",
    "List-Post",
    "Mailing-List",
    "X-Autoreply",
    "X-Autorespond",
    "X-Autoreply-From",
    "X-Mail-Autoreply",
    "X-Loop",
    "X-EmailRouter-Id",
    "X-Mailer",
    "Return-Path",
    "Content-Type",
)
_SINGLE_HEADERS = ("From", "Subject", "Date", "Message-ID", "In-Reply-To", "Sender")
_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n|$)")
_MAX_LEADING_LINES = 200


def _header_block_start(data: bytes, defects: DefectLog) -> int:
    """Offset where the header block begins; raises when there is none.

    Tolerated before it: blank lines, an mbox `From ` envelope line, and a few
    lines of garbage (each with a defect) as long as a `Name: value` line follows
    before the first blank line.
    """
    skipped: str | None = None
    for number, match in enumerate(_LINE.finditer(data)):
        line = match.group()
        if not line or number > _MAX_LEADING_LINES:
            break
        content = line.rstrip(b"\r\n")
        if _HEADER_LINE.match(content):
            if skipped:
                defects.add(skipped)
            return match.start()
        if not content.strip():
            if skipped == "leading-garbage":
                break  # a blank line after non-header lines: there was never a header block
            skipped = skipped or "leading-blank-lines"
        elif number == 0 and content.startswith(b"From "):
            defects.add("mbox-from-line")
        else:
            skipped = "leading-garbage"
    raise MalformedMessageError("no header block (no 'Name: value' line before the body)")


def _selected_headers(headers: RawHeaders, defects: DefectLog) -> dict[str, str]:
    selected: dict[str, str] = {}
    for name in SELECTED_HEADERS:
        raw = headers.first(name)
        if raw is not None:
            selected[name] = decode_unstructured(raw, name, defects)
    return selected


def _sender(headers: RawHeaders, defects: DefectLog) -> Address | None:
    """The first From mailbox; the Sender header when From is missing or unusable."""
    if not headers.all("from"):
        defects.add("from-missing")
    for name in ("From", "Sender"):
        found = parse_address_list(headers.all(name), name, defects)
        if found:
            if name == "Sender":
                defects.add("from-replaced-by-sender")
            return found[0]
    return None


def _delivery_report(message: Message, headers: RawHeaders, defects: DefectLog) -> DeliveryReport | None:
    """The delivery report of a multipart/report; the substring test keeps other mail cheap."""
    content_type = headers.first("content-type")
    if content_type is None or "report" not in content_type.lower():
        return None
    return read_delivery_report(message, defects)


def _feedback_report(message: Message, headers: RawHeaders, defects: DefectLog) -> FeedbackReport | None:
    """The abuse report of a multipart/report (ARF); the substring test keeps other mail cheap."""
    content_type = headers.first("content-type")
    if content_type is None or "feedback-report" not in content_type.lower():
        return None
    return read_feedback_report(message, defects)


def _as_bytes(raw: object) -> bytes:
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, bytearray | memoryview):
        return bytes(raw)
    raise MalformedMessageError(f"expected the message as bytes, got {type(raw).__name__}")


def parse_message(
    raw: bytes | bytearray | memoryview, *, max_attachment_bytes: int | None = None
) -> ParsedMessage:
    """Parse one raw message into what the pipeline needs.

    `max_attachment_bytes` drops larger attachments, each with a defect
    `attachment-too-large:<filename>:<size>`.

    >>> parsed = parse_message(b"From: Ann <ANN@example.com>\\r\\nSubject: Hi\\r\\n\\r\\nHello")
    >>> parsed.sender, parsed.subject, parsed.html_body
    (Address(email='ann@example.com', name='Ann'), 'Hi', '<div>Hello</div>')
    """
    data = _as_bytes(raw)
    if not data.strip():
        raise MalformedMessageError("empty message")
    defects = DefectLog()
    start = _header_block_start(data, defects)
    message, has_structure = parse_tree(memoryview(data)[start:], defects)
    headers = RawHeaders.of(message)

    for name in _SINGLE_HEADERS:
        if len(headers.all(name)) > 1:
            defects.add("header-duplicate", name)
    if headers.first("content-type") is not None and headers.first("mime-version") is None:
        defects.add("mime-version-missing")

    linesep = "\r\n" if b"\r\n" in data[start : start + 8192] else "\n"
    walker = BodyWalker(defects, max_attachment_bytes, linesep)
    if has_structure:
        try:
            walker.walk(message)
        except Exception as error:  # a parser bug must cost the body, not the whole message
            defects.add("body-unreadable", type(error).__name__)
    raw_subject = headers.first("subject")
    parsed = ParsedMessage(
        message_id=parse_message_id(headers.first("message-id"), "Message-ID", defects),
        subject=decode_unstructured(raw_subject, "Subject", defects) if raw_subject is not None else "",
        sender=_sender(headers, defects),
        to=parse_address_list(headers.all("to"), "To", defects),
        cc=parse_address_list(headers.all("cc"), "Cc", defects),
        bcc=parse_address_list(headers.all("bcc"), "Bcc", defects),
        reply_to=parse_address_list(headers.all("reply-to"), "Reply-To", defects),
        date=parse_date(headers.first("date"), defects),
        in_reply_to=parse_message_id(headers.first("in-reply-to"), "In-Reply-To", defects),
        references=parse_references(headers.all("references"), defects),
        html_body=walker.result.html_body,
        _text_body="\n".join(walker.result.text_parts) if walker.result.text_parts else None,
        _text_from_html=walker.result.html_body if walker.result.html_parts else "",
        attachments=walker.result.attachments,
        headers=_selected_headers(headers, defects),
        size=len(data),
        thread_index=decode_thread_index(headers.first("thread-index"), defects),
        delivery_report=_delivery_report(message, headers, defects) if has_structure else None,
        feedback_report=_feedback_report(message, headers, defects) if has_structure else None,
    )
    content_type = (headers.first("content-type") or "").lower()
    if parsed.delivery_report is None and parsed.feedback_report is None and "report" not in content_type:
        parsed.delivery_report = read_text_bounce(
            message,
            headers,
            parsed.sender.email if parsed.sender else "",
            parsed.subject,
            lambda: parsed.text_body,
            defects,
        )
    parsed.defects = defects.as_list()
    if parsed.message_id is None:  # the fingerprint identifies messages that have no Message-ID
        parsed.fingerprint = message_fingerprint(
            sender=parsed.sender,
            to=parsed.to,
            cc=parsed.cc,
            date=parsed.date,
            subject=parsed.subject,
            body_text=parsed.text_body,
        )
    return parsed
