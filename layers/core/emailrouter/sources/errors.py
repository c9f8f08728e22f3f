"""Errors raised by mailbox sources; the poller maps each class to a mailbox health state."""

from __future__ import annotations


class SourceError(Exception):
    """Base class for every failure talking to a tenant's mail server."""


class AuthenticationError(SourceError):
    """The server refused the credentials. Retrying will not help until an admin fixes them."""


class TransientSourceError(SourceError):
    """Connection refused, dropped, timed out or the server is busy: retry on the next poll."""


class SourceConfigurationError(SourceError):
    """The mailbox configuration cannot work (unknown protocol, forbidden host, bad folder)."""


class MessageTooLargeError(SourceError):
    """One message exceeds the size the poller will hold in memory.

    Raised before the body is read (or while reading it, when the server under-reported its size)
    so the pipeline can record an outcome for this message instead of retrying it forever.
    """

    def __init__(self, source_ref: str, size: int, limit: int) -> None:
        super().__init__(f"message {source_ref} is {size} bytes, over the {limit}-byte limit")
        self.source_ref = source_ref
        self.size = size
        self.limit = limit


class MessageNotFoundError(SourceError):
    """The message is no longer on the server (deleted by another client since it was listed)."""

    def __init__(self, source_ref: str) -> None:
        super().__init__(f"message {source_ref} is no longer on the server")
        self.source_ref = source_ref
