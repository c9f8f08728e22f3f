"""Outlook's TNEF container (`winmail.dat`, application/ms-tnef): its files and its body.

Exchange and Outlook wrap rich-text mail in TNEF; other mail clients then see a
single unreadable `winmail.dat`. `read_tnef` opens it with `tnefparse` so the
CRM gets the real attachments instead. Decisions:

- Files: every attachment with content or a name, named by its long filename
  (else its 8.3 title), the type guessed from that name (else the sender's MIME
  tag, else application/octet-stream). An attached Outlook item (an embedded
  message) is itself a TNEF stream: it is kept as application/ms-tnef.
- Body: the HTML body when present, else the plain-text body. The caller uses
  it only when the MIME parts gave no body.
- Compressed RTF is not converted: that takes an LZFu decompressor and an RTF
  reader, and Outlook sends the same text as a MIME text part anyway. When RTF
  is the only body the TNEF has, `rtf_only` is set; if the MIME parts carry no
  body either, the caller keeps `winmail.dat` next to the extracted files so
  the text is not lost (a reader that understands TNEF can still open it).
- Anything `tnefparse` cannot read (bad signature, unknown codepage, …) and any
  attribute whose checksum does not match (a truncated or damaged stream, which
  tnefparse itself reads without complaint) gives None and a defect; the caller
  then keeps `winmail.dat` as it came.

Defects: `tnef-invalid:<reason>` (`signature`, `checksum`, `truncated`, `property-count` or the
error tnefparse raised; kept as an ordinary attachment), `tnef-empty` (nothing inside; kept),
`tnef-body-rtf-only` (added by the walker when winmail.dat is kept for its RTF body).
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emailrouter.mime.charsets import decode_text

if TYPE_CHECKING:
    from emailrouter.mime.defects import DefectLog

TNEF_SIGNATURE = b"\x78\x9f\x3e\x22"  # 0x223E9F78, little-endian
TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
TNEF_NAMES = frozenset({"winmail.dat", "win.dat"})
EMBEDDED_MESSAGE_TYPE = "application/ms-tnef"

_PR_ATTACH_MIME_TAG = 0x370E
_PR_ATTACH_CONTENT_ID = 0x3712
# Types the built-in mimetypes table lacks but Outlook users attach every day. Built-in
# table only otherwise: /etc/mime.types differs between machines, results must not.
_COMMON_TYPES = {
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".docm": "application/vnd.ms-word.document.macroEnabled.12",
    ".xlsm": "application/vnd.ms-excel.sheet.macroEnabled.12",
    ".msg": "application/vnd.ms-outlook",
    ".ics": "text/calendar",
    ".vcf": "text/vcard",
    ".eml": "message/rfc822",
    ".rtf": "application/rtf",
    ".7z": "application/x-7z-compressed",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".ods": "application/vnd.oasis.opendocument.spreadsheet",
}
_MIMETYPES = mimetypes.MimeTypes()
_MIME_TYPE = re.compile(r"^[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+$")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class TnefFile:
    """One attachment found inside a TNEF stream."""

    filename: str  # as the sender named it (unsanitised); may be empty
    mimetype: str
    content: bytes
    content_id: str | None = None  # without angle brackets


@dataclass(slots=True)
class TnefContent:
    """What a readable TNEF stream holds."""

    html: str = ""
    text: str = ""
    rtf_only: bool = False  # the only body is compressed RTF, which is not converted
    files: list[TnefFile] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not (self.html or self.text or self.rtf_only or self.files)


def is_tnef_part(mimetype: str, filename: str) -> bool:
    """Whether a leaf part is meant as TNEF: by its declared type or the name Outlook gives it."""
    return mimetype in TNEF_TYPES or filename.lower() in TNEF_NAMES


def guess_mimetype(filename: str, declared: str = "") -> str:
    """The media type for an extracted file: from its extension, else `declared`, else octet-stream."""
    extension = filename.rpartition(".")[2].lower() if "." in filename else ""
    if extension:
        known = _COMMON_TYPES.get("." + extension) or _MIMETYPES.guess_type("x." + extension)[0]
        if known:
            return known
    declared = declared.strip().lower()
    return declared if _MIME_TYPE.match(declared) else "application/octet-stream"


def _text(value: object, codepage: str | None, defects: DefectLog) -> str:
    """A tnefparse string value (already text, or bytes in `codepage`) as text without NULs."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, bytes | bytearray):
        return decode_text(bytes(value).rstrip(b"\x00"), codepage, defects, "tnef").replace("\x00", "")
    return ""


def _mapi_value(attachment: Any, prop: int) -> object:
    """The value of MAPI property `prop` among an attachment's remaining properties, or None."""
    for attribute in getattr(attachment, "mapi_attrs", ()):
        if attribute.name == prop:
            return attribute.data
    return None


