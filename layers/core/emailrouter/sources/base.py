"""What every mailbox source offers the poller, and the cursor it keeps between polls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from types import TracebackType


class MailboxCursor(BaseModel):
    """Where the last poll of one mailbox stopped. Stored in DynamoDB between polls.

    POP3 keeps the UIDLs already handed off (pruned to those still on the server); IMAP keeps
    UIDVALIDITY and the highest UID handed off. Other sources add their own fields.
    """

    seen_uidls: list[str] = Field(default_factory=list)
    uidvalidity: int | None = None
    last_uid: int | None = None


@dataclass(frozen=True, slots=True)
class FetchedMessage:
    """One raw message read from a source. `source_ref` is what `delete` takes back."""

    source_ref: str
    raw: bytes


class MailSource(Protocol):
    """A connected session on one mailbox. Use as a context manager: enter connects and logs in."""

    def __enter__(self) -> MailSource: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def list_new(self, cursor: MailboxCursor) -> list[str]:
        """Source refs of the messages not yet handed off according to `cursor`, oldest first."""
        ...

    def fetch(self, source_ref: str) -> bytes:
        """The raw RFC 5322 bytes of one message, unaltered."""
        ...

    def advance(self, cursor: MailboxCursor, handed_off: Iterable[str]) -> MailboxCursor:
        """A new cursor that also covers `handed_off` (and forgets refs gone from the server)."""
        ...

    def present(self, source_refs: Iterable[str]) -> list[str]:
        """Which of `source_refs` are still on the server."""
        ...

    def delete(self, source_refs: Iterable[str]) -> list[str]:
        """Delete the messages at the source; returns the refs actually deleted."""
        ...


def iter_new_messages(source: MailSource, cursor: MailboxCursor, limit: int) -> Iterator[FetchedMessage]:
    """Fetch up to `limit` new messages, oldest first."""
    for ref in source.list_new(cursor)[:limit]:
        yield FetchedMessage(source_ref=ref, raw=source.fetch(ref))
