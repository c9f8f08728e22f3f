"""Bounces without a machine-readable report: plain-text non-delivery messages → `DeliveryReport`.

Many mail systems still return mail as text only: old sendmail, qmail, Exim, Gmail's
"Delivery Status Notification (Failure)", Office 365's text part. Such a message is read as a
delivery report when its headers say it comes from a mail system and its subject or body says
it is a bounce:

- from a mail system: an empty envelope sender (`Return-Path: <>`), or a From of
  MAILER-DAEMON, postmaster, mail-daemon or mailer (any domain), or Exim's
  `X-Failed-Recipients` (which only bounces carry, and which alone is enough);
- a bounce: a well-known subject ("Undeliverable", "Undelivered Mail Returned to Sender",
  "Delivery Status Notification (Failure)", "Mail delivery failed", "failure notice",
  "Returned mail", …) or a well-known body (qmail's "I wasn't able to deliver", Exim's
  "could not be delivered to one or more of its recipients", sendmail's "permanent fatal
  errors", Gmail's "Delivery to the following recipient failed permanently" or "Address not
  found", Office 365's "couldn't be delivered" / "Delivery has failed to these recipients"),
  or a delay warning ("Warning: message … delayed", "has not yet been delivered").

Recipients are the `X-Failed-Recipients` addresses, else the addresses the report text names
before the copy of the original begins (the router keeps only those the email was sent to).
Each gets the first enhanced status code (`5.1.1`) after it in the text, else one derived
from an SMTP reply code (550 → 5.0.0), else 5.0.0 for a permanent-failure wording, else none.
A delay warning ("will retry", "Delay") yields action `delayed`. The original is found through
an attached message/rfc822 or text/rfc822-headers part, else the quoted header lines
(Message-ID, References, X-EmailRouter-Id) in the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from emailrouter.mime.addresses import parse_address_list, within_smtp_limits
from emailrouter.mime.defects import DefectLog
from emailrouter.mime.dsn import RETURNED_TYPES, _part_type, _returned_headers
from emailrouter.mime.headers import decode_unstructured, parse_message_id, parse_references
from emailrouter.mime.models import DeliveryReport, DeliveryStatus

if TYPE_CHECKING:
    from email.message import Message

    from emailrouter.mime.headers import RawHeaders

MAILER_DAEMONS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailer", "maildaemon"})
MAX_TEXT = 64 * 1024  # the report is at the top; the copy of the original may be long
MAX_RECIPIENTS = 100
MAX_PARTS = 200

_SUBJECT = re.compile(
    r"undeliver|undelivered mail|returned mail|return(ed)? to sender|mail delivery (failed|failure)"
    r"|delivery (status notification|failure|has failed|notification)|failure notice"
    r"|non[- ]?delivery|could not be delivered|delivery problem|mail system error|unzustellbar"
    r"|non remis|no se puede entregar|message .{0,60}delayed|delivery delayed|delayed mail",
    re.IGNORECASE,
)
_BODY = re.compile(
    r"wasn't able to deliver|could not be delivered|couldn't be delivered|permanent fatal error"
    r"|failed permanently|address not found|delivery has failed|undeliverable|delivery to the following"
    r"|message you sent could not|the following address(es)? failed|unable to deliver"
    r"|returned to sender|this is a permanent error|delivery incomplete|not yet been delivered"
    r"|delivery attempts will continue",
    re.IGNORECASE,
)
_DELAY = re.compile(
    r"will (be )?retr(y|ied)|delivery (status notification \()?delay|not yet been delivered"
    r"|warning: message .* delayed|temporar(y|ily) (failure|problem)",
    re.IGNORECASE,
)
_PERMANENT = re.compile(r"permanent|failed permanently|fatal error|given up|does not exist|not found", re.I)
# Where the copy of the original message starts in the common formats.
_ORIGINAL_START = re.compile(
    r"^[ \t]*(-{2,}.*(original message|copy of the message|below this line|message follows|"
    r"returned message|undelivered message|message headers|headers of).*"
    r"|original message headers:?)[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_ADDRESS = re.compile(
    r"<?([A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)>?"
)
_ENHANCED = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.]*\d)")
_SMTP_CODE = re.compile(r"(?<!\d)([45])\d\d(?![\d.])")
_QUOTED_ID = re.compile(r"^[ \t>]*Message-ID:[ \t]*(<[^<>\s]{1,250}>)", re.IGNORECASE | re.MULTILINE)
_QUOTED_ROUTER_ID = re.compile(r"^[ \t>]*X-EmailRouter-Id:[ \t]*(\S{1,300})", re.IGNORECASE | re.MULTILINE)
_QUOTED_REFERENCES = re.compile(
    r"^[ \t>]*References:[ \t]*((?:<[^<>\s]{1,250}>[ \t]*(?:\r?\n[ \t>]+)?){1,50})",
    re.IGNORECASE | re.MULTILINE,
)


def is_mailer_daemon(address: str) -> bool:
    """Whether `address` is a mail system's own (MAILER-DAEMON@…, postmaster@…)."""
    return address.rpartition("@")[0].strip().lower() in MAILER_DAEMONS


