"""IMAP mailbox source: incremental by UID within one UIDVALIDITY, reading without marking \\Seen.

UIDs only ever grow within a folder while its UIDVALIDITY stays the same, so the cursor keeps
(uidvalidity, last_uid) and asks for UIDs above last_uid. When the server reports a different
UIDVALIDITY (folder recreated, server migrated), every old UID is meaningless: the source lists
the whole folder again and `advance` starts a new cursor; the ledger's Message-ID dedupe keeps
that from creating CRM duplicates. Bodies are read with BODY.PEEK so users still see mail as
unread in their own client until it is processed.

A ref is `<uidvalidity>:<uid>`, so a UID is never taken for the same number under another
UIDVALIDITY: deleting a ref from an older UIDVALIDITY is refused. Refs recorded before this
(a bare UID) are still accepted; their deletion rests on the identity check alone.
"""

from __future__ import annotations

import base64
import imaplib
import re
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

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
# UID sets per command: keeps command lines far below server line-length limits.
_UID_BATCH = 500
# RFC 5530 response codes for "try again later"; anything else on LOGIN is a credentials problem.
_TEMPORARY_CODES = ("[UNAVAILABLE]", "[INUSE]", "[SERVERBUG]", "[LIMIT]")
_UID_ITEM = re.compile(rb"UID (\d+)")
_SIZE_ITEM = re.compile(rb"RFC822\.SIZE (\d+)")


