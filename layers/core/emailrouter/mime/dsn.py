"""Delivery status notifications (RFC 3464 inside an RFC 6522 multipart/report) → `DeliveryReport`.

Only a top-level `multipart/report; report-type=delivery-status` (or
`global-delivery-status`, RFC 6533) is read. Its parts are found by type, not
only by position: the status part is the first message/delivery-status or
message/global-delivery-status part (else a second part that reads like one),
the returned message the first message/rfc822, message/global,
text/rfc822-headers or message/global-headers part after it. Only the returned
message's headers are read.

The status fields are parsed here rather than by the email package: names are
matched case-insensitively, folded values are unfolded, transfer encodings
(which RFC 6533 allows on the global types) are decoded, and recipient blocks
that an MTA forgot to separate with a blank line are split where a recipient,
Action or Status field repeats. Values are reduced as follows:

- recipient: Final-Recipient, else Original-Recipient; the address after
  `type;`, angle brackets dropped, `\\x{HHHH}` escapes of the utf-8 type decoded,
  lower-cased. A block without either is skipped, and so is one whose address is
  beyond RFC 5321's limits (254 octets, local part 64): no mail system delivers there.
- action: the first word of Action, lower-cased, when it is one of the five
  RFC 3464 actions. Otherwise (with a defect) a common
  misspelling is mapped (`failure` → failed), else the action is inferred from
  the status class (5 failed, 4 delayed, 2 delivered), else it is "".
- status: the first `d.ddd.ddd` code in Status, else in Diagnostic-Code.
- diagnostic: the Diagnostic-Code text after `type;`, as one line.
- reporting_mta: the Reporting-MTA name after `type;`.

`read_delivery_report` never raises. A delivery report always yields a
`DeliveryReport` with what could be read (so the pipeline still knows it is a
bounce), except when reading fails unexpectedly. Defects:
`dsn-status-missing` (no status part), `dsn-status-mislabelled:<type>` (status
fields found in a part of another type), `dsn-recipient-missing` (a block with
Action/Status but no recipient), `dsn-field-missing:<Field>`,
`dsn-field-invalid:<Field>` (Action or Status), `dsn-recipient-too-long`,
`dsn-statuses-truncated:<count>`,
`dsn-original-missing` (no returned message or headers), `dsn-unreadable:<error>`.
"""

from __future__ import annotations

import re
from email import policy
from email.parser import BytesParser
from typing import TYPE_CHECKING

from emailrouter.mime.addresses import within_smtp_limits
from emailrouter.mime.bodies import children_of, payload_bytes
from emailrouter.mime.charsets import decode_text
from emailrouter.mime.defects import DefectLog
from emailrouter.mime.headers import (
    RawHeaders,
    clean_line,
    decode_8bit,
    decode_unstructured,
    header_bytes,
    parse_message_id,
    parse_references,
)
from emailrouter.mime.models import DeliveryReport, DeliveryStatus
from emailrouter.mime.params import ContentHeader, mime_type, parse_content_header
from emailrouter.mime.transfer import decode_transfer

if TYPE_CHECKING:
    from email.message import Message

REPORT_TYPES = frozenset({"delivery-status", "global-delivery-status"})
STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
RETURNED_TYPES = frozenset(
    {"message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers"}
)
ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})
MAX_STATUSES = 1000  # one per recipient; bounds what a hostile report can make us build

_ACTION_ALIASES = {
    "failure": "failed",
    "fail": "failed",
    "delay": "delayed",
    "deferred": "delayed",
    "success": "delivered",
    "deliver": "delivered",
    "relay": "relayed",
    "expand": "expanded",
}
_ACTION_BY_CLASS = {"5": "failed", "4": "delayed", "2": "delivered"}
_PER_MESSAGE_FIELDS = frozenset(
    {"reporting-mta", "dsn-gateway", "received-from-mta", "arrival-date", "original-envelope-id"}
)
_RECIPIENT_FIELDS = ("final-recipient", "original-recipient")
# A repeat of one of these within a block starts the next recipient's fields.
_GROUP_KEYS = frozenset({*_RECIPIENT_FIELDS, "action", "status"})
_STATUS_CODE = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.]*\d)")
_TYPED = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9.+_-]*)\s*;(.*)$", re.DOTALL)
_UNICODE_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_FIELD_NAME = re.compile(r"^[!-9;-~]+$")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_WORD = re.compile(r"[A-Za-z-]+")
_STATUS_HINT = re.compile(r"^(?:final-recipient|reporting-mta)[ \t]*:", re.IGNORECASE | re.MULTILINE)
_IDENTITY_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})

Fields = list[tuple[str, str]]


