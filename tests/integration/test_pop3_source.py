"""Pop3Source against a real Dovecot over loopback: UIDL increments, deletion, error mapping."""

from __future__ import annotations

import contextlib
import poplib
import socket
import threading
from collections.abc import Iterator

import pytest

from emailrouter.local.dovecot import DovecotServer
from emailrouter.sources.base import MailboxCursor, PendingDeletion, header_identity, iter_new_messages
from emailrouter.sources.errors import (
    AuthenticationError,
    MessageNotFoundError,
    MessageTooLargeError,
    SourceConfigurationError,
    TransientSourceError,
)
from emailrouter.sources.pop3 import Pop3Source
from tests.fixtures.dovecot import Listener, MailboxUser, ScriptedDns, sample_message

pytestmark = pytest.mark.dovecot


def pop3(server: DovecotServer, user: MailboxUser, **options: object) -> Pop3Source:
    return Pop3Source(
        "127.0.0.1",
        server.pop3_port,
        user.name,
        user.password,
        security="none",
        allow_private=True,
        timeout=5.0,
        **options,  # type: ignore[arg-type]
    )


def fetched_deletions(source: Pop3Source, refs: list[str]) -> list[PendingDeletion]:
    """Deletions of `refs` as the ledger records them once fetched."""
    return [PendingDeletion(ref, header_identity(source.fetch(ref))) for ref in refs]


