"""Content-Type and Content-Disposition: the value and its parameters.

Parameters follow RFC 2045 (`name="value"`), RFC 2231 (`filename*=utf-8''%E2%82%AC.pdf`,
continuations `filename*0*=…; filename*1*=…`) and, because mailers still send it,
RFC 2047 encoded words inside quoted values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from emailrouter.mime.charsets import decode_text
from emailrouter.mime.headers import clean_line, decode_8bit, decode_encoded_words

if TYPE_CHECKING:
    from emailrouter.mime.defects import DefectLog

_MIME_TYPE = re.compile(r"^([a-z0-9!#$&^_.+-]+)/([a-z0-9!#$&^_.+-]+)$")
_SECTION = re.compile(r"^([^*]+)\*(\d{1,3})(\*?)$")


@dataclass(slots=True)
class ContentHeader:
    """A parsed structured MIME header: `value` lower-cased, `params` by lower-cased name."""

    value: str = ""
    params: dict[str, str] = field(default_factory=dict)


def _split_params(text: str) -> list[str]:
    """Split on `;` outside quoted strings."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return pieces


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value.strip('"')


def _decode_extended(value: str, defects: DefectLog, where: str) -> str:
    """An RFC 2231 `charset'language'percent-encoded` value."""
    charset = ""
    parts = value.split("'", 2)
    if len(parts) == 3:
        charset, _language, value = parts
    return decode_text(unquote_to_bytes(value), charset or None, defects, where)


def parse_content_header(raw: str | None, name: str, defects: DefectLog) -> ContentHeader:
    """Parse a raw Content-Type / Content-Disposition value; never raises."""
    if raw is None:
        return ContentHeader()
    text = decode_8bit(raw, name, defects)
    first, *rest = _split_params(text)
    header = ContentHeader(value=re.sub(r"\s+", "", first).lower())
    simple: dict[str, str] = {}
    sections: dict[str, dict[int, tuple[str, bool]]] = {}
    for piece in rest:
        if "=" not in piece:
            if piece.strip():
                defects.add("parameter-invalid", name)
            continue
        key, _, value = piece.partition("=")
        key = key.strip().lower()
        if not key:
            continue
        section = _SECTION.match(key)
        if section:
            sections.setdefault(section.group(1), {})[int(section.group(2))] = (
                _unquote(value),
                bool(section.group(3)),
            )
        elif key.endswith("*"):
            simple[key[:-1]] = _decode_extended(_unquote(value), defects, name)
        elif key not in simple:
            simple[key] = clean_line(decode_encoded_words(_unquote(value), name, defects))
    for key, parts in sections.items():
        # Continuations: percent-decode the extended sections, charset from section 0.
        ordered = [parts[index] for index in sorted(parts)]
        charset = ""
        chunks: list[bytes] = []
        for position, (value, extended) in enumerate(ordered):
            if extended:
                if position == 0 and value.count("'") >= 2:
                    charset, _language, value = value.split("'", 2)
                chunks.append(unquote_to_bytes(value))
            else:
                chunks.append(value.encode("utf-8", errors="surrogateescape"))
        simple[key] = decode_text(b"".join(chunks), charset or None, defects, name)
    header.params = {key: clean_line(value) for key, value in simple.items()}
    return header


def mime_type(header: ContentHeader, defects: DefectLog, default: str = "text/plain") -> str:
    """The header's `type/subtype`; `default` (with a defect) when absent or malformed."""
    if not header.value:
        return default
    if _MIME_TYPE.match(header.value):
        return header.value
    defects.add("content-type-invalid", header.value[:60])
    return "text/plain"
