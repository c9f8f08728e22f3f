"""Content-Transfer-Encoding: base64 and quoted-printable, decoded best-effort."""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emailrouter.mime.defects import DefectLog

_BASE64_CHUNK = re.compile(rb"[A-Za-z0-9+/]+=*")
_BASE64_NOISE = re.compile(rb"[^A-Za-z0-9+/=\s]")
_QP_BAD_ESCAPE = re.compile(rb"=(?![0-9A-Fa-f]{2}|[ \t]*(?:\r\n|\r|\n|$))")
_IDENTITY = frozenset({"", "7bit", "8bit", "binary"})


def decode_base64(data: bytes, defects: DefectLog) -> bytes:
    """Decode base64 that may have stray characters, missing padding or padding mid-stream.

    Each run of alphabet characters (ended by `=` padding) is decoded on its own,
    so concatenated base64 blobs decode as their concatenation.
    """
    if not _BASE64_NOISE.search(data):
        # The common case, well-formed base64 with line breaks: decoded in one pass, no copies.
        first_pad = data.find(b"=")
        if first_pad == -1 or not data[first_pad:].strip(b"= \t\r\n"):
            try:
                return binascii.a2b_base64(data)
            except binascii.Error:
                pass  # truncated or badly padded: the careful path below says which
    else:
        defects.add("base64-invalid-chars")
    compact = re.sub(rb"[^A-Za-z0-9+/=]", b"", data)
    chunks = [match.group() for match in _BASE64_CHUNK.finditer(compact)]
    if len(chunks) > 1 or sum(map(len, chunks)) != len(compact):
        defects.add("base64-padding")  # padding in the middle of the data
    out: list[bytes] = []
    for chunk in chunks:
        stripped = chunk.rstrip(b"=")
        if len(stripped) % 4 == 1:
            stripped = stripped[:-1]
            defects.add("base64-truncated")
        expected = -len(stripped) % 4
        if len(chunk) - len(stripped) != expected:
            defects.add("base64-padding")
        out.append(base64.b64decode(stripped + b"=" * expected))
    return b"".join(out)


_BASE64_NOISE_TEXT = re.compile(r"[^A-Za-z0-9+/=\s]")


def decode_base64_text(text: str, defects: DefectLog) -> bytes:
    """`decode_base64` for a payload the parser holds as ASCII text: well-formed base64 is
    decoded from the text itself, without first copying it to bytes (large attachments)."""
    if not _BASE64_NOISE_TEXT.search(text):
        first_pad = text.find("=")
        if first_pad == -1 or not text[first_pad:].strip("= \t\r\n"):
            try:
                return binascii.a2b_base64(text)
            except binascii.Error:
                pass
    return decode_base64(text.encode("ascii"), defects)


def decode_quoted_printable(data: bytes, defects: DefectLog) -> bytes:
    """Decode quoted-printable; an `=` not followed by two hex digits is kept literally."""
    if _QP_BAD_ESCAPE.search(data):
        defects.add("quoted-printable-invalid")
    return binascii.a2b_qp(data)


def decode_transfer(payload: bytes, encoding: str, defects: DefectLog) -> bytes:
    """The content bytes of a part with Content-Transfer-Encoding `encoding`."""
    encoding = encoding.strip().lower().strip('"')
    if encoding == "base64":
        return decode_base64(payload, defects)
    if encoding == "quoted-printable":
        return decode_quoted_printable(payload, defects)
    if encoding not in _IDENTITY:
        defects.add("transfer-encoding-unknown", encoding[:40])
    return payload
