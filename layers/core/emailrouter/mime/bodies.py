"""Walk the MIME tree: choose the message body, collect the attachments.

Body rules: in multipart/alternative the HTML branch gives `html_body` and the
plain branch `text_body`; elsewhere every inline text part without a filename
is body (Apple Mail splits one body around inline images). Plain text becomes
escaped HTML when there is no HTML. Everything else is an attachment, named
from its headers or generated (`attachment-3.png`, `invite.ics`, `smime.p7s`,
`<subject>.eml` for forwarded messages).

An Outlook TNEF part (`winmail.dat`) is opened (see `mime.tnef`): its files
replace it in the attachments, and its body is used when the MIME parts gave
none. It is kept as it came when it cannot be read, holds nothing, or holds an
RTF-only body while the MIME parts have no body either.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import re
from dataclasses import dataclass, field
from email import policy
from email.generator import BytesGenerator
from email.message import Message
from typing import Literal

from emailrouter.mime.charsets import decode_text
from emailrouter.mime.defects import DefectLog
from emailrouter.mime.headers import RawHeaders, clean_line, decode_8bit, decode_unstructured, header_bytes
from emailrouter.mime.html_text import html_to_text, plain_to_html
from emailrouter.mime.models import Attachment
from emailrouter.mime.params import ContentHeader, mime_type, parse_content_header
from emailrouter.mime.tnef import TnefContent, TnefFile, is_tnef_part, read_tnef
from emailrouter.mime.transfer import decode_base64_text, decode_transfer
from emailrouter.mime.tree import parse_tree

MAX_DEPTH = 50
# Caps on one message's structure (each part costs parse time and a part of the create request);
# a message over either is quarantined with the reason (`BodyWalker.over_limit`).
MAX_PARTS = 1000
MAX_ATTACHMENTS = 500
MAX_FILENAME = 255

# Which body branches a subtree may contribute to: multipart/alternative narrows it.
Role = Literal["all", "html", "text", "none"]

_KNOWN_NAMES = {
    "text/calendar": "invite.ics",
    "application/ics": "invite.ics",
    "application/pkcs7-signature": "smime.p7s",
    "application/x-pkcs7-signature": "smime.p7s",
    "application/pkcs7-mime": "smime.p7m",
    "application/x-pkcs7-mime": "smime.p7m",
    "application/ms-tnef": "winmail.dat",
    "application/vnd.ms-tnef": "winmail.dat",
}
_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "text/plain": ".txt",
    "message/rfc822": ".eml",
    "message/global": ".eml",
    "message/delivery-status": ".txt",
    "message/global-delivery-status": ".txt",
    "message/global-headers": ".txt",
    "message/disposition-notification": ".txt",
    "text/rfc822-headers": ".txt",
    "application/octet-stream": ".bin",
    "application/vnd.ms-outlook": ".msg",
}
# Built-in table only: /etc/mime.types differs between machines, names must not.
_MIMETYPES = mimetypes.MimeTypes()
_BODY_SUBTYPES = frozenset({"plain", "html"})
_UNSAFE_IN_NAME = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_HTML_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_BOUNDARY_LINE = re.compile(rb"^--([^\s\"\\]{1,200})[ \t]*\r?$", re.MULTILINE)
_LINE_ENDINGS = re.compile(r"\r\n|\r")
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _narrow(role: Role, branch: Role) -> Role:
    if role == "all":
        return branch
    return role if role == branch else "none"


def _raw_payload(part: Message) -> object:
    """The payload as the parser stored it.

    `get_payload()` would decode 8-bit bytes with the declared charset, which
    consults the policy's header parser and raises on hostile labels (a NUL in
    the charset name). The stored payload keeps 8-bit bytes as surrogate escapes.
    """
    return getattr(part, "_payload", None)


def children_of(part: Message) -> list[Message] | None:
    """The sub-parts of a multipart or message/* part; None for a leaf."""
    payload = _raw_payload(part)
    if not isinstance(payload, list):
        return None
    return [child for child in payload if isinstance(child, Message)]


def payload_bytes(part: Message) -> bytes:
    """The part's body exactly as it came, before transfer decoding."""
    payload = _raw_payload(part)
    if isinstance(payload, bytes):
        return payload
    return header_bytes(payload) if isinstance(payload, str) else b""


def _clean_body_text(text: str) -> str:
    """Body text with `\\n` line endings and no NUL/control chars a JSON or XML store rejects."""
    text = _LINE_ENDINGS.sub("\n", text)
    return _TEXT_CONTROL.sub("", text.removeprefix("\ufeff"))


def safe_filename(name: str) -> str:
    """A filename without path, control or reserved characters; may be empty."""
    name = re.split(r"[/\\]", name)[-1]
    name = clean_line(_UNSAFE_IN_NAME.sub("_", name)).strip(" .")
    if len(name) > MAX_FILENAME:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 16:
            name = stem[: MAX_FILENAME - len(extension) - 1] + "." + extension
        else:
            name = name[:MAX_FILENAME]
    return name


@dataclass(slots=True)
class _PartInfo:
    """What the walker needs from one part's headers."""

    mimetype: str
    content_type: ContentHeader
    disposition: ContentHeader
    transfer_encoding: str
    content_id: str | None
    filename: str

    @property
    def maintype(self) -> str:
        return self.mimetype.split("/", 1)[0]

    @property
    def subtype(self) -> str:
        return self.mimetype.split("/", 1)[-1]

    @property
    def is_body_candidate(self) -> bool:
        return (
            self.maintype == "text"
            and self.subtype in _BODY_SUBTYPES
            and not self.filename
            and self.disposition.value != "attachment"
        )


def _part_info(part: Message, default_type: str, defects: DefectLog) -> _PartInfo:
    headers = RawHeaders.of(part)
    content_type = parse_content_header(headers.first("content-type"), "Content-Type", defects)
    disposition = parse_content_header(headers.first("content-disposition"), "Content-Disposition", defects)
    raw_cid = headers.first("content-id")
    content_id = None
    if raw_cid is not None:
        content_id = re.sub(r"[\s<>]", "", decode_8bit(raw_cid, "Content-ID", defects)) or None
    filename = disposition.params.get("filename") or content_type.params.get("name") or ""
    return _PartInfo(
        mimetype=mime_type(content_type, defects, default_type),
        content_type=content_type,
        disposition=disposition,
        transfer_encoding=decode_8bit(
            headers.first("content-transfer-encoding") or "", "Content-Transfer-Encoding", defects
        ),
        content_id=content_id,
        filename=safe_filename(filename),
    )


def _message_bytes(part: Message, linesep: str) -> bytes:
    """An attached message/* part serialised back to bytes (headers as they came)."""
    buffer = io.BytesIO()
    generator = BytesGenerator(buffer, mangle_from_=False, policy=policy.compat32)
    for inner in children_of(part) or []:
        generator.flatten(inner, linesep=linesep)
    return buffer.getvalue()


@dataclass(slots=True)
class BodyParts:
    """The result of walking a message: body pieces and attachments, in source order."""

    html_parts: list[str] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)

    @property
    def html_body(self) -> str:
        return "".join(self.html_parts)

    @property
    def text_body(self) -> str:
        if self.text_parts:
            return "\n".join(self.text_parts)
        return html_to_text(self.html_body) if self.html_parts else ""


class BodyWalker:
    """Depth-bounded walk of a parsed message that fills a `BodyParts`."""

    def __init__(
        self, defects: DefectLog, max_attachment_bytes: int | None = None, linesep: str = "\r\n"
    ) -> None:
        self._defects = defects
        self._linesep = linesep  # for re-serialising attached messages as the source wrote them
        self._max_attachment_bytes = max_attachment_bytes
        self._generated = 0
        self._parts = 0
        # What every leaf holds, decoded, in source order: the content's identity (fingerprint.py).
        self.content_hash = hashlib.sha256()
        self.over_limit = ""  # why the message is over a structure cap; empty when it is not
        self.result = BodyParts()
        self._tnef_body = BodyParts()  # used only when the MIME parts give no body
        self._rtf_only: list[tuple[int, bytes, _PartInfo]] = []  # winmail.dat kept for want of a body

    def walk(self, message: Message) -> None:
        """Fill `result` from a parsed message."""
        self._visit(message, 0, "all", "text/plain")
        self._finish()

    def _visit(self, part: Message, depth: int, role: Role, default_type: str) -> None:
        """Visit `part` and its children; `role` says which body branches it may fill."""
        if depth > MAX_DEPTH:
            self._defects.add("nesting-too-deep", MAX_DEPTH)
            return
        self._parts += 1
        if self._parts > MAX_PARTS:
            if not self.over_limit:
                self._defects.add("parts-too-many", MAX_PARTS)
                self.over_limit = f"more than {MAX_PARTS} MIME parts"
            return
        for defect in getattr(part, "defects", ()):
            self._defects.add("mime-" + _kebab(type(defect).__name__))
        info = _part_info(part, default_type, self._defects)
        children = children_of(part)
        if children is not None:
            if info.maintype == "message":
                self._attach_message(part, info)
            elif info.subtype == "alternative":
                self._walk_alternative(children, depth + 1, role)
            else:
                child_default = "message/rfc822" if info.mimetype == "multipart/digest" else "text/plain"
                for child in children:
                    self._visit(child, depth + 1, role, child_default)
            return
        if info.maintype == "multipart":
            self._recover_multipart(part, info, depth, role)
            return
        unused_rendering = info.maintype == "text" and info.mimetype not in _KNOWN_NAMES
        if role == "none" and unused_rendering and not info.filename:
            self._hash_leaf(info, payload_bytes(part))  # not used, but part of the content
            return  # an alternative rendering of the body we did not choose (text/enriched, …)
        payload = _raw_payload(part)
        if (
            isinstance(payload, str)
            and info.transfer_encoding.strip().lower() == "base64"
            and payload.isascii()
        ):
            content = decode_base64_text(payload, self._defects)
        else:
            content = decode_transfer(payload_bytes(part), info.transfer_encoding, self._defects)
        self._hash_leaf(info, content)
        if info.is_body_candidate:
            self._add_body(content, info, role)
        elif is_tnef_part(info.mimetype, info.filename):
            self._open_tnef(content, info)
        else:
            self._attach(content, info)

    def _hash_leaf(self, info: _PartInfo, content: bytes) -> None:
        """Add one leaf to `content_hash`: its type, name and decoded content, text with its line
        ends and trailing white space normalised (a transport may change those, not the content)."""
        if info.maintype in ("text", "message"):
            content = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").rstrip()
        self.content_hash.update(f"{info.mimetype}\x00{info.filename}\x00{len(content)}\x00".encode())
        self.content_hash.update(content)

    def _finish(self) -> None:
        """Use the TNEF body when the MIME parts gave none; keep RTF-only winmail.dat files then."""
        if self.result.html_parts or self.result.text_parts:
            return
        self.result.html_parts.extend(self._tnef_body.html_parts)
        self.result.text_parts.extend(self._tnef_body.text_parts)
        if self.result.html_parts or self.result.text_parts:
            return
        for position, content, info in reversed(self._rtf_only):
            self._defects.add("tnef-body-rtf-only")
            self._attach(content, info, position)

    def _walk_alternative(self, children: list[Message], depth: int, role: Role) -> None:
        html_index = _last_index(children, "html")
        text_index = _last_index(children, "plain")
        for index, child in enumerate(children):
            child_role: Role = "none"
            if index == html_index:
                child_role = role if text_index in (None, index) else _narrow(role, "html")
            elif index == text_index:
                child_role = role if html_index is None else _narrow(role, "text")
            self._visit(child, depth, child_role, "text/plain")

    def _recover_multipart(self, part: Message, info: _PartInfo, depth: int, role: Role) -> None:
        """A multipart whose boundary is missing or wrong: find the boundary in the body."""
        self._defects.add("multipart-boundary-missing")
        body = payload_bytes(part)
        found = _BOUNDARY_LINE.search(body)
        if found and depth < MAX_DEPTH:
            boundary = found.group(1).removesuffix(b"--")
            head = b'Content-Type: %s; boundary="%s"\r\n\r\n' % (info.mimetype.encode("ascii"), boundary)
            repaired, usable = parse_tree(head + body, self._defects)
            if usable and children_of(repaired) is not None:
                self._defects.add("multipart-boundary-recovered")
                self._visit(repaired, depth + 1, role, "text/plain")
                return
        plain = _PartInfo("text/plain", info.content_type, info.disposition, info.transfer_encoding, None, "")
        content = decode_transfer(body, info.transfer_encoding, self._defects)
        self._hash_leaf(plain, content)
        self._add_body(content, plain, role)

    def _add_body(self, content: bytes, info: _PartInfo, role: Role) -> None:
        charset = info.content_type.params.get("charset")
        if info.subtype == "html" and not charset:
            sniffed = _HTML_META_CHARSET.search(content[:4096])
            charset = sniffed.group(1).decode("ascii") if sniffed else None
        self._add_text(decode_text(content, charset, self._defects, "body"), info.subtype, role, self.result)

    def _add_text(self, text: str, subtype: str, role: Role, into: BodyParts) -> None:
        """Add decoded body text (`subtype` html or plain) to the branches `role` allows."""
        text = _clean_body_text(text).rstrip()
        if not text.strip():
            return
        if subtype == "html":
            if role in ("all", "html"):
                into.html_parts.append(text)
            return
        if role in ("all", "text"):
            into.text_parts.append(text)
        if role in ("all", "html"):
            into.html_parts.append(plain_to_html(text))

    def _open_tnef(self, content: bytes, info: _PartInfo) -> None:
        """Attach the files inside a TNEF part instead of the part; keep its body for `_finish`."""
        found = read_tnef(content, self._defects)
        if found is None:
            self._attach(content, info)
            return
        if found.rtf_only:
            self._rtf_only.append((len(self.result.attachments), content, info))
        for file in found.files:
            self._attach(file.content, _tnef_file_info(file))
        self._add_tnef_body(found)

    def _add_tnef_body(self, found: TnefContent) -> None:
        if found.html:
            self._add_text(found.html, "html", "all", self._tnef_body)
        elif found.text:
            self._add_text(found.text, "plain", "all", self._tnef_body)

    def _generated_name(self, mimetype: str) -> str:
        if mimetype in _KNOWN_NAMES:
            return _KNOWN_NAMES[mimetype]
        self._generated += 1
        extension = _EXTENSIONS.get(mimetype) or _MIMETYPES.guess_extension(mimetype) or ".bin"
        return f"attachment-{self._generated}{extension}"

    def _attach_message(self, part: Message, info: _PartInfo) -> None:
        try:
            content = _message_bytes(part, self._linesep)
        except Exception:  # a hostile attached message must not sink its parent
            self._defects.add("attached-message-unreadable")
            content = payload_bytes(part)
        self._hash_leaf(info, content)
        if not info.filename and info.subtype in ("rfc822", "global"):
            inner = children_of(part)
            subject = ""
            if inner:
                raw_subject = RawHeaders.of(inner[0]).first("subject")
                subject = decode_unstructured(raw_subject or "", "Subject", self._defects)
            stem = safe_filename(_UNSAFE_IN_NAME.sub("_", subject))[: MAX_FILENAME - 4]
            info.filename = f"{stem}.eml" if stem else ""
        self._attach(content, info)

    def _attach(self, content: bytes, info: _PartInfo, position: int | None = None) -> None:
        """Add an attachment (at the end, or at `position`) unless it is over the size limit."""
        if len(self.result.attachments) >= MAX_ATTACHMENTS:
            if not self.over_limit:
                self._defects.add("attachments-too-many", MAX_ATTACHMENTS)
                self.over_limit = f"more than {MAX_ATTACHMENTS} attachments"
            return
        filename = info.filename or self._generated_name(info.mimetype)
        limit = self._max_attachment_bytes
        if limit is not None and len(content) > limit:
            self._defects.add("attachment-too-large", filename, len(content))
            return
        inline = info.disposition.value == "inline" or (
            not info.disposition.value and info.content_id is not None
        )
        attachment = Attachment(
            filename=filename,
            mimetype=info.mimetype,
            content=content,
            content_id=info.content_id,
            inline=inline,
        )
        if position is None:
            self.result.attachments.append(attachment)
        else:
            self.result.attachments.insert(position, attachment)


def _tnef_file_info(file: TnefFile) -> _PartInfo:
    """Part info for a file taken out of TNEF: no MIME headers, so no disposition."""
    content_type = ContentHeader(file.mimetype)
    return _PartInfo(
        file.mimetype, content_type, ContentHeader(), "", file.content_id, safe_filename(file.filename)
    )


def _kebab(name: str) -> str:
    """`CloseBoundaryNotFoundDefect` → `close-boundary-not-found`."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name.removesuffix("Defect")).lower()


def _last_index(children: list[Message], subtype: str) -> int | None:
    """Index of the last child whose subtree holds a text/<subtype> body part."""
    for index in range(len(children) - 1, -1, -1):
        if _holds_body(children[index], subtype):
            return index
    return None


def _holds_body(part: Message, subtype: str) -> bool:
    """Whether `part` is, or contains within MAX_DEPTH levels, a text/<subtype> body candidate."""
    scratch = DefectLog()  # the real walk records these parts' defects
    stack: list[tuple[Message, int]] = [(part, 0)]
    while stack:
        current, depth = stack.pop()
        info = _part_info(current, "text/plain", scratch)
        children = children_of(current)
        if children is not None:
            if info.maintype != "message" and depth < MAX_DEPTH:
                stack.extend((child, depth + 1) for child in children)
        elif info.is_body_candidate and info.subtype == subtype:
            return True
    return False
