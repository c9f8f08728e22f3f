"""The identity of a message's content, and of a message that has no Message-ID.

`content_digest` covers every MIME leaf (type, name, decoded content, in source order); the body
walker (`mime.bodies`) computes it. `message_fingerprint` adds the headers that say who wrote
what to whom and when — the sender (From, or what stood in for it), To, Cc, Reply-To, Date, Subject, In-Reply-To, References —
decoded. Neither covers what transports add or change (Received, Return-Path, Delivered-To,
X-* headers, folding, line ends, transfer encodings), so a re-delivery of the same message
through another MTA, mailbox or source (IMAP vs Graph MIME) hashes the same, while two messages
that differ in any part (an attachment, an alternative rendering) do not.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from emailrouter.mime.models import Address

_WHITESPACE = re.compile(r"\s+")


def body_digest(body: bytes) -> str:
    """The content digest of a body the walker did not read (headers-only parses): its bytes,
    line ends and trailing white space normalised."""
    return hashlib.sha256(body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").rstrip()).hexdigest()


def message_fingerprint(
    *,
    sender: Address | None,
    to: list[Address],
    cc: list[Address],
    date: str | None,
    subject: str,
    content_digest: str,
    reply_to: Sequence[Address] = (),
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
) -> str:
    """Hex SHA-256 of the canonical form: the identifying headers and the content digest.

    Whitespace runs in the subject collapse to one space, so re-folding does not change the
    result; recipient order does not matter.
    """
    canonical = {
        "from": sender.email if sender else "",
        "to": sorted(address.email for address in to),
        "cc": sorted(address.email for address in cc),
        "reply_to": sorted(address.email for address in reply_to),
        "date": date or "",
        "subject": _WHITESPACE.sub(" ", subject).strip(),
        "in_reply_to": in_reply_to or "",
        "references": list(references),
        "content": content_digest,
    }
    encoded = json.dumps(canonical, sort_keys=True, ensure_ascii=False).encode("utf-8", errors="replace")
    return hashlib.sha256(encoded).hexdigest()
