"""Header values: unfolding, 8-bit bytes, RFC 2047 encoded words, message ids, dates.

Header values arrive as the email package stores them (raw source text, 8-bit
bytes as surrogate escapes). Nothing here relies on the policy's header
objects, so a hostile header cannot raise out of the parser.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

from emailrouter.mime.charsets import decode_guess, decode_text

if TYPE_CHECKING:
    from collections.abc import Iterable
    from email.message import Message

    from emailrouter.mime.defects import DefectLog

MAX_REFERENCES = 32

_FOLD = re.compile(r"\r\n|\r|\n")
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,80})\?([bBqQ])\?([^?]*?)\?=")
_BETWEEN_WORDS = re.compile(r"[ \t]*")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff]")
_SPACES = re.compile(r"\s+")  # every Unicode space (U+00A0, U+2003, U+3000, …), one pass
_BASE64_JUNK = re.compile(r"[^A-Za-z0-9+/]")
_MSG_ID = re.compile(r"<([^<>]*)>")
_COMMENT = re.compile(r"\([^()]*\)")


def header_bytes(raw: str) -> bytes:
    """The original bytes of a stored header value (surrogate escapes back to bytes)."""
    return raw.encode("utf-8", errors="surrogateescape")


def unfold(raw: str) -> str:
    """Remove the line breaks of folded header lines (RFC 5322 2.2.3); stray CR/LF go too."""
    return _FOLD.sub("", raw)


def clean_line(text: str) -> str:
    """One line of display text: control chars removed, runs of any (Unicode) space collapsed to one."""
    text = _CONTROL.sub("", text.replace("\t", " ").replace("\u2028", " ").replace("\u2029", " "))
    return _SPACES.sub(" ", text).strip()


def decode_8bit(raw: str, name: str, defects: DefectLog) -> str:
    """Turn raw 8-bit header bytes into text: UTF-8 when valid, else windows-1252."""
    data = header_bytes(unfold(raw))
    if data.isascii():
        return data.decode("ascii")
    text, guessed = decode_guess(data)
    defects.add("header-8bit", name)
    if guessed:
        defects.add("charset-guessed", name, "windows-1252")
    return text


def _decode_word_payload(encoding: str, payload: str, name: str, defects: DefectLog) -> bytes:
    """The bytes of one encoded word's payload (B or Q), repairing what can be repaired."""
    if encoding in "bB":
        cleaned = _BASE64_JUNK.sub("", payload)
        if cleaned != payload.rstrip("="):
            defects.add("encoded-word-invalid-chars", name)
        if len(cleaned) % 4 == 1:
            cleaned = cleaned[:-1]
            defects.add("encoded-word-padding", name)
        elif len(payload) % 4 and payload.endswith("="):
            defects.add("encoded-word-padding", name)
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
    data = payload.replace("_", " ").encode("utf-8", errors="surrogateescape")
    return binascii.a2b_qp(data, header=True)


def decode_encoded_words(text: str, name: str, defects: DefectLog) -> str:
    """Decode RFC 2047 encoded words anywhere in `text`, in any charset Python knows.

    Adjacent encoded words in the same charset are joined before decoding, so a
    multi-byte character split across two words survives; whitespace between
    adjacent encoded words is dropped as RFC 2047 6.2 says.

    Example: `=?utf-8?q?Gr=C3=BC=C3=9Fe?= =?utf-8?b?IGF1cw==?=` → `Grüße aus`.
    """
    if "=?" not in text:
        return text
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset: str | None = None
    position = 0

    def flush() -> None:
        nonlocal pending_charset
        if pending:
            out.append(decode_text(b"".join(pending), pending_charset or "", defects, name))
            pending.clear()
        pending_charset = None

    for match in _ENCODED_WORD.finditer(text):
        gap = text[position : match.start()]
        if gap and not (pending and _BETWEEN_WORDS.fullmatch(gap)):
            flush()
            out.append(gap)
        charset = match.group(1).split("*", 1)[0].lower()
        if pending and charset != pending_charset:
            flush()
        pending_charset = charset
        pending.append(_decode_word_payload(match.group(2), match.group(3), name, defects))
        position = match.end()
    flush()
    out.append(text[position:])
    return "".join(out)


def decode_unstructured(raw: str, name: str, defects: DefectLog) -> str:
    """A display header (Subject, Thread-Topic, …) as one clean line of text."""
    return clean_line(decode_encoded_words(decode_8bit(raw, name, defects), name, defects))


def _msg_id_tokens(raw: str) -> list[str]:
    """Every `<id>` token, comments and whitespace removed, brackets kept."""
    text = unfold(raw)
    for _ in range(8):  # nested comments: peel one level per pass
        stripped = _COMMENT.sub("", text)
        if stripped == text:
            break
        text = stripped
    tokens = []
    for match in _MSG_ID.finditer(text):
        inner = re.sub(r"\s+", "", match.group(1))
        if inner and inner.isprintable():
            tokens.append(f"<{inner}>")
    return tokens


def parse_message_id(raw: str | None, name: str, defects: DefectLog) -> str | None:
    """The first message id of a Message-ID / In-Reply-To value, with angle brackets."""
    if raw is None:
        return None
    text = decode_8bit(raw, name, defects)
    tokens = _msg_id_tokens(text)
    if tokens:
        return tokens[0]
    bare = re.sub(r"\s+", "", _COMMENT.sub("", text))
    if not bare:
        if text.strip():
            defects.add("message-id-invalid", name)
        return None
    if "@" in bare and bare.isprintable() and "<" not in bare and ">" not in bare:
        defects.add("message-id-unbracketed", name)
        return f"<{bare}>"
    defects.add("message-id-invalid", name)
    return None


def parse_references(raw_values: list[str], defects: DefectLog) -> list[str]:
    """References ids in order, duplicates dropped, only the last `MAX_REFERENCES` kept."""
    seen: set[str] = set()
    ids: list[str] = []
    for raw in raw_values:
        for token in _msg_id_tokens(decode_8bit(raw, "References", defects)):
            if token not in seen:
                seen.add(token)
                ids.append(token)
    if len(ids) > MAX_REFERENCES:
        defects.add("references-truncated", len(ids))
    return ids[-MAX_REFERENCES:]


def parse_date(raw: str | None, defects: DefectLog) -> str | None:
    """RFC 5322 date → ISO 8601 UTC (`2026-11-27T05:00:00Z`); None when absent or unparseable.

    A date without a zone (`-0000` or none) is taken as UTC.
    """
    if raw is None:
        return None
    text = clean_line(decode_8bit(raw, "Date", defects))
    if not text:
        defects.add("date-invalid")
        return None
    try:
        moment = parsedate_to_datetime(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, TypeError, OverflowError, IndexError):
        defects.add("date-invalid")
        return None


class RawHeaders:
    """The raw header values of one message or part, by lower-cased name, in source order."""

    def __init__(self, items: Iterable[tuple[str, object]]) -> None:
        self._values: dict[str, list[str]] = {}
        for name, value in items:
            self._values.setdefault(str(name).strip().lower(), []).append(str(value))

    @classmethod
    def of(cls, part: Message) -> RawHeaders:
        """The headers of a parsed part, as the parser stored them."""
        return cls(part.raw_items())

    def first(self, name: str) -> str | None:
        """The first value of `name`, or None when the header is absent."""
        values = self._values.get(name.lower())
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        """Every value of `name`, in source order."""
        return list(self._values.get(name.lower(), ()))
