"""POP3 mailbox source: incremental by UIDL, deletion committed by QUIT.

POP3 has no server-side "new" marker, so the cursor remembers which UIDLs were already handed
off and the poller asks only for the rest. Message numbers are valid only within one session, so
refs are UIDLs and each session maps UIDL → number. Deletions (DELE) take effect only when the
server accepts QUIT (RFC 1939 UPDATE state); until then nothing is gone.

A UIDL is unique only within one maildrop: after a mailbox is re-created or moved to another
server, the same UIDL can name a different message. So before DELE the message's headers are
read (TOP n 0) and checked against what was fetched.
"""

from __future__ import annotations

import poplib
from contextlib import contextmanager
from typing import TYPE_CHECKING, BinaryIO

from emailrouter.sources.base import DeletionReport, MailboxCursor, identity_mismatch
from emailrouter.sources.errors import (
    AuthenticationError,
    MessageNotFoundError,
    MessageTooLargeError,
    SourceConfigurationError,
    SourceError,
    TransientSourceError,
)
from emailrouter.sources.network import (
    Security,
    check_credentials,
    check_security,
    connect_vetted,
    scrub,
    tls_context,
    transport_errors,
    vet_host,
)

if TYPE_CHECKING:
    import socket
    from collections.abc import Iterable, Iterator
    from types import TracebackType

    from emailrouter.egress import IPAddress, Resolver
    from emailrouter.sources.base import PendingDeletion

DEFAULT_MAX_MESSAGE_BYTES = 50 * 1024 * 1024
_READ_CHUNK = 64 * 1024
# RFC 3206 response codes saying "try again later" rather than "wrong credentials".
_TEMPORARY_CODES = ("[IN-USE]", "[SYS/TEMP]")
# Headers read to check a message's identity before DELE; a longer header block is not ours.
_MAX_HEADER_BYTES = 1024 * 1024