def test_delete_checks_the_headers_and_drops_a_ref_whose_message_differs(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    long_header = sample_message("long").replace(
        b"MIME-Version", b"X-Long: " + b"a" * 5000 + b"\r\nMIME-Version"
    )
    dovecot_server.deliver(mailbox_user.name, long_header)
    dovecot_server.deliver(mailbox_user.name, sample_message("other"))
    with pop3(dovecot_server, mailbox_user) as source:
        first, second = source.list_new(MailboxCursor())
        fetched = fetched_deletions(source, [first, second])
        swapped = [PendingDeletion(first, fetched[1].identity), fetched[1]]
        report = source.delete(swapped)

    assert report.deleted == [second]
    assert "headers differ" in report.dropped[first]
    assert uidls_by_fresh_session(dovecot_server, mailbox_user) == [first]


def uidls_by_fresh_session(server: DovecotServer, user: MailboxUser) -> list[str]:
    """What the server holds, read with plain poplib rather than the code under test."""
    client = poplib.POP3("127.0.0.1", server.pop3_port, timeout=5)
    try:
        client.user(user.name)
        client.pass_(user.password)
        _, lines, _ = client.uidl()
        return [line.split()[1].decode() for line in lines]
    finally:
        client.quit()


def test_second_poll_lists_only_mail_delivered_since_the_first(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    first, second, third = (sample_message(f"m{n}") for n in range(3))
    dovecot_server.deliver(mailbox_user.name, first)
    dovecot_server.deliver(mailbox_user.name, second)

    with pop3(dovecot_server, mailbox_user) as source:
        fetched = list(iter_new_messages(source, MailboxCursor(), limit=10))
        cursor = source.advance(MailboxCursor(), [m.source_ref for m in fetched])
    dovecot_server.deliver(mailbox_user.name, third)
    with pop3(dovecot_server, mailbox_user) as source:
        new_refs = source.list_new(cursor)
        third_raw = source.fetch(new_refs[0])

    assert [m.raw for m in fetched] == [first, second]
    assert cursor.seen_uidls == [m.source_ref for m in fetched]
    assert len(new_refs) == 1
    assert third_raw == third


def test_refs_are_the_servers_stable_uidls_in_arrival_order(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    for n in range(3):
        dovecot_server.deliver(mailbox_user.name, sample_message(f"m{n}"))

    with pop3(dovecot_server, mailbox_user) as source:
        refs = source.list_new(MailboxCursor())

    assert refs == uidls_by_fresh_session(dovecot_server, mailbox_user)
    assert all(len(ref) == 16 for ref in refs)  # pop3_uidl_format = %08Xu%08Xv


def test_fetch_returns_the_message_byte_for_byte(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    # 8-bit text, a lone "." line and ".." (dot-stuffed on the wire), and a 5000-byte line
    # (poplib's own reader refuses lines over 2048 bytes).
    raw = sample_message("bytes") + b"X-Long: " + b"a" * 5000 + b"\r\nend\r\n"
    dovecot_server.deliver(mailbox_user.name, raw)

    with pop3(dovecot_server, mailbox_user) as source:
        (ref,) = source.list_new(MailboxCursor())
        fetched = source.fetch(ref)

    assert fetched == raw


def test_delete_removes_messages_and_advance_prunes_them_from_the_cursor(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    for n in range(3):
        dovecot_server.deliver(mailbox_user.name, sample_message(f"m{n}"))
    with pop3(dovecot_server, mailbox_user) as source:
        refs = source.list_new(MailboxCursor())
        cursor = source.advance(MailboxCursor(), refs)

        report = source.delete(fetched_deletions(source, refs[:2]))
        still_there = source.present(refs)
        pruned = source.advance(cursor, [])

    assert report.deleted == refs[:2]
    assert dovecot_server.message_count(mailbox_user.name) == 1
    assert uidls_by_fresh_session(dovecot_server, mailbox_user) == refs[2:]
    assert still_there == refs[2:]
    assert pruned.seen_uidls == refs[2:]


def test_delete_skips_refs_that_are_not_on_the_server(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    dovecot_server.deliver(mailbox_user.name, sample_message("keep"))

    with pop3(dovecot_server, mailbox_user) as source:
        report = source.delete([PendingDeletion("00000099deadbeef", "sha256:unknown")])

    assert report.deleted == [] and report.gone == ["00000099deadbeef"]
    assert dovecot_server.message_count(mailbox_user.name) == 1


def test_fetch_of_a_ref_not_on_the_server_raises_message_not_found(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    with pop3(dovecot_server, mailbox_user) as source, pytest.raises(MessageNotFoundError):
        source.fetch("00000099deadbeef")


def test_oversize_message_is_flagged_from_list_size_and_session_stays_usable(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    big = sample_message("big", body_lines=400)
    small = sample_message("small")
    dovecot_server.deliver(mailbox_user.name, big)
    dovecot_server.deliver(mailbox_user.name, small)

    with pop3(dovecot_server, mailbox_user, max_message_bytes=1000) as source:
        big_ref, small_ref = source.list_new(MailboxCursor())
        with pytest.raises(MessageTooLargeError) as caught:
            source.fetch(big_ref)
        small_raw = source.fetch(small_ref)

    assert caught.value.source_ref == big_ref
    assert caught.value.size == len(big)
    assert caught.value.limit == 1000
    assert small_raw == small


def test_wrong_password_is_an_authentication_error_without_the_password(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    wrong = "Wr0ng-Secret-Value"
    source = Pop3Source(
        "127.0.0.1", dovecot_server.pop3_port, mailbox_user.name, wrong, security="none", allow_private=True
    )

    with pytest.raises(AuthenticationError) as caught, source:
        pass

    assert "Authentication failed" in str(caught.value)
    assert wrong not in str(caught.value)
    assert wrong not in repr(caught.value.__cause__)


def test_connection_refused_is_transient(closed_port: int) -> None:
    source = Pop3Source("127.0.0.1", closed_port, "u", "p", security="none", allow_private=True)

    with pytest.raises(TransientSourceError), source:
        pass


def test_server_hanging_up_before_the_greeting_is_transient(hangup_server: Listener) -> None:
    source = Pop3Source("127.0.0.1", hangup_server.port, "u", "p", security="none", allow_private=True)

    with pytest.raises(TransientSourceError), source:
        pass
    assert hangup_server.accepted == 1


def test_silent_server_times_out_as_transient(silent_server: Listener) -> None:
    source = Pop3Source(
        "127.0.0.1", silent_server.port, "u", "p", security="none", allow_private=True, timeout=0.3
    )

    with pytest.raises(TransientSourceError, match="timed out"), source:
        pass


def test_loopback_host_is_refused_before_connecting_unless_private_allowed(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser, silent_server: Listener
) -> None:
    refused = Pop3Source("127.0.0.1", silent_server.port, "u", "p", security="none", timeout=0.3)

    with pytest.raises(SourceConfigurationError, match="loopback"), refused:
        pass
    assert silent_server.accepted == 0
    with pop3(dovecot_server, mailbox_user) as allowed:
        assert allowed.list_new(MailboxCursor()) == []


def test_starttls_on_a_server_without_stls_is_a_configuration_error(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    source = Pop3Source(
        "127.0.0.1",
        dovecot_server.pop3_port,
        mailbox_user.name,
        mailbox_user.password,
        security="starttls",
        allow_private=True,
    )

    with pytest.raises(SourceConfigurationError, match="STLS"), source:
        pass


@pytest.fixture
def quit_dropping_proxy(dovecot_server: DovecotServer) -> Iterator[int]:
    """A loopback TCP proxy to Dovecot that cuts the connection when the client sends QUIT."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])

    def pump(src: socket.socket, dst: socket.socket, watch_quit: bool) -> None:
        try:
            while data := src.recv(65536):
                if watch_quit and data.upper().startswith(b"QUIT"):
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # shutdown, not just close: the other pump thread is blocked in recv on these sockets.
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def accept_one() -> None:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        upstream = socket.create_connection(("127.0.0.1", dovecot_server.pop3_port))
        threading.Thread(target=pump, args=(upstream, client, False), daemon=True).start()
        pump(client, upstream, True)

    thread = threading.Thread(target=accept_one, daemon=True)
    thread.start()
    yield port
    listener.close()
    thread.join(timeout=5)


def test_delete_whose_quit_is_lost_is_transient_and_deletes_nothing(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser, quit_dropping_proxy: int
) -> None:
    for n in range(2):
        dovecot_server.deliver(mailbox_user.name, sample_message(f"m{n}"))
    source = Pop3Source(
        "127.0.0.1",
        quit_dropping_proxy,
        mailbox_user.name,
        mailbox_user.password,
        security="none",
        allow_private=True,
        timeout=5.0,
    )

    with source, pytest.raises(TransientSourceError, match="QUIT"):
        source.delete(fetched_deletions(source, source.list_new(MailboxCursor())))

    assert dovecot_server.message_count(mailbox_user.name) == 2


@pytest.fixture
def understating_pop3_server() -> Iterator[int]:
    """A scripted POP3 peer whose LIST claims 10 octets for a 20,000-octet message.

    Dovecot reports exact sizes, so only a misbehaving peer can show that the body read itself
    is bounded, and that the session is still in step afterwards (a second RETR is answered).
    """
    listener = socket.create_server(("127.0.0.1", 0))
    body = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n"
    body = body * 20

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn, conn.makefile("rb") as reader:
            conn.sendall(b"+OK ready\r\n")
            for line in reader:
                verb = line.split()[0].upper() if line.strip() else b""
                if verb in (b"USER", b"PASS", b"NOOP"):
                    conn.sendall(b"+OK\r\n")
                elif verb == b"UIDL":
                    conn.sendall(b"+OK\r\n1 big-one\r\n.\r\n")
                elif verb == b"LIST":
                    conn.sendall(b"+OK\r\n1 10\r\n.\r\n")
                elif verb == b"RETR":
                    conn.sendall(b"+OK\r\n" + body + b".\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"+OK bye\r\n")
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    listener.close()
    thread.join(timeout=5)


def test_body_larger_than_listed_is_cut_off_while_reading(understating_pop3_server: int) -> None:
    source = Pop3Source(
        "127.0.0.1",
        understating_pop3_server,
        "u",
        "p",
        security="none",
        allow_private=True,
        timeout=5.0,
        max_message_bytes=4096,
    )

    with source:
        with pytest.raises(MessageTooLargeError) as caught:
            source.fetch("big-one")
        # The rest was drained, not left in the stream: the next reply is read as a reply.
        with pytest.raises(MessageTooLargeError):
            source.fetch("big-one")

    assert caught.value.size > 4096
    assert caught.value.limit == 4096


def test_connects_to_the_address_it_vetted_whatever_dns_answers_next(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    dovecot_server.deliver(mailbox_user.name, sample_message("pinned"))
    # First answer: loopback, where Dovecot listens (local mode allows it). Any later answer:
    # 127.0.0.2, where nothing listens; a second lookup at connect time would fail there.
    dns = ScriptedDns("127.0.0.1", "127.0.0.2")
    source = Pop3Source(
        "mail.rebinding.test",
        dovecot_server.pop3_port,
        mailbox_user.name,
        mailbox_user.password,
        security="none",
        allow_private=True,
        timeout=5.0,
        resolver=dns,
    )

    with source:
        refs = source.list_new(MailboxCursor())

    assert len(refs) == 1
    assert dns.lookups == ["mail.rebinding.test"]


@pytest.mark.parametrize("answer", ["127.0.0.1", "169.254.169.254", "10.20.30.40", "::ffff:127.0.0.1"])
def test_a_name_resolving_to_a_blocked_address_is_refused_before_connecting(
    silent_server: Listener, answer: str
) -> None:
    dns = ScriptedDns(answer)
    source = Pop3Source(
        "mail.tenant.example", silent_server.port, "u", "p", security="none", timeout=1.0, resolver=dns
    )

    with pytest.raises(SourceConfigurationError, match="resolves to"):
        source.list_new(MailboxCursor())

    assert silent_server.accepted == 0
    assert dns.lookups == ["mail.tenant.example"]