def _file_name(attachment: Any, codepage: str | None, defects: DefectLog) -> str:
    """The long filename, else the 8.3 title.

    tnefparse decodes the title as UTF-8 on access and raises for the OEM-codepage
    bytes Outlook writes (`Übersicht.pdf` in windows-1252); decode those here.
    """
    try:
        name = attachment.long_filename()
    except UnicodeDecodeError:
        name = getattr(attachment, "_name", b"")
    return _text(name, codepage, defects).strip()


def _file(attachment: Any, codepage: str | None, defects: DefectLog) -> TnefFile | None:
    content = attachment.data if isinstance(attachment.data, bytes) else b""
    filename = _file_name(attachment, codepage, defects)
    if not content and not filename:
        return None  # a rendering placeholder (OLE object preview) with nothing to keep
    content_id = _text(_mapi_value(attachment, _PR_ATTACH_CONTENT_ID), codepage, defects).strip("<> ")
    if hasattr(attachment, "embed"):
        mimetype = EMBEDDED_MESSAGE_TYPE
    else:
        declared = _text(_mapi_value(attachment, _PR_ATTACH_MIME_TAG), codepage, defects)
        mimetype = guess_mimetype(filename, declared)
    return TnefFile(filename=filename, mimetype=mimetype, content=content, content_id=content_id or None)


def _body(tnef: Any, found: TnefContent, defects: DefectLog) -> None:
    """Fill the HTML or plain body; mark RTF-only streams."""
    html = tnef.htmlbody
    if isinstance(html, bytes | bytearray) and html:
        found.html = decode_text(bytes(html).rstrip(b"\x00"), _html_charset(bytes(html)), defects, "tnef")
    elif isinstance(html, str):
        found.html = html.replace("\x00", "")
    if not found.html.strip():
        found.html = ""
        found.text = _text(tnef.body, tnef.codepage, defects).strip()
    # `_rtfbody` is the raw PR_RTF_COMPRESSED value; the public `rtfbody` property would try
    # to import a decompressor and log a warning for every message when there is none.
    if not found.html and not found.text and getattr(tnef, "_rtfbody", None):
        found.rtf_only = True


def _html_charset(html: bytes) -> str | None:
    match = _META_CHARSET.search(html[:4096])
    return match.group(1).decode("ascii") if match else None


_MAPI_PROPERTY_LISTS = {0x00069003, 0x00069005}  # attMsgProps, attAttachment


def layout_problem(content: bytes) -> str | None:
    """Checks the stream's record layout before tnefparse reads it: every attribute within the
    stream with a matching checksum, and every MAPI property list no longer than its bytes allow.
    tnefparse trusts a property count as it stands, so one altered count (up to 2^32) would keep
    it looping for hours; a hostile winmail.dat must cost no more than its size."""
    offset, size = 6, len(content)  # signature and key
    while offset < size:
        if offset + 9 > size:
            return "truncated"
        attribute = int.from_bytes(content[offset + 1 : offset + 5], "little")
        length = int.from_bytes(content[offset + 5 : offset + 9], "little")
        end = offset + 9 + length
        if end + 2 > size:
            return "truncated"
        data = content[offset + 9 : end]
        if sum(data) & 0xFFFF != int.from_bytes(content[end : end + 2], "little"):
            return "checksum"
        # A property takes at least its 4-byte tag, whatever its value.
        if attribute in _MAPI_PROPERTY_LISTS and int.from_bytes(data[:4], "little") > (len(data) - 4) // 4:
            return "property-count"
        offset = end + 2
    return None


def read_tnef(content: bytes, defects: DefectLog) -> TnefContent | None:
    """The files and body of a TNEF stream; None (with a defect) when it cannot be read."""
    if not content.startswith(TNEF_SIGNATURE):
        defects.add("tnef-invalid", "signature")
        return None
    problem = layout_problem(content)
    if problem is not None:
        defects.add("tnef-invalid", problem)
        return None
    try:
        from tnefparse import TNEF  # imported here: only mail that carries TNEF pays for it

        tnef = TNEF(content, do_checksum=True)
        if not all(getattr(obj, "good_checksum", True) for obj in tnef.objects):
            defects.add("tnef-invalid", "checksum")  # tnefparse reads truncated streams without error
            return None
        found = TnefContent()
        _body(tnef, found, defects)
        for attachment in tnef.attachments:
            extracted = _file(attachment, tnef.codepage, defects)
            if extracted is not None:
                found.files.append(extracted)
    except Exception as error:  # tnefparse raises whatever its struct/codec calls raise
        defects.add("tnef-invalid", type(error).__name__)
        return None
    if found.is_empty:
        defects.add("tnef-empty")
        return None
    return found