class ImapSource:
    """One IMAP session on one folder of one mailbox; implements `MailSource`."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        security: Security = "ssl",
        timeout: float = 30.0,
        allow_private: bool = False,
        folder: str = "INBOX",
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
        self.folder = folder
        self.max_message_bytes = max_message_bytes
        self._imap: imaplib.IMAP4 | None = None
        self._uidvalidity = 0
        self._capabilities: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return f"ImapSource({self.username}@{self.host}:{self.port}/{self.folder}, security={self.security})"

    def __enter__(self) -> ImapSource:
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
        """LOGOUT without CLOSE: CLOSE would expunge \\Deleted messages we did not mean to remove."""
        imap, self._imap = self._imap, None
        if imap is None:
            return
        try:
            imap.logout()
        except (imaplib.IMAP4.error, OSError, EOFError):
            imap.shutdown()

    @property
    def uidvalidity(self) -> int:
        """The folder's current UIDVALIDITY (connects if needed)."""
        self._session()
        return self._uidvalidity

    def list_new(self, cursor: MailboxCursor) -> list[str]:
        """UIDs above the cursor's last_uid, ascending; every UID when UIDVALIDITY changed."""
        self._session()
        floor = self._floor(cursor)
        criteria = "ALL" if floor == 0 else f"UID {floor + 1}:*"
        # "n:*" always matches the highest UID even when it is below n, hence the filter.
        return [self._ref(uid) for uid in sorted(self._search(criteria)) if uid > floor]

    def fetch(self, source_ref: str) -> bytes:
        """The message bytes via BODY.PEEK[] (leaves \\Seen alone), capped at max_message_bytes.

        The size is checked first (RFC822.SIZE) so an oversize message is never downloaded; the
        partial fetch `<0.limit+1>` bounds memory even if the server under-reports the size.
        """
        uid = self._current_uid(source_ref)
        if uid is None:
            raise MessageNotFoundError(source_ref)
        size = self._size(uid, source_ref)
        if size > self.max_message_bytes:
            raise MessageTooLargeError(source_ref, size, self.max_message_bytes)
        data = self._uid_command("FETCH", str(uid), f"(BODY.PEEK[]<0.{self.max_message_bytes + 1}>)")
        body = _body_from_fetch(data, uid)
        if body is None:
            raise MessageNotFoundError(source_ref)
        if len(body) > self.max_message_bytes:
            raise MessageTooLargeError(source_ref, max(size, len(body)), self.max_message_bytes)
        return body

    def advance(self, cursor: MailboxCursor, handed_off: Iterable[str]) -> MailboxCursor:
        """A cursor at the highest handed-off UID under the current UIDVALIDITY.

        `handed_off` must be a prefix of what `list_new` returned (the poller hands off oldest
        first), since everything at or below last_uid counts as done.
        """
        floor = self._floor(cursor)
        uids = [uid for uid in map(self._current_uid, handed_off) if uid is not None]
        last = max([floor, *uids])
        return cursor.model_copy(
            update={"uidvalidity": self._uidvalidity, "last_uid": last if last > 0 else None}
        )

    def present(self, source_refs: Iterable[str]) -> list[str]:
        """Which refs still name a message here (same UIDVALIDITY, UID not expunged)."""
        refs = list(dict.fromkeys(source_refs))
        uids = {ref: self._current_uid(ref) for ref in refs}
        found = self._existing([uid for uid in uids.values() if uid is not None])
        return [ref for ref in refs if uids[ref] in found]

    def delete(self, pending: Iterable[PendingDeletion]) -> DeletionReport:
        """Flag \\Deleted and expunge just those UIDs (UID EXPUNGE, RFC 4315), each only after
        its headers are checked against what was fetched.

        A ref from another UIDVALIDITY, or whose message's headers differ, is dropped: its UID
        may now be someone else's mail. Without UIDPLUS there is no EXPUNGE of just our UIDs
        (a plain EXPUNGE would also remove what other clients flagged \\Deleted): the messages
        stay flagged, count as deleted, and the report says so in `warnings`.
        """
        self._session()
        report = DeletionReport()
        wanted: dict[int, PendingDeletion] = {}
        for item in {p.source_ref: p for p in pending}.values():
            validity, uid = _parse_ref(item.source_ref)
            if validity is not None and validity != self._uidvalidity:
                report.dropped[item.source_ref] = (
                    f"UIDVALIDITY is now {self._uidvalidity}, not {validity}: UID {uid} may be another message"
                )
                continue
            wanted[uid] = item
        headers = self._headers(sorted(self._existing(list(wanted))))
        targets: list[int] = []
        for uid, item in wanted.items():
            if uid not in headers:
                report.gone.append(item.source_ref)
                continue
            problem = identity_mismatch(item, headers[uid])
            if problem is not None:
                report.dropped[item.source_ref] = problem
                continue
            targets.append(uid)
        if not targets:
            return report
        targets.sort()
        for batch in _batches(targets):
            self._uid_command("STORE", batch, "+FLAGS.SILENT", "(\\Deleted)")
        if "UIDPLUS" in self._capabilities:
            for batch in _batches(targets):
                self._uid_command("EXPUNGE", batch)
            remaining = self._existing(targets)
            report.deleted = [wanted[uid].source_ref for uid in targets if uid not in remaining]
        else:
            # Flagged is as far as we go: the owner's client (or the server) expunges them later.
            report.deleted = [wanted[uid].source_ref for uid in targets]
            report.warnings += self.delete_caveats()
        return report

    def delete_caveats(self) -> list[str]:
        """What deleting on this server cannot do as asked (connects if needed)."""
        self._session()
        if "UIDPLUS" in self._capabilities:
            return []
        return [
            f"{self.host} lacks UIDPLUS: deleted messages are flagged \\Deleted and left for the "
            "owner's client to expunge (EXPUNGE would also remove what other clients flagged)"
        ]

    def _ref(self, uid: int) -> str:
        return f"{self._uidvalidity}:{uid}"

    def _current_uid(self, ref: str) -> int | None:
        """The UID `ref` names in this folder, or None when it belongs to another UIDVALIDITY."""
        self._session()
        validity, uid = _parse_ref(ref)
        return uid if validity is None or validity == self._uidvalidity else None

    def _headers(self, uids: list[int]) -> dict[int, bytes]:
        """UID → header block (BODY.PEEK[HEADER]) of those still in the folder."""
        found: dict[int, bytes] = {}
        for batch in _batches(uids):
            for item in self._uid_command("FETCH", batch, "(BODY.PEEK[HEADER])"):
                if isinstance(item, tuple) and b"BODY[HEADER]" in item[0]:
                    match = _UID_ITEM.search(item[0])
                    if match is not None:
                        found[int(match.group(1))] = item[1]
        return found

    def _floor(self, cursor: MailboxCursor) -> int:
        """The UID at or below which everything is handed off; 0 when the cursor does not apply."""
        if cursor.uidvalidity != self._uidvalidity or cursor.last_uid is None:
            return 0
        return cursor.last_uid

    def _session(self) -> imaplib.IMAP4:
        if self._imap is None:
            self._imap = self._connect()
        return self._imap

    def _connect(self) -> imaplib.IMAP4:
        check_credentials(self.username, self._password)
        addresses = vet_host(self.host, allow_private=self.allow_private, resolver=self.resolver)
        where = f"IMAP {self.host}:{self.port}"
        with self._errors(f"connecting to {where}", transient=True):
            if self.security == "ssl":
                imap: imaplib.IMAP4 = _PinnedIMAP4SSL(self.host, self.port, self.timeout, addresses)
            else:
                imap = _PinnedIMAP4(self.host, self.port, self.timeout, addresses)
        try:
            if self.security == "starttls":
                if "STARTTLS" not in imap.capabilities:
                    raise SourceConfigurationError(f"{where} does not offer STARTTLS; use ssl or none")
                with self._errors(f"STARTTLS on {where}", configuration=True):
                    imap.starttls(ssl_context=tls_context())
            self._login(imap)
            self._select(imap)
        except BaseException:
            imap.shutdown()
            raise
        return imap

    def _login(self, imap: imaplib.IMAP4) -> None:
        if "LOGINDISABLED" in imap.capabilities:
            raise SourceConfigurationError(
                f"{self.host} refuses LOGIN on this connection; use ssl or starttls"
            )
        try:
            with transport_errors(f"logging in to IMAP {self.host}:{self.port}"):
                imap.login(self.username, self._password)
        except imaplib.IMAP4.abort as exc:
            raise TransientSourceError(
                f"IMAP login: connection lost: {scrub(str(exc), self._password)}"
            ) from exc
        except imaplib.IMAP4.error as exc:
            reason = scrub(_text(exc), self._password)
            if any(code in reason for code in _TEMPORARY_CODES):
                raise TransientSourceError(f"IMAP login for {self.username!r} deferred: {reason}") from exc
            raise AuthenticationError(f"IMAP login for {self.username!r} refused: {reason}") from exc
        except UnicodeEncodeError as exc:
            raise SourceConfigurationError("IMAP LOGIN accepts only ASCII usernames and passwords") from exc
        with self._errors("CAPABILITY"):
            _, data = imap.capability()
        words = b" ".join(item for item in data if isinstance(item, bytes)).decode("ascii", "replace")
        self._capabilities = frozenset(words.upper().split())

    def _select(self, imap: imaplib.IMAP4) -> None:
        with self._errors(f"SELECT {self.folder}"):
            typ, data = imap.select(mailbox_argument(self.folder))
        if typ != "OK":
            reason = scrub(b" ".join(item for item in data if isinstance(item, bytes)), self._password)
            if any(code in reason for code in _TEMPORARY_CODES):
                raise TransientSourceError(f"folder {self.folder!r} temporarily unavailable: {reason}")
            raise SourceConfigurationError(f"folder {self.folder!r} cannot be opened: {reason}")
        values = imap.untagged_responses.get("UIDVALIDITY", [])
        if not values or not isinstance(values[-1], bytes) or not values[-1].isdigit():
            raise SourceError(f"{self.host} did not report UIDVALIDITY for {self.folder!r}")
        self._uidvalidity = int(values[-1])

    def _search(self, criteria: str) -> list[int]:
        data = self._uid_command("SEARCH", criteria)
        words = b" ".join(item for item in data if isinstance(item, bytes)).split()
        return [int(word) for word in words if word.isdigit()]

    def _existing(self, uids: list[int]) -> set[int]:
        found: set[int] = set()
        for batch in _batches(sorted(set(uids))):
            found.update(self._search(f"UID {batch}"))
        return found & set(uids)

    def _size(self, uid: int, source_ref: str) -> int:
        data = self._uid_command("FETCH", str(uid), "(RFC822.SIZE)")
        for item in data:
            header = item[0] if isinstance(item, tuple) else item
            if isinstance(header, bytes) and _matches_uid(header, uid):
                match = _SIZE_ITEM.search(header)
                if match:
                    return int(match.group(1))
        raise MessageNotFoundError(source_ref)

    def _uid_command(self, command: str, *args: str) -> list[bytes | tuple[bytes, bytes] | None]:
        imap = self._session()
        with self._errors(f"UID {command}"):
            typ, data = imap.uid(command, *args)
        if typ != "OK":
            reason = scrub(b" ".join(item for item in data if isinstance(item, bytes)), self._password)
            raise SourceError(f"UID {command} failed: {reason}")
        return list(data)

    @contextmanager
    def _errors(self, what: str, *, transient: bool = False, configuration: bool = False) -> Iterator[None]:
        """abort/transport → TransientSourceError (and drop the dead session), NO/BAD → SourceError."""
        try:
            with transport_errors(what):
                try:
                    yield
                except imaplib.IMAP4.abort as exc:
                    raise TransientSourceError(f"{what}: {scrub(_text(exc), self._password)}") from exc
        except TransientSourceError:
            self._discard()
            raise
        except imaplib.IMAP4.error as exc:
            reason = scrub(_text(exc), self._password)
            if transient:
                raise TransientSourceError(f"{what}: {reason}") from exc
            if configuration:
                raise SourceConfigurationError(f"{what} not supported by the server: {reason}") from exc
            raise SourceError(f"{what}: {reason}") from exc

    def _discard(self) -> None:
        imap, self._imap = self._imap, None
        if imap is not None:
            with suppress(OSError):
                imap.shutdown()