def read_text_bounce(
    message: Message,
    headers: RawHeaders,
    sender: str,
    subject: str,
    body: Callable[[], str],
    defects: DefectLog,
) -> DeliveryReport | None:
    """The delivery report a plain-text bounce amounts to; None when the message is not one.
    `body` gives the message's text; it is read only for mail from a mail system."""
    scratch = DefectLog()
    failed_header = parse_address_list(headers.all("x-failed-recipients"), "X-Failed-Recipients", scratch)
    return_path = (headers.first("return-path") or "").strip()
    from_system = return_path in ("<>", "") and headers.first("return-path") is not None
    from_system = from_system or is_mailer_daemon(sender)
    if not failed_header and not from_system:
        return None
    text = body()[:MAX_TEXT]
    report_text, quoted = _split(text)
    if not failed_header and not (_SUBJECT.search(subject) or _BODY.search(report_text)):
        return None
    defects.add("bounce-plain-text")
    delayed = bool(_DELAY.search(subject) or _DELAY.search(report_text))
    named = [a.email for a in failed_header] or _named_addresses(report_text, sender)
    statuses = tuple(
        _status(address, report_text, delayed)
        for address in dict.fromkeys(named)
        if within_smtp_limits(address)
    )[:MAX_RECIPIENTS]
    original = _original(message, quoted or text, defects)
    return DeliveryReport(
        statuses=statuses,
        original_message_id=original[0],
        original_references=original[1],
        router_id=original[2],
        reporting_mta=sender.rpartition("@")[2],
    )


def _split(text: str) -> tuple[str, str]:
    """(the report, the copy of the original) at the first marker line; all report without one."""
    marker = _ORIGINAL_START.search(text)
    if marker is None:
        return text, ""
    return text[: marker.start()], text[marker.end() :]


def _named_addresses(report: str, sender: str) -> list[str]:
    """Addresses in the report text, except the mail system's own."""
    found: list[str] = []
    for match in _ADDRESS.finditer(report):
        address = match.group(1).strip(".").lower()
        if address != sender and not is_mailer_daemon(address) and address not in found:
            found.append(address)
        if len(found) >= MAX_RECIPIENTS:
            break
    return found


def _status(address: str, report: str, delayed: bool) -> DeliveryStatus:
    """The address's status: the first code after its first mention, as RFC 3464 would say it."""
    at = report.lower().find(address)
    after = report[at : at + 600] if at >= 0 else report
    diagnostic = " ".join(after[len(address) :].split())[:300].strip(" :>")
    enhanced = _ENHANCED.search(after) or _ENHANCED.search(report)
    if enhanced:
        code = enhanced.group(1)
    else:
        smtp = _SMTP_CODE.search(after)
        if smtp:
            code = f"{smtp.group(1)}.0.0"
        elif delayed:
            code = "4.0.0"
        else:
            code = "5.0.0" if _PERMANENT.search(report) else ""
    action = "delayed" if delayed and not code.startswith("5") else "failed"
    return DeliveryStatus(recipient=address, action=action, status=code, diagnostic=diagnostic)


def _original(
    message: Message, quoted: str, defects: DefectLog
) -> tuple[str | None, tuple[str, ...], str | None]:
    """Message-ID, References and X-EmailRouter-Id of the returned original."""
    scratch = DefectLog()
    for count, part in enumerate(message.walk()):
        if count >= MAX_PARTS:
            break
        if part is not message and _part_type(part, scratch) in RETURNED_TYPES:
            returned = _returned_headers(part, scratch)
            raw_router_id = returned.first("x-emailrouter-id")
            return (
                parse_message_id(returned.first("message-id"), "Message-ID", scratch),
                tuple(parse_references(returned.all("references"), scratch)),
                (decode_unstructured(raw_router_id, "X-EmailRouter-Id", scratch) or None)
                if raw_router_id
                else None,
            )
    message_id = _QUOTED_ID.search(quoted)
    references = _QUOTED_REFERENCES.search(quoted)
    router_id = _QUOTED_ROUTER_ID.search(quoted)
    if not (message_id or references or router_id):
        defects.add("bounce-original-missing")
    refs = tuple(re.findall(r"<[^<>\s]{1,250}>", references.group(1))) if references else ()
    return (message_id.group(1) if message_id else None, refs, router_id.group(1) if router_id else None)