class Pop3Source:
    """One POP3 session on one mailbox; implements `MailSource`.

    Connects on `__enter__` (or lazily on first use) and reconnects after `delete`, whose QUIT
    ends the session.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        security: Security = "ssl",
        timeout: float = 30.0,
        allow_private: bool = False,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        resolver: Resolver | None = None,
    ) -> None:
        self.host = host
        self.resolver = resolver
        self.port = port
        self.username = username
        self._password = password
        self.security = check_security(security)
        self.timeout = timeout
        self.allow_private = allow_private
        self.max_message_bytes = max_message_bytes
        self._pop: poplib.POP3 | None = None
        self._numbers: dict[str, int] | None = None
        self._sizes: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"Pop3Source({self.username}@{self.host}:{self.port}, security={self.security})"

    def __enter__(self) -> Pop3Source:
        self._session()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """End the session. No DELE is ever pending here (`delete` commits its own), so QUIT is safe."""
        pop, self._pop = self._pop, None
        self._numbers = None
        if pop is None:
            return
        try:
            pop.quit()
        except (poplib.error_proto, OSError, EOFError):
            pass
        finally:
            pop.close()

    def list_new(self, cursor: MailboxCursor) -> list[str]:
        """UIDLs on the server that the cursor has not seen, in server (arrival) order."""
        seen = set(cursor.seen_uidls)
        return [uidl for uidl in self._listing() if uidl not in seen]

    def fetch(self, source_ref: str) -> bytes:
        """The message exactly as the server sends it (CRLF lines), dot-unstuffed.

        Raises MessageTooLargeError when LIST reports more than `max_message_bytes` (nothing is
        downloaded) or when the body turns out larger while reading (the rest is discarded).
        """
        number = self._listing().get(source_ref)
        if number is None:
            raise MessageNotFoundError(source_ref)
        size = self._sizes.get(number)
        if size is not None and size > self.max_message_bytes:
            raise MessageTooLargeError(source_ref, size, self.max_message_bytes)
        return self._multiline(f"RETR {number}", source_ref, self.max_message_bytes)

    def _multiline(self, command: str, source_ref: str, limit: int) -> bytes:
        """Send `command` and read its dot-terminated reply (at most `limit` bytes kept)."""
        pop = self._session()
        verb = command.split()[0]
        with self._errors(f"{verb} {source_ref}"):
            pop.sock.sendall(f"{command}\r\n".encode("ascii"))
            status = pop.file.readline(_READ_CHUNK)
            if not status.startswith(b"+OK"):
                if not status:
                    raise EOFError(f"connection closed before the {verb} reply")
                raise SourceError(f"{verb} {source_ref} refused: {scrub(status, self._password)}")
            return _read_multiline(pop.file, source_ref, limit)

    def advance(self, cursor: MailboxCursor, handed_off: Iterable[str]) -> MailboxCursor:
        """Remember `handed_off`; forget seen UIDLs that are no longer on the server.

        Pruning keeps the cursor (a DynamoDB item) from growing with every message ever seen.
        """
        on_server = self._listing()
        kept = [uidl for uidl in cursor.seen_uidls if uidl in on_server]
        seen = list(dict.fromkeys([*kept, *handed_off]))
        return cursor.model_copy(update={"seen_uidls": seen})

    def present(self, source_refs: Iterable[str]) -> list[str]:
        on_server = self._listing()
        return [ref for ref in source_refs if ref in on_server]

    def delete(self, pending: Iterable[PendingDeletion]) -> DeletionReport:
        """DELE each message still on the server whose headers (TOP n 0) match what was fetched,
        then QUIT to commit. Refs whose message differs are dropped, never deleted.

        If QUIT is not acknowledged, the server may not have entered its UPDATE state: raises
        TransientSourceError (nothing can be claimed deleted; `present` tells later). The session
        ends either way; the next call reconnects.
        """
        on_server = self._listing()
        report = DeletionReport()
        marked: list[str] = []
        for item in {p.source_ref: p for p in pending}.values():
            ref = item.source_ref
            number = on_server.get(ref)
            if number is None:
                report.gone.append(ref)
                continue
            problem = identity_mismatch(item, self._headers(number, ref))
            if problem is not None:
                report.dropped[ref] = problem
                continue
            pop = self._session()
            with self._errors(f"DELE {ref}"):
                try:
                    pop.dele(number)
                except poplib.error_proto as exc:
                    if _is_eof(exc):
                        raise
                    continue  # already marked or refused: not deleted, stays pending
            marked.append(ref)
        if not marked:
            return report
        pop = self._session()
        self._pop, self._numbers = None, None
        try:
            with self._errors("QUIT"):
                pop.quit()
        except SourceError as exc:
            raise TransientSourceError(
                f"QUIT after deleting {len(marked)} message(s) failed; the server may have kept them: {exc}"
            ) from exc
        finally:
            pop.close()
        report.deleted = marked
        return report

    def delete_caveats(self) -> list[str]:
        """Nothing: DELE removes exactly the messages named."""
        return []

    def _headers(self, number: int, ref: str) -> bytes:
        """The message's header block: TOP n 0, or the start of RETR where TOP is refused."""
        try:
            return self._multiline(f"TOP {number} 0", ref, _MAX_HEADER_BYTES)
        except MessageTooLargeError:
            return b""  # matches no recorded identity: the deletion is dropped
        except TransientSourceError:
            raise
        except SourceError:
            try:
                return self._multiline(f"RETR {number}", ref, self.max_message_bytes)
            except MessageTooLargeError:
                return b""

    def _session(self) -> poplib.POP3:
        if self._pop is None:
            self._pop = self._connect()
        return self._pop

    def _connect(self) -> poplib.POP3:
        check_credentials(self.username, self._password)
        addresses = vet_host(self.host, allow_private=self.allow_private, resolver=self.resolver)
        where = f"POP3 {self.host}:{self.port}"
        with self._errors(f"connecting to {where}", greeting=True):
            if self.security == "ssl":
                pop: poplib.POP3 = _PinnedPOP3SSL(self.host, self.port, self.timeout, addresses)
            else:
                pop = _PinnedPOP3(self.host, self.port, self.timeout, addresses)
        try:
            if self.security == "starttls":
                with self._errors(f"STLS on {where}", configuration=True):
                    pop.stls(tls_context())
            self._login(pop)
        except BaseException:
            pop.close()
            raise
        return pop

    def _login(self, pop: poplib.POP3) -> None:
        try:
            with transport_errors(f"logging in to POP3 {self.host}:{self.port}"):
                pop.user(self.username)
                pop.pass_(self._password)
        except poplib.error_proto as exc:
            reason = scrub(_reply(exc), self._password)
            if _is_eof(exc) or any(code in reason for code in _TEMPORARY_CODES):
                raise TransientSourceError(f"POP3 login for {self.username!r} deferred: {reason}") from exc
            raise AuthenticationError(f"POP3 login for {self.username!r} refused: {reason}") from exc

    def _listing(self) -> dict[str, int]:
        """UIDL → message number for this session, read once (the maildrop is fixed per session)."""
        if self._numbers is None:
            pop = self._session()
            with self._errors("UIDL", configuration=True):
                _, uidl_lines, _ = pop.uidl()
            with self._errors("LIST"):
                _, list_lines, _ = pop.list()
            numbers: dict[str, int] = {}
            for line in uidl_lines:
                number_text, uidl = line.decode("ascii", "replace").split(maxsplit=1)
                numbers.setdefault(
                    uidl.strip(), int(number_text)
                )  # a broken server's duplicate: keep the first
            self._sizes = {}
            for line in list_lines:
                fields = line.split()
                self._sizes[int(fields[0])] = int(fields[1])
            self._numbers = numbers
        return self._numbers

    @contextmanager
    def _errors(self, what: str, *, greeting: bool = False, configuration: bool = False) -> Iterator[None]:
        """Map poplib failures; after a transport failure the session is dead, so drop it."""
        try:
            with _pop3_errors(what, self._password, greeting=greeting, configuration=configuration):
                yield
        except TransientSourceError:
            self._discard()
            raise

    def _discard(self) -> None:
        pop, self._pop, self._numbers = self._pop, None, None
        if pop is not None:
            pop.close()