class _PinnedIMAP4(imaplib.IMAP4):
    """IMAP4 connected to vetted addresses; `host` stays the name (SNI for STARTTLS)."""

    def __init__(self, host: str, port: int, timeout: float, addresses: list[IPAddress]) -> None:
        self._addresses = addresses
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return connect_vetted(self._addresses, self.port, timeout)


class _PinnedIMAP4SSL(imaplib.IMAP4_SSL):
    """IMAP4 over TLS to vetted addresses, the certificate checked against the name."""

    def __init__(self, host: str, port: int, timeout: float, addresses: list[IPAddress]) -> None:
        self._addresses = addresses
        super().__init__(host, port, ssl_context=tls_context(), timeout=timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = connect_vetted(self._addresses, self.port, timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def mailbox_argument(folder: str) -> str:
    """The folder name as an IMAP quoted string in modified UTF-7 (RFC 3501 §5.1.3).

    >>> mailbox_argument("Éléments envoyés")
    '"&AMk-l&AOk-ments envoy&AOk-s"'
    """
    encoded: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            utf16 = "".join(pending).encode("utf-16-be")
            encoded.append("&" + base64.b64encode(utf16).decode("ascii").rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in folder:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            encoded.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    text = "".join(encoded)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _body_from_fetch(data: list[bytes | tuple[bytes, bytes] | None], uid: int) -> bytes | None:
    """The BODY[] literal for `uid` in a FETCH reply (which may carry unrelated FETCH lines)."""
    bodies = [item for item in data if isinstance(item, tuple) and b"BODY[" in item[0]]
    for header, body in bodies:
        if _matches_uid(header, uid):
            return body
    # Some servers put UID after the literal; then the header cannot tell, but one body can.
    return bodies[0][1] if len(bodies) == 1 and _UID_ITEM.search(bodies[0][0]) is None else None


def _matches_uid(header: bytes, uid: int) -> bool:
    match = _UID_ITEM.search(header)
    return match is not None and int(match.group(1)) == uid


def _parse_ref(ref: str) -> tuple[int | None, int]:
    """(uidvalidity, uid) of a ref; uidvalidity is None for a bare UID (refs recorded before)."""
    validity, _, uid = ref.rpartition(":")
    if (validity and not validity.isdigit()) or not uid.isdigit() or int(uid) <= 0:
        raise SourceError(f"{ref!r} is not an IMAP ref (<uidvalidity>:<uid>)")
    return (int(validity) if validity else None), int(uid)


def _batches(uids: list[int]) -> Iterator[str]:
    for start in range(0, len(uids), _UID_BATCH):
        yield ",".join(str(uid) for uid in uids[start : start + _UID_BATCH])


def _text(exc: BaseException) -> str | bytes:
    value = exc.args[0] if exc.args else str(exc)
    return value if isinstance(value, str | bytes) else str(value)
