"""A stable identity for messages that have no Message-ID.

The same message must hash the same whether it came folded differently, with
CRLF or LF line endings, or through another source (IMAP vs Graph MIME).
So the hash covers decoded values only, never raw header text.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emailrouter.mime.models import Address

_WHITESPACE = re.compile(r"\s+")


def message_fingerprint(
    *,
    sender: Address | None,
    to: list[Address],
    cc: list[Address],
    date: str | None,
    subject: str,
    body_text: str,
) -> str:
    """Hex SHA-256 of the canonical form: From, To, Cc (emails), Date, Subject, body text.

    Whitespace runs collapse to one space, so re-wrapping or re-folding does not
    change the result; recipient order does not matter.
    """
    canonical = {
        "from": sender.email if sender else "",
        "to": sorted(address.email for address in to),
        "cc": sorted(address.email for address in cc),
        "date": date or "",
        "subject": _WHITESPACE.sub(" ", subject).strip(),
        "body": _WHITESPACE.sub(" ", body_text).strip(),
    }
    encoded = json.dumps(canonical, sort_keys=True, ensure_ascii=False).encode("utf-8", errors="replace")
    return hashlib.sha256(encoded).hexdigest()