class _PinnedPOP3(poplib.POP3):
    """POP3 connected to vetted addresses; `host` stays the name (SNI for STLS)."""

    def __init__(self, host: str, port: int, timeout: float, addresses: list[IPAddress]) -> None:
        self._addresses = addresses
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float) -> socket.socket:
        return connect_vetted(self._addresses, self.port, timeout)


class _PinnedPOP3SSL(poplib.POP3_SSL):
    """POP3 over TLS to vetted addresses, the certificate checked against the name."""

    def __init__(self, host: str, port: int, timeout: float, addresses: list[IPAddress]) -> None:
        self._addresses = addresses
        self._tls = tls_context()
        super().__init__(host, port, timeout=timeout, context=self._tls)

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = connect_vetted(self._addresses, self.port, timeout)
        return self._tls.wrap_socket(sock, server_hostname=self.host)


@contextmanager
def _pop3_errors(what: str, password: str, *, greeting: bool, configuration: bool) -> Iterator[None]:
    """Maps poplib failures inside a block: EOF/transport → transient, -ERR → SourceError.

    `configuration=True` turns -ERR into SourceConfigurationError (a missing capability such as
    STLS or UIDL); `greeting=True` treats -ERR as a busy server (transient).
    """
    try:
        with transport_errors(what):
            yield
    except poplib.error_proto as exc:
        reason = scrub(_reply(exc), password)
        if _is_eof(exc) or greeting:
            raise TransientSourceError(f"{what}: {reason}") from exc
        if configuration:
            raise SourceConfigurationError(f"{what} not supported by the server: {reason}") from exc
        raise SourceError(f"{what}: {reason}") from exc


def _read_multiline(stream: BinaryIO, source_ref: str, limit: int) -> bytes:
    """Read a dot-terminated multi-line reply, unstuffing, keeping line endings byte-for-byte.

    Reads in bounded chunks (long lines are allowed; poplib's own reader rejects lines over
    2048 bytes) and stops storing once `limit` is passed, draining the rest so the session
    stays usable.
    """
    chunks: list[bytes] = []
    total = 0
    at_line_start = True
    while True:
        piece = stream.readline(_READ_CHUNK)
        if not piece:
            raise EOFError(f"connection closed while reading message {source_ref}")
        if at_line_start:
            if piece in (b".\r\n", b".\n"):
                break
            if piece.startswith(b"."):
                piece = piece[1:]
        at_line_start = piece.endswith(b"\n")
        total += len(piece)
        if total <= limit:
            chunks.append(piece)
    if total > limit:
        raise MessageTooLargeError(source_ref, total, limit)
    return b"".join(chunks)


def _reply(exc: poplib.error_proto) -> str | bytes:
    reply = exc.args[0] if exc.args else ""
    return reply if isinstance(reply, str | bytes) else str(reply)


def _is_eof(exc: poplib.error_proto) -> bool:
    # poplib reports a closed connection as error_proto("-ERR EOF"), not as EOFError.
    reply = _reply(exc)
    return (reply.decode("ascii", "replace") if isinstance(reply, bytes) else reply) == "-ERR EOF"