def is_delivery_report(content_type: ContentHeader) -> bool:
    """Whether a top-level Content-Type announces a delivery status notification."""
    report_type = content_type.params.get("report-type", "").strip().lower()
    return content_type.value == "multipart/report" and report_type in REPORT_TYPES


def read_delivery_report(message: Message, defects: DefectLog) -> DeliveryReport | None:
    """The delivery report of `message`; None when it is not one (or cannot be read at all)."""
    raw_type = RawHeaders.of(message).first("content-type")
    if raw_type is None or not is_delivery_report(parse_content_header(raw_type, "Content-Type", defects)):
        return None
    try:
        return _read(message, defects)
    except Exception as error:  # a report we cannot read must not cost the rest of the message
        defects.add("dsn-unreadable", type(error).__name__)
        return None


def _read(message: Message, defects: DefectLog) -> DeliveryReport:
    parts = children_of(message) or []
    status_index = _status_part_index(parts, defects)
    statuses: tuple[DeliveryStatus, ...] = ()
    reporting_mta = ""
    if status_index is None:
        defects.add("dsn-status-missing")
    else:
        text = _part_text(parts[status_index], defects)
        per_message, groups = _group_fields(_blocks(text))
        reporting_mta = clean_line(_typed_value(per_message.get("reporting-mta", ""))[1])
        statuses = _statuses(groups, defects)
    returned = _returned_part(parts, status_index)
    if returned is None:
        defects.add("dsn-original-missing")
        return DeliveryReport(statuses=statuses, reporting_mta=reporting_mta)
    headers = _returned_headers(returned, defects)
    scratch = DefectLog()  # the returned message's own flaws are not this message's defects
    raw_router_id = headers.first("x-emailrouter-id")
    router_id = decode_unstructured(raw_router_id, "X-EmailRouter-Id", scratch) if raw_router_id else ""
    return DeliveryReport(
        statuses=statuses,
        original_message_id=parse_message_id(headers.first("message-id"), "Message-ID", scratch),
        original_references=tuple(parse_references(headers.all("references"), scratch)),
        router_id=router_id or None,
        reporting_mta=reporting_mta,
    )


def _part_type(part: Message, defects: DefectLog) -> str:
    content_type = parse_content_header(RawHeaders.of(part).first("content-type"), "Content-Type", defects)
    return mime_type(content_type, defects)


def _status_part_index(parts: list[Message], defects: DefectLog) -> int | None:
    """Index of the machine-readable status part; a mislabelled second part that reads like one."""
    for index, part in enumerate(parts):
        if _part_type(part, defects) in STATUS_TYPES:
            return index
    if len(parts) < 2:
        return None
    declared = _part_type(parts[1], defects)
    if declared.startswith(("multipart/", "message/rfc822", "message/global")):
        return None
    if _STATUS_HINT.search(_part_text(parts[1], DefectLog())):
        defects.add("dsn-status-mislabelled", declared)
        return 1
    return None


def _returned_part(parts: list[Message], status_index: int | None) -> Message | None:
    """The returned message or headers: the first part of a returned type after the status part."""
    start = 1 if status_index is None else status_index + 1
    for part in parts[start:]:
        if _part_type(part, DefectLog()) in RETURNED_TYPES:
            return part
    return None


def _transfer_encoding(part: Message, defects: DefectLog) -> str:
    raw = RawHeaders.of(part).first("content-transfer-encoding") or ""
    return decode_8bit(raw, "Content-Transfer-Encoding", defects).strip().lower().strip('"')


def _flatten(block: Message) -> bytes:
    """A parsed block back to `Name: value` lines (folds kept) and its body, if any."""
    lines = [f"{name}: {value!s}" for name, value in block.raw_items()]
    payload = getattr(block, "_payload", None)
    text = "\n".join(lines)
    if isinstance(payload, str) and payload.strip():
        text = f"{text}\n\n{payload}" if lines else payload
    return header_bytes(text)


def _part_bytes(part: Message) -> bytes:
    """The part's body before transfer decoding, rebuilt from the blocks the email package parsed."""
    children = children_of(part)
    if children is None:
        return payload_bytes(part)
    return b"\n\n".join(_flatten(child) for child in children)


def _part_text(part: Message, defects: DefectLog) -> str:
    """The text of the status part, transfer-decoded; UTF-8 for the global type."""
    data = decode_transfer(_part_bytes(part), _transfer_encoding(part, defects), defects)
    charset = "utf-8" if _part_type(part, DefectLog()).startswith("message/global") else None
    return decode_text(data, charset, defects, "dsn")


