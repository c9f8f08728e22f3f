"""DovecotServer: a self-contained real Dovecot we start, feed and stop without leftovers."""

from __future__ import annotations

import os
import poplib
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from emailrouter.local.dovecot import NOBODY, DovecotServer, dovecot_available, find_dovecot_binaries
from tests.fixtures.dovecot import MailboxUser, sample_message

pytestmark = pytest.mark.dovecot


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="emailrouter-dovecot-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def live_processes_in_group(pgid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(stat.parent.name))
    return found


def pop3_login(port: int, user: str, password: str) -> bytes:
    client = poplib.POP3("127.0.0.1", port, timeout=5)
    try:
        client.user(user)
        return client.pass_(password)
    finally:
        client.quit()


def test_binaries_are_installed() -> None:
    binaries = find_dovecot_binaries()

    assert dovecot_available()
    assert binaries.version >= (2, 3)


def test_start_opens_both_loopback_ports_and_stop_leaves_no_process(workdir: Path) -> None:
    server = DovecotServer(workdir)

    server.start()
    pid = server.pid
    assert pid is not None
    ports_open = accepts(server.pop3_port) and accepts(server.imap_port)
    server.stop()

    assert ports_open
    assert not accepts(server.pop3_port)
    assert not accepts(server.imap_port)
    assert live_processes_in_group(pid) == []
    assert not server.running


def test_config_is_self_contained_in_the_workdir(workdir: Path) -> None:
    with DovecotServer(workdir) as server:
        config = server.config_path.read_text()

    assert "!include" not in config
    assert "listen = 127.0.0.1" in config
    for setting in ("base_dir", "state_dir", "log_path"):
        line = next(line for line in config.splitlines() if line.startswith(f"{setting} ="))
        assert line.split("=", 1)[1].strip().startswith(str(workdir))
    assert server.log_path.exists()


def test_explicit_ports_are_used(workdir: Path) -> None:
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))

    with DovecotServer(workdir, pop3_port=ports[0], imap_port=ports[1]) as server:
        assert (server.pop3_port, server.imap_port) == (ports[0], ports[1])
        assert accepts(ports[0]) and accepts(ports[1])


def test_user_added_while_running_can_log_in_at_once(dovecot_server: DovecotServer) -> None:
    user = MailboxUser("late-joiner", "pass word:not")
    with pytest.raises(ValueError, match="':'"):
        dovecot_server.add_user(user.name, user.password)
    dovecot_server.add_user(user.name, "pass word")

    reply = pop3_login(dovecot_server.pop3_port, user.name, "pass word")

    assert reply.startswith(b"+OK")


def test_deliver_stores_mail_owned_by_the_mail_user(
    dovecot_server: DovecotServer, mailbox_user: MailboxUser
) -> None:
    dovecot_server.deliver(mailbox_user.name, sample_message("one"))
    dovecot_server.deliver(mailbox_user.name, sample_message("two"))

    files = list((dovecot_server.maildir(mailbox_user.name) / "new").iterdir())

    assert dovecot_server.message_count(mailbox_user.name) == 2
    assert len(files) == 2
    expected_uid = NOBODY if os.geteuid() == 0 else os.getuid()
    assert {f.stat().st_uid for f in files} == {expected_uid}


def test_deliver_to_unknown_user_fails_loudly(dovecot_server: DovecotServer) -> None:
    with pytest.raises(Exception, match="dovecot-lda exited"):
        dovecot_server.deliver("nobody-here", sample_message("lost"))
