"""Render a CRM email (`OutboundEmail`) as the raw MIME message SES sends.

Every value in the message comes from the CRM and is treated as hostile: control characters
are removed before any header is set (so no value can start a header of its own), addresses
must be plain ``local@domain``, and the output is 7-bit with every line within RFC 5322's
998 bytes. SES replaces our Message-ID, so our id also goes at the end of References and, with
the CRM ids and their signature, into ``X-EmailRouter-Id`` (outbound/router_id.py): replies and
delivery reports still correlate, and only the router can name an email there.

Structure (only the layers that are needed)::

    multipart/mixed                      when there are regular attachments
      multipart/alternative
        text/plain                       generated from the HTML
        multipart/related                when the HTML has inline images (cid:)
          text/html
          image/png  Content-ID: <cid>
      application/pdf  Content-Disposition: attachment; filename*=utf-8''…
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime
from typing import TYPE_CHECKING

from emailrouter.clock import now
from emailrouter.outbound.errors import (
    InvalidRecipientError,
    MessageTooLargeError,
    NoRecipientsError,
    RenderError,
)
from emailrouter.outbound.plaintext import html_to_text
from emailrouter.outbound.router_id import HEADER, deployment_keys, sign

if TYPE_CHECKING:
    from datetime import datetime

    from emailrouter.outbound.models import OutboundAttachment, OutboundEmail, Recipient

# SES v2 SendEmail: 40 MB per message, counted on the MIME message with its attachments
# base64-encoded (fact sheet A1, "Raw message rules"). We read MB as 10^6 bytes, the safer side.
SES_MAX_MESSAGE_BYTES = 40_000_000
# SES v2: at most 50 recipients (To + Cc + Bcc) per message (fact sheet A1).
SES_MAX_RECIPIENTS = 50
MAX_LINE_BYTES = 998  # RFC 5322 2.1.1, without the CRLF


class _Policy(EmailPolicy):
    """SMTP's policy, except that X-EmailRouter-Id stays on one line (safe characters, at most
    310 bytes): whatever reads it line by line — a script, an MTA quoting it in a bounce —
    finds it whole."""

    def fold(self, name: str, value: str) -> str:
        if name.lower() == HEADER.lower():
            return f"{name}: {value}{self.linesep}"
        return str(super().fold(name, value))

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() == HEADER.lower():
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return bytes(super().fold_binary(name, value))


# 7-bit output: non-ASCII bodies get quoted-printable or base64, headers RFC 2047/2231, CRLF.
_POLICY = _Policy().clone(linesep="\r\n", cte_type="7bit")
_ATEXT_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}$")
_MIMETYPE = re.compile(r"^([a-z0-9!#$&^_.+-]{1,127})/([a-z0-9!#$&^_.+-]{1,127})(?:$|[\s;])")
_MSG_ID = re.compile(r"<([^<>\s@]{1,200}@[^<>\s@]{1,200})>")
_BARE_MSG_ID = re.compile(r"^([^<>\s@]{1,200}@[^<>\s@]{1,200})$")
_SPACES = re.compile(r"\s+")
# Unicode categories that could end a header line: controls (CR, LF, NUL, …) and separators.
_BREAKING = frozenset({"Cc", "Zl", "Zp"})


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """A message ready for SES: the bytes, our Message-ID and the SMTP envelope."""

    raw: bytes
    message_id: str  # ours, with angle brackets; SES will replace it (see ses_assigned_message_id)
    recipients: list[str]  # envelope: To + Cc + Bcc addresses, de-duplicated, Bcc included
    size: int
    from_address: str = ""  # the bare sender address (SES's FromEmailAddress)


def render_mime(
    email: OutboundEmail,
    *,
    domain: str | None = None,
    max_bytes: int = SES_MAX_MESSAGE_BYTES,
    max_recipients: int = SES_MAX_RECIPIENTS,
    date: datetime | None = None,
    router_key: bytes | None = None,
) -> RenderedMessage:
    """Render `email` as a 7-bit, CRLF MIME message.

    `domain` is the right-hand side of a generated Message-ID (default: the sender's domain).
    `router_key` signs ``X-EmailRouter-Id`` (default: the deployment's key from Secrets Manager).
    Raises `InvalidRecipientError` for a malformed address (naming the party),
    `NoRecipientsError`, `MessageTooLargeError` when the message exceeds `max_bytes`, and
    `RenderError` for anything else that makes the email unsendable.

    >>> from emailrouter.outbound.models import OutboundEmail, Recipient
    >>> rendered = render_mime(OutboundEmail("t1", "e1", Recipient("ann@acme.example", "Ann"),
    ...     "Quote", "<p>Hi</p>", to=[Recipient("bob@client.example")], tracking_token="CRM:0001001"),
    ...     router_key=b"k" * 32)
    >>> b"Subject: Quote CRM:0001001" in rendered.raw, rendered.recipients
    (True, ['bob@client.example'])
    """
    sender = _address(email.sender, "From")
    to = [_address(r, "To") for r in email.to]
    cc = [_address(r, "Cc") for r in email.cc]
    bcc = [_address(r, "Bcc") for r in email.bcc]
    recipients = _envelope(to + cc + bcc)
    if not recipients:
        raise NoRecipientsError("the email has no To, Cc or Bcc recipient")
    if len(recipients) > max_recipients:
        raise RenderError(f"{len(recipients)} recipients; SES accepts at most {max_recipients} per message")

    if domain is not None and not _DOMAIN.match(domain):
        raise RenderError(f"cannot form a Message-ID with domain {domain!r}")
    message_id = _message_id(email.message_id) or f"<{uuid.uuid4().hex}@{domain or sender.domain}>"

    msg = EmailMessage(policy=_POLICY)
    msg["From"] = sender
    if to:
        msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject_with_token(email.subject, email.tracking_token)
    msg["Date"] = format_datetime(date or now())
    msg["Message-ID"] = message_id
    in_reply_to = _message_id(email.in_reply_to or "")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    msg["References"] = " ".join(_references(email.references, in_reply_to, message_id))
    key = router_key if router_key is not None else deployment_keys().signing_key()
    msg[HEADER] = sign(email.tenant_id, email.email_id, key)
    _set_body(msg, email)
    for part in msg.walk():
        if part is not msg:
            del part["MIME-Version"]  # the email package repeats it on every part it creates

    raw = msg.as_bytes()
    if len(raw) > max_bytes:
        raise MessageTooLargeError(len(raw), max_bytes)
    longest = max(len(line) for line in raw.split(b"\r\n"))
    if longest > MAX_LINE_BYTES:  # cannot happen with the 7-bit policy; never send it if it does
        raise RenderError(f"rendered line of {longest} bytes exceeds {MAX_LINE_BYTES}")
    return RenderedMessage(
        raw=raw,
        message_id=message_id,
        recipients=recipients,
        size=len(raw),
        from_address=sender.addr_spec,
    )


def subject_with_token(subject: str, token: str | None) -> str:
    """The subject as CRM writes it: ``subject + " " + token`` (e.g. ``Quote CRM:0001001``).

    A token already in the subject (a reply keeps it) is not added twice.
    """
    clean = header_text(subject)
    token = header_text(token or "")
    if not token or token in clean.split():
        return clean
    return f"{clean} {token}" if clean else token


def header_text(value: str) -> str:
    """`value` safe for a header: control and line/paragraph separator characters become spaces.

    CR and LF would start a new header; NUL and other controls are refused by mail servers;
    U+2028/U+2029/U+0085 count as line breaks to Python's own parser.
    """
    cleaned = "".join(" " if unicodedata.category(ch) in _BREAKING else ch for ch in value)
    return _SPACES.sub(" ", cleaned).strip()


# -- addresses ---------------------------------------------------------------------------------


def _address(recipient: Recipient, party: str) -> Address:
    """A validated header `Address`; `party` names the role in the error (``To``, ``Bcc`` …)."""
    label = f"{party} ({header_text(recipient.name)})" if recipient.name.strip() else party
    raw = recipient.email
    if any(unicodedata.category(ch) in _BREAKING for ch in raw):
        raise InvalidRecipientError(label, raw, "contains control characters")
    address = raw.strip()
    local, at, host = address.rpartition("@")
    if not at or not local or not host:
        raise InvalidRecipientError(label, raw, "is not of the form local@domain")
    if not _ATEXT_LOCAL.match(local):
        # Spaces, quotes, angle brackets, commas, non-ASCII (SES has no SMTPUTF8 local parts).
        raise InvalidRecipientError(label, raw, "has characters not allowed in the local part")
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise InvalidRecipientError(label, raw, "has an invalid domain") from None
    if not _DOMAIN.match(ascii_host):
        raise InvalidRecipientError(label, raw, "has an invalid domain")
    return Address(display_name=header_text(recipient.name)[:256], username=local, domain=ascii_host)


def _envelope(addresses: list[Address]) -> list[str]:
    seen: set[str] = set()
    envelope: list[str] = []
    for address in addresses:
        key = address.addr_spec.lower()
        if key not in seen:
            seen.add(key)
            envelope.append(address.addr_spec)
    return envelope


# -- threading ---------------------------------------------------------------------------------


def _message_id(value: str) -> str:
    """``<id@host>`` from a CRM-supplied value: its first bracketed id, else the whole value when
    it is a bare ``id@host``; "" when there is none (the header is then generated or left out)."""
    text = header_text(value)
    match = _MSG_ID.search(text) or _BARE_MSG_ID.match(text)
    return f"<{match.group(1)}>" if match else ""


def _references(originals: list[str], in_reply_to: str, ours: str) -> list[str]:
    """The original References, then the parent (when missing), then our own id, last."""
    chain: list[str] = []
    for value in [*originals, in_reply_to]:
        for token in _MSG_ID.findall(header_text(value)) or [value]:
            ref = _message_id(token)
            if ref and ref not in chain and ref != ours:
                chain.append(ref)
    return [*chain, ours]


# -- body ----------------------------------------------------------------------------------------


def _set_body(msg: EmailMessage, email: OutboundEmail) -> None:
    html = email.html_body
    msg.set_content(html_to_text(html), subtype="plain", charset="utf-8")
    msg.add_alternative(html, subtype="html", charset="utf-8")
    inline: list[OutboundAttachment] = []
    files: list[OutboundAttachment] = []
    for attachment in email.attachments:
        has_cid = bool(attachment.content_id and _content_id(attachment.content_id))
        (inline if has_cid else files).append(attachment)
    if inline:
        html_part = list(msg.iter_parts())[1]  # [text/plain, text/html]
        for attachment in inline:
            maintype, subtype = _mimetype(attachment.mimetype)
            html_part.add_related(
                attachment.content,
                maintype=maintype,
                subtype=subtype,
                disposition="inline",
                filename=_filename(attachment),
                cid=f"<{_content_id(attachment.content_id or '')}>",
            )
    for attachment in files:
        maintype, subtype = _mimetype(attachment.mimetype)
        filename = _filename(attachment)
        msg.add_attachment(
            attachment.content,
            maintype=maintype,
            subtype=subtype,
            disposition="attachment",
            filename=filename,
            params={"name": filename},  # older clients read the name from Content-Type
        )


def _mimetype(value: str) -> tuple[str, str]:
    """``(maintype, subtype)`` from the CRM's mimetype; anything unusable is octet-stream."""
    match = _MIMETYPE.match(header_text(value).lower())
    if not match or match.group(1) in ("multipart", "message"):
        # Unparseable; or a type that may not be base64-encoded (RFC 2046 5.1, 5.2): send it opaque.
        return "application", "octet-stream"
    return match.group(1), match.group(2)


def _filename(attachment: OutboundAttachment) -> str:
    name = header_text(attachment.filename).replace("/", "_").replace("\\", "_").strip(" .")
    return name[:255] or "attachment"


def _content_id(value: str) -> str:
    """The bare Content-ID (no brackets, spaces or controls) of an inline attachment."""
    cid = header_text(value).strip("<>")
    return re.sub(r"[\s<>\"]", "", cid)[:250]