def _blocks(text: str) -> list[Fields]:
    """Blank-line separated groups of `(lower-cased name, unfolded value)` fields."""
    blocks: list[Fields] = []
    current: Fields = []
    for line in _LINE_BREAK.split(text):
        if not line.strip():
            if current:
                blocks.append(current)
                current = []
        elif line[0] in " \t":
            if current:  # a continuation of the previous field
                name, value = current[-1]
                current[-1] = (name, f"{value} {line.strip()}")
        elif ":" in line:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if _FIELD_NAME.match(name):
                current.append((name, value.strip()))
    if current:
        blocks.append(current)
    return blocks


def _group_fields(blocks: list[Fields]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """Per-message fields (first value of each) and one field dict per recipient."""
    per_message: dict[str, str] = {}
    groups: list[dict[str, str]] = []
    for block in blocks:
        current: dict[str, str] | None = None
        for name, value in block:
            if name in _PER_MESSAGE_FIELDS:
                per_message.setdefault(name, value)
                continue
            if current is None or (name in _GROUP_KEYS and name in current):
                current = {}
                groups.append(current)
            current.setdefault(name, value)
    return per_message, groups


def _statuses(groups: list[dict[str, str]], defects: DefectLog) -> tuple[DeliveryStatus, ...]:
    statuses: list[DeliveryStatus] = []
    for group in groups:
        if not any(name in group for name in (*_RECIPIENT_FIELDS, "action", "status")):
            continue  # extension fields only (X-Postfix-Sender, …), not a recipient
        status = _status(group, defects)
        if status is None:
            continue
        if len(statuses) >= MAX_STATUSES:
            defects.add("dsn-statuses-truncated", len(groups))
            break
        statuses.append(status)
    return tuple(statuses)


def _status(group: dict[str, str], defects: DefectLog) -> DeliveryStatus | None:
    recipient = ""
    for name in _RECIPIENT_FIELDS:
        recipient = _address(group.get(name, ""))
        if recipient:
            break
    if not recipient:
        defects.add("dsn-recipient-missing")
        return None
    if not within_smtp_limits(recipient):
        defects.add("dsn-recipient-too-long")
        return None
    diagnostic = clean_line(_typed_value(group.get("diagnostic-code", ""))[1])
    code = _status_code(group, diagnostic, defects)
    return DeliveryStatus(
        recipient=recipient,
        action=_action(group, code, defects),
        status=code,
        diagnostic=diagnostic,
    )


def _status_code(group: dict[str, str], diagnostic: str, defects: DefectLog) -> str:
    """The enhanced status code of Status, else the first one in the diagnostic text."""
    if "status" not in group:
        defects.add("dsn-field-missing", "Status")
    found = _STATUS_CODE.search(group.get("status", ""))
    if found:
        return found.group(1)
    if "status" in group:
        defects.add("dsn-field-invalid", "Status")
    found = _STATUS_CODE.search(diagnostic)
    return found.group(1) if found else ""


def _action(group: dict[str, str], code: str, defects: DefectLog) -> str:
    """The Action keyword; inferred from the status class when missing or unknown."""
    raw = group.get("action")
    word = _WORD.search(raw or "")
    action = word.group().lower() if word else ""
    if action in ACTIONS:
        return action
    defects.add("dsn-field-missing" if raw is None else "dsn-field-invalid", "Action")
    return _ACTION_ALIASES.get(action) or _ACTION_BY_CLASS.get(code[:1], "")


def _typed_value(value: str) -> tuple[str, str]:
    """`type; value` → (lower-cased type, value); a value without a type → ("", value)."""
    match = _TYPED.match(value)
    if match:
        return match.group(1).lower(), match.group(2).strip()
    return "", value.strip()


def _address(value: str) -> str:
    """The lower-cased address of a Final-/Original-Recipient value; "" when there is none."""
    address_type, address = _typed_value(value)
    if address_type == "utf-8":
        address = _UNICODE_ESCAPE.sub(_unescape, address)
    address = clean_line(address).strip("<> ").replace(" ", "")
    return address.lower()


def _unescape(match: re.Match[str]) -> str:
    code = int(match.group(1), 16)
    return chr(code) if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else ""


def _returned_headers(part: Message, defects: DefectLog) -> RawHeaders:
    """The header block of the returned message (message/* or text/rfc822-headers)."""
    encoding = _transfer_encoding(part, defects)
    children = children_of(part)
    if children and encoding in _IDENTITY_ENCODINGS:
        return RawHeaders.of(children[0])
    data = decode_transfer(_part_bytes(part), encoding, defects)
    return RawHeaders.of(BytesParser(policy=policy.compat32).parsebytes(data, headersonly=True))
