"""Address headers (From, To, Cc, Bcc, Reply-To) → `Address` lists.

`email.utils.getaddresses` does the RFC 5322 work. Its strict mode rejects a
whole header when one entry is garbled; we then parse entry by entry so one bad
address costs only itself. Display names are decoded after splitting, so an
encoded comma (`=?utf-8?q?M=C3=BCller=2C_Hans?=`) cannot split an address.
"""

from __future__ import annotations

import re
from email.utils import getaddresses
from typing import TYPE_CHECKING

from emailrouter.mime.headers import clean_line, decode_8bit, decode_encoded_words
from emailrouter.mime.models import Address

if TYPE_CHECKING:
    from emailrouter.mime.defects import DefectLog

MAX_ADDRESSES_PER_HEADER = 1000
# RFC 5321 4.5.3.1: a path is at most 256 octets with its angle brackets, so a mailbox at most
# 254; local part at most 64. Longer is no address a mail system delivers to.
MAX_ADDRESS_OCTETS = 254
MAX_LOCAL_PART_OCTETS = 64


def within_smtp_limits(address: str) -> bool:
    """Whether `address` (local@domain) fits RFC 5321's size limits."""
    local, _, domain = address.rpartition("@")
    size = len(address.encode("utf-8", "surrogateescape"))
    return (
        bool(local)
        and bool(domain)
        and size <= MAX_ADDRESS_OCTETS
        and len(local.encode("utf-8", "surrogateescape")) <= MAX_LOCAL_PART_OCTETS
    )


_EMPTY_GROUP = re.compile(r'^\s*[^:,<>"@]*:\s*;?\s*$')
_VALID_EMAIL = re.compile(r"^[^@\s<>,;:\"()\[\]\\]+@[^@\s<>,;:\"()\\]+$")
# An addr-spec-looking token among words: `a@x.example` in `Big Bug a@x.example`.
_ADDR_TOKEN = re.compile(r"[^@\s<>,;:\"()\[\]\\]+@[^@\s<>,;:\"()\[\]\\]+")


def _split_top_level(text: str) -> list[str]:
    """Split an address list on commas outside quotes, comments and angle brackets."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    depth_comment = depth_angle = 0
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif quoted:
            quoted = char != '"'
        elif char == '"':
            quoted = True
        elif char == "(":
            depth_comment += 1
        elif char == ")" and depth_comment:
            depth_comment -= 1
        elif char == "<" and not depth_comment:
            depth_angle += 1
        elif char == ">" and depth_angle:
            depth_angle -= 1
        elif char in ",;" and not (depth_comment or depth_angle):
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return [piece for piece in pieces if piece.strip()]


def _valid_pairs(text: str) -> list[tuple[str, str]] | None:
    """getaddresses' answer when every entry is a real mailbox, else None."""
    pairs = getaddresses([text])
    if all(_VALID_EMAIL.match(email.strip()) for _name, email in pairs):
        return pairs
    return None


def _to_address(name: str, email: str, header: str, defects: DefectLog) -> Address:
    display = clean_line(decode_encoded_words(name, header, defects))
    if len(display) >= 2 and display[0] == display[-1] and display[0] in "\"'":
        display = display[1:-1].strip()
    if display.lower() == email:  # `a@x.com <a@x.com>` says nothing more than the address
        display = ""
    return Address(email=email, name=display)


def parse_address_list(raw_values: list[str], header: str, defects: DefectLog) -> list[Address]:
    """All mailboxes of every occurrence of `header`; invalid entries skipped with a defect.

    Emails are lower-cased and stripped; names are decoded (RFC 2047, 8-bit) and
    cleaned of control characters. Group syntax (`Team: a@x, b@y;`) is flattened,
    empty groups (`undisclosed-recipients:;`) yield nothing.
    """
    addresses: list[Address] = []
    seen: set[str] = set()
    for raw in raw_values:
        text = clean_line(decode_8bit(raw, header, defects))
        if not text or _EMPTY_GROUP.match(text):
            continue
        pairs = _valid_pairs(text)
        if pairs is None:
            pairs = []
            for piece in _split_top_level(text):
                if _EMPTY_GROUP.match(piece):
                    continue
                found = _valid_pairs(piece)
                if found is None:
                    defects.add("address-invalid", header)
                else:
                    pairs.extend(found)
        for name, email in pairs:
            normalised = email.strip().lower()
            if normalised in seen:
                continue
            if len(addresses) >= MAX_ADDRESSES_PER_HEADER:
                defects.add("addresses-truncated", header)
                return addresses
            seen.add(normalised)
            addresses.append(_to_address(name, normalised, header, defects))
    return addresses


def repair_mailbox(raw_values: list[str], header: str, defects: DefectLog) -> Address | None:
    """The most plausible mailbox of a header that parses to none: its first addr-spec token
    (`a@x.example b@x.example` → a@x.example; `Big Bug bb@bug.example` → bb@bug.example, with
    the words before it as the name). Records `from-repaired:<header>` when one is found."""
    for raw in raw_values:
        text = clean_line(decode_8bit(raw, header, defects))
        for token in _ADDR_TOKEN.finditer(text):
            email = token.group().strip(".").lower()
            if not _VALID_EMAIL.match(email) or "." not in email.rsplit("@", 1)[1]:
                continue
            name = text[: token.start()].strip(" <\"'")
            if _ADDR_TOKEN.search(name):  # the name is another address: no name
                name = ""
            defects.add("from-repaired", header)
            return _to_address(name, email, header, defects)
    return None
