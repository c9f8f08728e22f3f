"""Outlook's Thread-Index header: the conversation index (PidTagConversationIndex) in base64.

The decoded value is a 22-byte header block (1 reserved byte, the five most
significant bytes of a FILETIME, a 16-byte conversation GUID) followed by one
5-byte child block per reply or forward. A reply's index therefore starts with
its parent's index, which is what threading by Thread-Index relies on:
`ancestors` lists the indexes a message's parents would carry.

Defects: `thread-index-invalid:base64` (not base64), `thread-index-invalid:length:<n>`
(decoded to n bytes, not 22 + 5k). The field is None in both cases.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING

from emailrouter.mime.headers import decode_8bit

if TYPE_CHECKING:
    from emailrouter.mime.defects import DefectLog

HEADER_BLOCK = 22
CHILD_BLOCK = 5
# Far more replies than any conversation has; bounds the work a hostile header causes.
MAX_CHILD_BLOCKS = 1000

_WHITESPACE = re.compile(r"\s+")


def is_valid_index(index: bytes) -> bool:
    """Whether `index` has the shape of a conversation index: 22 bytes plus whole child blocks."""
    extra = len(index) - HEADER_BLOCK
    return extra >= 0 and extra % CHILD_BLOCK == 0 and extra // CHILD_BLOCK <= MAX_CHILD_BLOCKS


def decode_thread_index(raw: str | None, defects: DefectLog) -> bytes | None:
    """The decoded Thread-Index value; None (with a defect) when it is not a valid index.

    Folding whitespace is ignored and missing `=` padding is tolerated; anything
    outside the base64 alphabet is not. Absent header → None without a defect.
    """
    if raw is None:
        return None
    text = _WHITESPACE.sub("", decode_8bit(raw, "Thread-Index", defects))
    if not text:
        defects.add("thread-index-invalid", "base64")
        return None
    if len(text) % 4:
        text += "=" * (-len(text) % 4)
    try:
        index = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        defects.add("thread-index-invalid", "base64")
        return None
    if not is_valid_index(index):
        defects.add("thread-index-invalid", "length", len(index))
        return None
    return index


def ancestors(index: bytes) -> list[bytes]:
    """`index` itself, then each prefix with one more child block removed, down to the root.

    Nearest first: for a root R with children c1 c2 this is [R c1 c2, R c1, R].
    Raises ValueError when `index` is not a valid conversation index.
    """
    if not is_valid_index(index):
        raise ValueError(f"not a conversation index: {len(index)} bytes")
    return [index[:end] for end in range(len(index), HEADER_BLOCK - 1, -CHILD_BLOCK)]
