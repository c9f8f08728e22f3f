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

from emailrouter.mime.addresses import parse_address_list, repair_mailbox
from emailrouter.mime.bodies import MAX_PARTS, BodyWalker
from emailrouter.mime.bounces import read_text_bounce
from emailrouter.mime.defects import DefectLog
from emailrouter.mime.dsn import read_delivery_report
from emailrouter.mime.errors import MalformedMessageError
from emailrouter.mime.feedback import read_feedback_report
from emailrouter.mime.fingerprint import body_digest, message_fingerprint
from emailrouter.mime.headers import (
    RawHeaders,
    decode_unstructured,
    parse_date,
    parse_message_id,
    parse_references,
    unfold,
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
_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")
# RFC 5322 4.5.1 (obsolete syntax): whitespace between the field name and the colon.
_OBSOLETE_HEADER_LINE = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]+:")
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n|$)")
# Bytes no text header block holds: NUL and the C0 controls other than TAB, LF, FF, CR and ESC
# (ESC starts ISO-2022-JP sequences in raw 8-bit headers).
_BINARY = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")
_MAX_BINARY_BYTES = 8  # a few stray control bytes are broken mail; more is not mail
_MULTIPART = re.compile(rb"^content-type:[ \t]*(?:\r?\n[ \t]+)?multipart/", re.IGNORECASE | re.MULTILINE)
_DMARC_FAIL = re.compile(r"(?:^|[;\s])dmarc[ \t]*=[ \t]*fail\b", re.IGNORECASE)
MAX_HEADER_LINES = 10_000  # lines past these are left to the feed parser as they are
# A header block names at least one of these (RFC 5322, RFC 2045, and what transports add).
KNOWN_FIELDS = frozenset(
    {
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "received",
        "return-path",
        "delivered-to",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "resent-from",
        "resent-date",
        "x-original-to",
    }
)
# Dataverse's subject column holds 800 characters; a little more is kept so that a tracking token
# after RE:/FW: prefixes still correlates and the CRM write can say the subject was cut. The raw
# header is cut before decoding, so no step ever sees more than these sizes.
SUBJECT_MAX_CHARS = 1024
SUBJECT_MAX_RAW = 16 * 1024


def _header_block(data: bytes, defects: DefectLog) -> tuple[bytes | memoryview, int]:
    """The message from its header block on, with malformed header lines repaired, and the
    length of its header block; raises
    MalformedMessageError when the input does not start with a text header block.

    Only blank lines and an mbox `From ` envelope line may come before the header block. In it,
    obsolete `Name : value` lines are read as `Name: value` (`header-obsolete-syntax:<Name>`),
    and a line that is no header line, with its continuation lines, is skipped
    (`header-line-malformed`) when header lines follow it; otherwise it starts the body, as
    it does for mail that lacks the blank line after its headers. The block must be text and
    name at least one message header field (`KNOWN_FIELDS`).
    """
    start: int | None = None
    lines: list[tuple[int, int, str]] = []  # (start, end, kind) of each line of the header block
    for match in _LINE.finditer(data):
        line = match.group()
        content = line.rstrip(b"\r\n")
        if not line or (start is not None and not content) or len(lines) >= MAX_HEADER_LINES:
            break
        if start is None:
            if not content.strip(b" \t"):
                defects.add("leading-blank-lines")
                continue
            mbox = content.startswith(b"From ") and not _OBSOLETE_HEADER_LINE.match(content)
            if mbox and "mbox-from-line" not in defects:
                defects.add("mbox-from-line")
                continue
            start = match.start()
        if _HEADER_LINE.match(content):
            kind = "header"
        elif content[:1] in (b" ", b"\t"):
            kind = "continuation" if lines else "malformed"
        elif _OBSOLETE_HEADER_LINE.match(content):
            kind = "obsolete"
        else:
            kind = "malformed"
        lines.append((match.start(), match.end(), kind))
    if start is None:
        raise MalformedMessageError("empty message")
    if lines[0][2] == "malformed":
        raise MalformedMessageError("no header block at the start of the message")
    last = max(i for i, (_s, _e, kind) in enumerate(lines) if kind in ("header", "obsolete"))
    while last + 1 < len(lines) and lines[last + 1][2] == "continuation":
        last += 1
    block_end = lines[last][1]
    # Without the blank line after it, the line that ends the block must be text as well.
    checked_end = lines[last + 1][1] if last + 1 < len(lines) else block_end
    if len(_BINARY.findall(data, start, checked_end)) > _MAX_BINARY_BYTES:
        raise MalformedMessageError("the header block is not text")
    names = {_field_name(data[s:e]) for s, e, kind in lines[: last + 1] if kind in ("header", "obsolete")}
    if not names & KNOWN_FIELDS:
        raise MalformedMessageError("the header block names no message header field")
    if all(kind in ("header", "continuation") for _s, _e, kind in lines[: last + 1]):
        return memoryview(data)[start:], block_end - start
    pieces: list[bytes] = []
    skipping = False
    for line_start, line_end, kind in lines[: last + 1]:
        line = data[line_start:line_end]
        if kind == "malformed" or (kind == "continuation" and skipping):
            if kind == "malformed":
                defects.add("header-line-malformed")
            skipping = True
            continue
        skipping = False
        if kind == "obsolete":
            found = _OBSOLETE_HEADER_LINE.match(line)
            assert found is not None
            defects.add("header-obsolete-syntax", found.group(1).decode("ascii"))
            line = found.group(1) + b":" + line[found.end() :]
        pieces.append(line)
    header = b"".join(pieces)
    return header + data[block_end:], len(header)


