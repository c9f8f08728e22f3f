"""Bytes to text with the fallbacks real mail needs.

Declared charsets are often wrong: `iso-8859-1` that is really windows-1252,
`gb2312` that is really GBK, no charset at all on 8-bit text. `decode_text`
never raises; it records what it had to guess in the defect log.
"""

from __future__ import annotations

import codecs
import contextlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emailrouter.mime.defects import DefectLog

# Labels Python does not know, or knows as a narrower charset than senders actually use.
_SUPERSETS = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "euc-cn": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "x-sjis": "cp932",
    "sjis": "cp932",
    "windows-31j": "cp932",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "iso-8859-8-e": "iso-8859-8",
    "iso-8859-6-e": "iso-8859-6",
    "windows-874": "cp874",
    "tis-620": "cp874",
    "iso-8859-11": "cp874",
    "x-mac-roman": "mac-roman",
    "x-mac-cyrillic": "mac-cyrillic",
    "big5": "big5hkscs",
    "x-unicode-2-0-utf-8": "utf-8",
    "unicode-2-0-utf-8": "utf-8",
    "x-unicode20utf8": "utf-8",
    "utf8mb4": "utf-8",
}
# Codecs Python knows that are not charsets; mail that names them is treated as unlabelled.
_NOT_CHARSETS = frozenset(
    {"undefined", "unicode-escape", "raw-unicode-escape", "idna", "punycode", "mbcs", "oem"}
)
# Single-byte labels whose C1 range (0x80-0x9F) senders fill with windows-1252 characters.
_WINDOWS_1252_IN_DISGUISE = frozenset({"iso8859-1", "ascii", "latin-1", "iso-8859-1"})
_C1_BYTES = re.compile(rb"[\x80-\x9f]")
_LABEL_JUNK = re.compile(r"[\"'\s]")


def _c1_passthrough(error: UnicodeError) -> tuple[str, int]:
    """Map bytes windows-1252 leaves undefined (0x81, 0x8D, …) to the same code point."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return error.object[error.start : error.end].decode("latin-1"), error.end


codecs.register_error("emailrouter-c1", _c1_passthrough)


def codec_name(label: str | None) -> str | None:
    """Python's codec name for a MIME charset label, or None when unknown or not a charset.

    >>> codec_name("ISO-8859-1"), codec_name("gb2312"), codec_name("x-unknown")
    ('iso8859-1', 'gb18030', None)
    """
    if not label:
        return None
    cleaned = _LABEL_JUNK.sub("", label).lower().split("*", 1)[0]  # RFC 2231 language suffix
    if not cleaned or len(cleaned) > 64:
        return None
    cleaned = _SUPERSETS.get(cleaned, cleaned)
    try:
        info = codecs.lookup(cleaned)
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None
    return info.name


def decode_windows_1252(data: bytes) -> str:
    """windows-1252 as browsers decode it: undefined bytes become the C1 code point."""
    return data.decode("cp1252", errors="emailrouter-c1")


def decode_guess(data: bytes) -> tuple[str, bool]:
    """Decode unlabelled bytes: ASCII/UTF-8 when valid, else windows-1252.

    Returns the text and whether it was a guess (not plain ASCII or valid UTF-8).
    """
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return decode_windows_1252(data), True


def decode_text(data: bytes, label: str | None, defects: DefectLog, where: str = "body") -> str:
    """Decode `data` declared as charset `label`; never raises.

    Order: the declared codec (windows-1252 instead of latin-1/ascii when C1 bytes
    are present) → UTF-8 → windows-1252 → the declared codec with replacement chars.
    """
    codec = codec_name(label)
    if label and codec is None and label.strip().lower() not in {"unknown-8bit", "x-unknown"}:
        defects.add("charset-unknown", where, _LABEL_JUNK.sub("", label)[:40])
    if codec is None:
        text, guessed = decode_guess(data)
        if guessed:
            defects.add("charset-guessed", where, "windows-1252")
        return text
    if codec in _WINDOWS_1252_IN_DISGUISE and not data.isascii():
        if codec == "ascii":
            text, guessed = decode_guess(data)
            defects.add("charset-mislabelled", where, "windows-1252" if guessed else "utf-8")
            return text
        if _C1_BYTES.search(data):
            defects.add("charset-mislabelled", where, "windows-1252")
            return decode_windows_1252(data)
    with contextlib.suppress(Exception):  # codecs raise more than UnicodeError on hostile input
        return data.decode(codec)
    if codec != "utf-8":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            defects.add("charset-mislabelled", where, "utf-8")
            return text
    defects.add("charset-invalid-bytes", where, codec)
    try:
        return data.decode(codec, errors="replace")
    except Exception:
        return decode_windows_1252(data)
