"""ImapSource against a real Dovecot over loopback: UID increments, UIDVALIDITY, PEEK, deletion."""

from __future__ import annotations

import imaplib
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

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
from emailrouter.sources.imap import ImapSource, mailbox_argument
from tests.fixtures.dovecot import Listener, MailboxUser, ScriptedDns, sample_message

pytestmark = pytest.mark.dovecot


def imap(server: DovecotServer, user: MailboxUser, **options: object) -> ImapSource:
    return ImapSource(
        "127.0.0.1",
        server.imap_port,
        user.name,
        user.password,
        security="none",
        allow_private=True,
        timeout=5.0,
        **options,  # type: ignore[arg-type]
    )


def as_fetched(source: ImapSource, *refs: str) -> list[PendingDeletion]:
    """Deletions of `refs` as the ledger records them once fetched (a ref not on the server as is)."""
    pending = []
    for ref in refs:
        try:
            pending.append(PendingDeletion(ref, header_identity(source.fetch(ref))))
        except MessageNotFoundError:
            pending.append(PendingDeletion(ref, "sha256:unknown"))
    return pending


def deliver(server: DovecotServer, user: MailboxUser, count: int, folder: str = "INBOX") -> list[bytes]:
    messages = [sample_message(f"m{n}") for n in range(count)]
    for raw in messages:
        server.deliver(user.name, raw, folder=folder)
    return messages