def _field_name(line: bytes) -> str:
    return line.split(b":", 1)[0].rstrip(b" \t").decode("ascii", "replace").lower()


def _cut_raw(raw: str) -> str:
    """The first SUBJECT_MAX_RAW characters of a raw header value, without a UTF-8 sequence
    split at the end (raw 8-bit bytes are stored as surrogate escapes, one per byte)."""
    cut = raw[:SUBJECT_MAX_RAW]
    for back in range(1, 5):
        code = ord(cut[-back]) - 0xDC00 if len(cut) >= back else 0
        if not 0x80 <= code <= 0xFF:
            return cut  # an ASCII or decoded character: nothing split
        if code >= 0xC0:  # the lead byte of the last sequence: is the sequence whole?
            needed = 2 if code < 0xE0 else 3 if code < 0xF0 else 4
            return cut if back >= needed else cut[:-back]
    return cut


def _subject(raw: str | None, defects: DefectLog) -> str:
    """The decoded subject: one line, space runs (Unicode spaces too) collapsed, at most
    SUBJECT_MAX_CHARS characters (`subject-truncated:<characters>` when cut)."""
    if raw is None:
        return ""
    cut = len(raw) > SUBJECT_MAX_RAW
    subject = decode_unstructured(_cut_raw(raw) if cut else raw, "Subject", defects)
    if cut or len(subject) > SUBJECT_MAX_CHARS:
        defects.add("subject-truncated", len(raw) if cut else len(subject))
        subject = subject[:SUBJECT_MAX_CHARS].rstrip()
    return subject


def _selected_headers(headers: RawHeaders, defects: DefectLog) -> dict[str, str]:
    selected: dict[str, str] = {}
    for name in SELECTED_HEADERS:
        raw = headers.first(name)
        if raw is not None:
            selected[name] = decode_unstructured(_cut_raw(raw), name, defects)
    return selected


def _sender(headers: RawHeaders, defects: DefectLog) -> Address | None:
    """The first From mailbox; a From that parses to none is repaired to its first addr-spec;
    the Sender header, then Return-Path, when nothing in From is usable."""
    if not headers.all("from"):
        defects.add("from-missing")
    found = parse_address_list(headers.all("from"), "From", defects)
    if found:
        return found[0]
    repaired = repair_mailbox(headers.all("from"), "From", defects)
    if repaired is not None:
        return repaired
    for name in ("Sender", "Return-Path"):
        found = parse_address_list(headers.all(name), name, defects)
        if found:
            defects.add("from-replaced-by-" + name.lower())
            return found[0]
    return None


def _dmarc_failed(raw: str | None) -> bool:
    """Whether the receiving server's Authentication-Results (the topmost one: each server adds
    its own above the others, and RFC 8601 5 has it remove forged ones claiming its name) says
    the From domain's DMARC check failed."""
    return raw is not None and _DMARC_FAIL.search(unfold(raw[:SUBJECT_MAX_RAW])) is not None


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
    block, header_length = _header_block(data, defects)
    over_limit = ""
    if data.count(b"\n--") > 4 * MAX_PARTS and _MULTIPART.search(bytes(block[:header_length])):
        # Far more boundary lines than parts are allowed: not worth the feed parser's time.
        over_limit = f"more than {MAX_PARTS} MIME parts"
        defects.add("parts-too-many", MAX_PARTS)
        message, _usable = parse_tree(bytes(block[:header_length]) + b"\r\n", defects)
        has_structure = False
    else:
        message, has_structure = parse_tree(block, defects)
    headers = RawHeaders.of(message)

    for name in _SINGLE_HEADERS:
        if len(headers.all(name)) > 1:
            defects.add("header-duplicate", name)
    if headers.first("content-type") is not None and headers.first("mime-version") is None:
        defects.add("mime-version-missing")

    linesep = "\r\n" if b"\r\n" in bytes(block[:8192]) else "\n"
    walker = BodyWalker(defects, max_attachment_bytes, linesep)
    walked = False
    if has_structure:
        try:
            walker.walk(message)
            walked = True
        except Exception as error:  # a parser bug must cost the body, not the whole message
            defects.add("body-unreadable", type(error).__name__)
        over_limit = walker.over_limit
    parsed = ParsedMessage(
        message_id=parse_message_id(headers.first("message-id"), "Message-ID", defects),
        subject=_subject(headers.first("subject"), defects),
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
        over_limit=over_limit,
        feedback_report=_feedback_report(message, headers, defects) if has_structure else None,
        dmarc_failed=_dmarc_failed(headers.first("authentication-results")),
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
    parsed.content_digest = (
        walker.content_hash.hexdigest() if walked else body_digest(bytes(block[header_length:]))
    )
    if parsed.message_id is None:  # the fingerprint identifies messages that have no Message-ID
        parsed.fingerprint = message_fingerprint(
            sender=parsed.sender,
            to=parsed.to,
            cc=parsed.cc,
            date=parsed.date,
            subject=parsed.subject,
            content_digest=parsed.content_digest,
            reply_to=parsed.reply_to,
            in_reply_to=parsed.in_reply_to,
            references=parsed.references,
        )
    return parsed
