"""What every mailbox source offers the poller, and the cursor it keeps between polls."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from types import TracebackType


class MailboxCursor(BaseModel):
    """Where the last poll of one mailbox stopped. Stored in DynamoDB between polls.

    POP3 keeps the UIDLs already handed off (pruned to those still on the server); IMAP keeps
    UIDVALIDITY and the highest UID handed off. Other sources add their own fields.
    `fetch_failures` counts the polls in a row that could not fetch a message (ref → attempts).
    """

    seen_uidls: list[str] = Field(default_factory=list)
    uidvalidity: int | None = None
    last_uid: int | None = None
    fetch_failures: dict[str, int] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FetchedMessage:
    """One raw message read from a source. `source_ref` is what `delete` takes back."""

    source_ref: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class PendingDeletion:
    """A message to delete at the source, with what it looked like when it was fetched.

    `identity` is `header_identity()` of the fetched bytes; `message_id` stands in for it on
    deletions recorded before identities were kept. A source deletes only a message whose
    headers still match; with neither value it deletes nothing.
    """

    source_ref: str
    identity: str | None = None
    message_id: str | None = None


@dataclass
class DeletionReport:
    """What `MailSource.delete` did with each ref it was given."""

    deleted: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # not on the server any more
    dropped: dict[str, str] = field(default_factory=dict)  # ref → why it must never be deleted
    warnings: list[str] = field(default_factory=list)

    @property
    def done(self) -> list[str]:
        """Refs that need no deletion any more: deleted now, or gone already."""
        return self.gone + self.deleted


_HEADER_END = re.compile(rb"\r?\n\r?\n")
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def header_block(raw: bytes) -> bytes:
    """The header lines of `raw` (up to the first empty line), line endings normalised to LF."""
    if raw.startswith((b"\r\n", b"\n")):
        return b""
    end = _HEADER_END.search(raw)
    head = raw if end is None else raw[: end.start()]
    return head.replace(b"\r\n", b"\n").rstrip(b"\n")


def header_identity(raw: bytes) -> str:
    """What identifies a message on its server: a hash of its header block.

    The same whether computed from the whole message or from the headers alone (IMAP
    BODY[HEADER], POP3 TOP n 0), and whatever the line endings:

    >>> header_identity(b"Subject: a\\r\\n\\r\\nbody") == header_identity(b"Subject: a\\n\\n")
    True
    """
    return "sha256:" + hashlib.sha256(header_block(raw)).hexdigest()


def identity_mismatch(pending: PendingDeletion, headers: bytes) -> str | None:
    """Why the message whose `headers` the server now shows is not the one fetched, or None."""
    if pending.identity is not None:
        if header_identity(headers) == pending.identity:
            return None
        return "the message at this ref is not the one fetched (its headers differ)"
    if pending.message_id:
        found = _MESSAGE_ID.search(header_block(headers))
        if found is not None and pending.message_id.encode("utf-8", "replace") in found.group(1):
            return None
        return "the message at this ref is not the one fetched (its Message-ID differs)"
    return "no identity was recorded when it was fetched, so it cannot be checked"


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

    def delete(self, pending: Iterable[PendingDeletion]) -> DeletionReport:
        """Delete the messages at the source that are still the ones fetched (`identity_mismatch`)."""
        ...

    def delete_caveats(self) -> list[str]:
        """What deleting on this server cannot do as asked (shown in the mailbox health)."""
        ...


def iter_new_messages(source: MailSource, cursor: MailboxCursor, limit: int) -> Iterator[FetchedMessage]:
    """Fetch up to `limit` new messages, oldest first."""
    for ref in source.list_new(cursor)[:limit]:
        yield FetchedMessage(source_ref=ref, raw=source.fetch(ref))
