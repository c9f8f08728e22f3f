"""Mailbox sources: one session on one mailbox, behind the `MailSource` protocol."""

from __future__ import annotations

from emailrouter.sources.base import FetchedMessage, MailboxCursor, MailSource
from emailrouter.sources.errors import (
    AuthenticationError,
    MessageNotFoundError,
    MessageTooLargeError,
    SourceConfigurationError,
    SourceError,
    TransientSourceError,
)
from emailrouter.sources.imap import ImapSource
from emailrouter.sources.pop3 import Pop3Source

__all__ = [
    "AuthenticationError",
    "FetchedMessage",
    "ImapSource",
    "MailSource",
    "MailboxCursor",
    "MessageNotFoundError",
    "MessageTooLargeError",
    "Pop3Source",
    "SourceConfigurationError",
    "SourceError",
    "TransientSourceError",
]