def test_second_poll_lists_only_uids_above_the_cursor(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    first_batch = deliver(dovecot_server, mailbox_user, 2)

    with imap(dovecot_server, mailbox_user) as source:
        fetched = list(iter_new_messages(source, MailboxCursor(), limit=10))
        cursor = source.advance(MailboxCursor(), [m.source_ref for m in fetched])
    (third,) = deliver(dovecot_server, mailbox_user, 1)
    with imap(dovecot_server, mailbox_user) as source:
        new_refs = source.list_new(cursor)
        third_raw = source.fetch(new_refs[0])

    status = dovecot_server.mailbox_status(mailbox_user.name)
    validity = status["uidvalidity"]
    assert [m.raw for m in fetched] == first_batch
    assert [m.source_ref for m in fetched] == [f"{validity}:1", f"{validity}:2"]
    assert cursor.uidvalidity == validity
    assert cursor.last_uid == 2
    assert new_refs == [f"{validity}:3"]
    assert third_raw == third


def test_list_new_with_a_current_cursor_and_no_new_mail_is_empty(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    deliver(dovecot_server, mailbox_user, 2)

    with imap(dovecot_server, mailbox_user) as source:
        cursor = source.advance(MailboxCursor(), source.list_new(MailboxCursor()))
        again = source.list_new(cursor)
        unchanged = source.advance(cursor, [])

    # UID SEARCH 3:* matches the highest message (UID 2) when nothing is above it.
    assert again == []
    assert unchanged == cursor


def test_uidvalidity_change_relists_everything_and_resets_the_cursor(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    deliver(dovecot_server, mailbox_user, 2)
    with imap(dovecot_server, mailbox_user) as source:
        cursor = source.advance(MailboxCursor(), source.list_new(MailboxCursor()))
    new_validity = cursor.uidvalidity + 1000  # type: ignore[operator]
    dovecot_server.doveadm(
        "mailbox", "update", "-u", mailbox_user.name, "--uid-validity", str(new_validity), "INBOX"
    )

    with imap(dovecot_server, mailbox_user) as source:
        relisted = source.list_new(cursor)
        reset = source.advance(cursor, relisted[:1])

    # The UIDs are the same numbers as before; only the new UIDVALIDITY says they are new.
    assert relisted == [f"{new_validity}:1", f"{new_validity}:2"]
    assert reset.uidvalidity == new_validity
    assert reset.last_uid == 1


def test_fetch_uses_peek_and_leaves_messages_unseen(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    deliver(dovecot_server, mailbox_user, 2)

    with imap(dovecot_server, mailbox_user) as source:
        for ref in source.list_new(MailboxCursor()):
            source.fetch(ref)

    assert dovecot_server.mailbox_status(mailbox_user.name)["unseen"] == 2


def test_fetch_returns_the_message_byte_for_byte(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    raw = sample_message("bytes") + b"X-Long: " + b"a" * 5000 + b"\r\nend\r\n"
    dovecot_server.deliver(mailbox_user.name, raw)

    with imap(dovecot_server, mailbox_user) as source:
        fetched = source.fetch(source.list_new(MailboxCursor())[0])

    assert fetched == raw


def test_delete_removes_only_the_given_messages(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    deliver(dovecot_server, mailbox_user, 3)

    with imap(dovecot_server, mailbox_user) as source:
        v = source.uidvalidity
        report = source.delete(as_fetched(source, f"{v}:1", f"{v}:3", f"{v}:99"))
        present = source.present([f"{v}:1", f"{v}:2", f"{v}:3", f"{v}:99"])

    assert report.deleted == [f"{v}:1", f"{v}:3"]
    assert report.gone == [f"{v}:99"]
    assert present == [f"{v}:2"]
    assert dovecot_server.message_count(mailbox_user.name) == 1


def test_delete_of_a_ref_from_another_uidvalidity_is_dropped(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    deliver(dovecot_server, mailbox_user, 1)

    with imap(dovecot_server, mailbox_user) as source:
        (pending,) = as_fetched(source, f"{source.uidvalidity}:1")
        stale = PendingDeletion(f"{source.uidvalidity - 1}:1", pending.identity)
        report = source.delete([stale])
        present = source.present([stale.source_ref])

    assert report.deleted == [] and present == []
    assert "UIDVALIDITY" in report.dropped[stale.source_ref]
    assert dovecot_server.message_count(mailbox_user.name) == 1


def test_delete_of_a_bare_uid_recorded_before_uidvalidity_checks_the_message_id(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    first, second = deliver(dovecot_server, mailbox_user, 2)
    first_id = first.split(b"\r\n", 1)[0].removeprefix(b"Message-ID: ").decode()
    second_id = second.split(b"\r\n", 1)[0].removeprefix(b"Message-ID: ").decode()

    with imap(dovecot_server, mailbox_user) as source:
        report = source.delete(
            [PendingDeletion("1", message_id=first_id), PendingDeletion("2", message_id=first_id)]
        )
        unchecked = source.delete([PendingDeletion("2")])
        rest = [source.fetch(ref) for ref in source.list_new(MailboxCursor())]

    assert report.deleted == ["1"]
    assert "Message-ID differs" in report.dropped["2"]
    assert "no identity" in unchecked.dropped["2"]
    assert [second_id.encode() in raw for raw in rest] == [True]


def test_delete_leaves_messages_another_client_flagged_deleted(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    deliver(dovecot_server, mailbox_user, 2)
    other = imaplib.IMAP4("127.0.0.1", dovecot_server.imap_port, timeout=5)
    other.login(mailbox_user.name, mailbox_user.password)
    other.select("INBOX")
    other.uid("STORE", "2", "+FLAGS", "(\\Deleted)")
    other.logout()

    with imap(dovecot_server, mailbox_user) as source:
        ref = f"{source.uidvalidity}:1"
        report = source.delete(as_fetched(source, ref))

    # UID EXPUNGE (UIDPLUS) removes just UID 1; a plain EXPUNGE would have taken UID 2 too.
    assert report.deleted == [ref]
    assert dovecot_server.message_count(mailbox_user.name) == 1


def test_fetch_of_an_expunged_uid_raises_message_not_found(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    deliver(dovecot_server, mailbox_user, 1)

    with imap(dovecot_server, mailbox_user) as source:
        ref = f"{source.uidvalidity}:1"
        source.delete(as_fetched(source, ref))
        with pytest.raises(MessageNotFoundError):
            source.fetch(ref)


def test_oversize_message_is_flagged_without_downloading(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    big = sample_message("big", body_lines=400)
    dovecot_server.deliver(mailbox_user.name, big)
    small = sample_message("small")
    dovecot_server.deliver(mailbox_user.name, small)

    with imap(dovecot_server, mailbox_user, max_message_bytes=1000) as source:
        big_ref, small_ref = source.list_new(MailboxCursor())
        with pytest.raises(MessageTooLargeError) as caught:
            source.fetch(big_ref)
        small_raw = source.fetch(small_ref)

    assert (caught.value.source_ref, caught.value.size, caught.value.limit) == (big_ref, len(big), 1000)
    assert small_raw == small


def test_polls_a_named_folder_with_non_ascii_name(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    (raw,) = deliver(dovecot_server, mailbox_user, 1, folder="Éléments reçus")

    with imap(dovecot_server, mailbox_user, folder="Éléments reçus") as source:
        refs = source.list_new(MailboxCursor())
        fetched = source.fetch(refs[0])

    assert fetched == raw
    assert dovecot_server.message_count(mailbox_user.name) == 0  # INBOX untouched


def test_missing_folder_is_a_configuration_error(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    source = imap(dovecot_server, mailbox_user, folder="No Such Folder")

    with pytest.raises(SourceConfigurationError, match="No Such Folder"), source:
        pass


def test_wrong_password_is_an_authentication_error_without_the_password(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    wrong = "Wr0ng-Secret-Value"
    source = ImapSource(
        "127.0.0.1", dovecot_server.imap_port, mailbox_user.name, wrong, security="none", allow_private=True
    )

    with pytest.raises(AuthenticationError) as caught, source:
        pass

    assert "AUTHENTICATIONFAILED" in str(caught.value)
    assert wrong not in str(caught.value)


def test_connection_refused_is_transient(closed_port: int) -> None:
    source = ImapSource("127.0.0.1", closed_port, "u", "p", security="none", allow_private=True)

    with pytest.raises(TransientSourceError), source:
        pass


def test_server_hanging_up_before_the_greeting_is_transient(hangup_server: Listener) -> None:
    source = ImapSource("127.0.0.1", hangup_server.port, "u", "p", security="none", allow_private=True)

    with pytest.raises(TransientSourceError), source:
        pass


def test_silent_server_times_out_as_transient(silent_server: Listener) -> None:
    source = ImapSource(
        "127.0.0.1", silent_server.port, "u", "p", security="none", allow_private=True, timeout=0.3
    )

    with pytest.raises(TransientSourceError, match="timed out"), source:
        pass


def test_private_host_is_refused_before_connecting(silent_server: Listener) -> None:
    source = ImapSource("127.0.0.1", silent_server.port, "u", "p", security="none", timeout=0.3)

    with pytest.raises(SourceConfigurationError, match="loopback"), source:
        pass
    assert silent_server.accepted == 0


def test_starttls_on_a_server_without_it_is_a_configuration_error(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    source = ImapSource(
        "127.0.0.1",
        dovecot_server.imap_port,
        mailbox_user.name,
        mailbox_user.password,
        security="starttls",
        allow_private=True,
    )

    with pytest.raises(SourceConfigurationError, match="STARTTLS"), source:
        pass


def test_mailbox_argument_quotes_and_encodes_modified_utf7() -> None:
    assert mailbox_argument("INBOX") == '"INBOX"'
    assert mailbox_argument('A "q" & B') == '"A \\"q\\" &- B"'
    assert mailbox_argument("Entwürfe") == '"Entw&APw-rfe"'


@pytest.fixture(scope="module")
def server_without_uidplus() -> Iterator[DovecotServer]:
    """A Dovecot that advertises no UIDPLUS, as some servers still do: only EXPUNGE is on offer."""
    workdir = Path(tempfile.mkdtemp(prefix="emailrouter-dovecot-"))
    server = DovecotServer(workdir, extra_config="imap_capability = IMAP4rev1 LITERAL+ IDLE")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_without_uidplus_delete_flags_only_and_never_expunges_what_others_flagged(
    server_without_uidplus: DovecotServer,
) -> None:
    user = MailboxUser(f"user-{secrets.token_hex(5)}", secrets.token_hex(8))
    server_without_uidplus.add_user(user.name, user.password)
    deliver(server_without_uidplus, user, 2)
    other = imaplib.IMAP4("127.0.0.1", server_without_uidplus.imap_port, timeout=5)
    other.login(user.name, user.password)
    other.select("INBOX")
    other.uid("STORE", "2", "+FLAGS", "(\\Deleted)")  # the owner's client, not yet expunged
    other.logout()

    with imap(server_without_uidplus, user) as source:
        ref = f"{source.uidvalidity}:1"
        report = source.delete(as_fetched(source, ref))

    # Both messages are still there, both flagged: a plain EXPUNGE would have removed UID 2 too.
    assert server_without_uidplus.message_count(user.name) == 2
    assert report.deleted == [ref]
    assert report.warnings and "UIDPLUS" in report.warnings[0]
    with imap(server_without_uidplus, user) as source:
        caveats = source.delete_caveats()
    assert caveats and "UIDPLUS" in caveats[0]


def test_connects_to_the_address_it_vetted_whatever_dns_answers_next(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    dovecot_server.deliver(mailbox_user.name, sample_message("pinned"))
    # First answer: loopback, where Dovecot listens (local mode allows it). Any later answer:
    # 127.0.0.2, where nothing listens; a second lookup at connect time would fail there.
    dns = ScriptedDns("127.0.0.1", "127.0.0.2")
    source = ImapSource(
        "mail.rebinding.test",
        dovecot_server.imap_port,
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
    source = ImapSource(
        "mail.tenant.example", silent_server.port, "u", "p", security="none", timeout=1.0, resolver=dns
    )

    with pytest.raises(SourceConfigurationError, match="resolves to"):
        source.list_new(MailboxCursor())

    assert silent_server.accepted == 0
    assert dns.lookups == ["mail.tenant.example"]
