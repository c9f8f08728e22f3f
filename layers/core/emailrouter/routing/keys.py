"""The identity of a message within a tenant: its Message-ID, else a hash of its content.

A Message-ID alone is not trusted: the ledger keeps each message's content digest, and a message
whose Message-ID is known with another digest is a different message (`reused_id_key`)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emailrouter.mime.models import ParsedMessage


def message_key(message: ParsedMessage) -> str:
    """Same message, same key, whichever mailbox or poll it came from."""
    basis = "mid:" + message.message_id.strip() if message.message_id else "fp:" + message.fingerprint
    return hashlib.sha256(basis.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def reused_id_key(message: ParsedMessage) -> str:
    """The key of a message whose Message-ID an earlier message with other content already has:
    the Message-ID and the content together (`ParsedMessage.content_digest`)."""
    basis = f"mid:{(message.message_id or '').strip()}#content:{message.content_digest}"
    return hashlib.sha256(basis.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def raw_key(raw: bytes) -> str:
    """The key of a message that could not be parsed at all."""
    return "raw-" + hashlib.sha256(raw).hexdigest()[:36]
