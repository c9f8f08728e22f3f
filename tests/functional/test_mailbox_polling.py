"""The poller against Dovecot and the local stack: a mailbox keeps moving whatever its mail.

Ordinary mail must never stop a mailbox: ten large inline messages in one hand-off, a message
the server refuses to hand out, a failure outside the mail server. Every poll leaves its
mark in the mailbox health.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from emailrouter import aws
from emailrouter.ledger.models import Outcome
from emailrouter.local.dovecot import DovecotServer
from emailrouter.local.stack import LocalStack
from emailrouter.runtime import reset_runtime
from emailrouter.sources.poller import MailboxPoller
from emailrouter.tenancy.store import TenantStore
from tests.helpers import TENANT, add_tenant, dovecot_mailbox, raw_mail, seed_org

pytestmark = [pytest.mark.dovecot, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(
        workdir=tmp_path_factory.mktemp("polling") / "local", time_scale=0.005, with_dovecot=True
    )
    stack.start()
    seed_org(stack)
    yield stack
    stack.stop()


def _mailbox(stack: LocalStack, protocol: str) -> str:
    name = f"{protocol}{secrets.token_hex(4)}"
    add_tenant(stack, [dovecot_mailbox(stack, name, protocol)])
    reset_runtime()
    return name


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_ten_messages_at_the_inline_limit_are_handed_off_in_batches_under_the_sqs_limit(
    stack: LocalStack, protocol: str
) -> None:
    assert stack.dovecot is not None and stack.runner is not None
    mailbox = _mailbox(stack, protocol)
    inline_limit = reset_runtime().settings.inline_max_bytes
    for n in range(10):
        mail = raw_mail(subject=f"Large {n}", message_id=f"<large-{n}-{mailbox}@client.example>", body="")
        stack.dovecot.deliver(mailbox, mail + b"x" * (inline_limit - len(mail) - 100) + b"\r\n")

    first = reset_runtime().poller.poll(TENANT, mailbox)
    second = reset_runtime().poller.poll(TENANT, mailbox)

    # Ten Base64 bodies of ~256 KiB are ~2.6 MiB: more than one SQS batch may hold.
    assert (first.state, first.fetched) == ("ok", 10), first
    assert (second.state, second.fetched) == ("ok", 0), second
    assert TenantStore().get_health(TENANT, mailbox).state == "ok"
    assert stack.runner.drain(120)


def _make_unreadable(stack: LocalStack, mailbox: str, subject: str) -> None:
    """The server cannot read the message with `subject` (its file loses every permission):
    Dovecot's POP3 answers RETR with -ERR, its IMAP drops the connection on FETCH."""
    assert stack.dovecot is not None
    maildir = stack.dovecot.maildir(mailbox)
    (path,) = [
        path
        for path in [*(maildir / "new").iterdir(), *(maildir / "cur").iterdir()]
        if f"Subject: {subject}".encode() in path.read_bytes().splitlines()
    ]
    path.chmod(0)


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
def test_a_message_the_server_refuses_is_skipped_after_three_polls_and_the_mailbox_goes_on(
    stack: LocalStack, protocol: str
) -> None:
    assert stack.dovecot is not None and stack.runner is not None
    mailbox = _mailbox(stack, protocol)
    for n in range(3):
        stack.dovecot.deliver(
            mailbox, raw_mail(subject=f"M{n}", message_id=f"<m{n}-{mailbox}@client.example>")
        )
    _make_unreadable(stack, mailbox, "M1")

    polls = [reset_runtime().poller.poll(TENANT, mailbox) for _ in range(4)]

    assert [(p.state, p.fetched) for p in polls] == [("failing", 1), ("failing", 0), ("ok", 1), ("ok", 0)]
    assert "attempt 1 of 3" in polls[0].reason and "attempt 2 of 3" in polls[1].reason
    health = TenantStore().get_health(TENANT, mailbox)
    assert health.state == "ok"
    runtime = reset_runtime()
    (skipped,) = [r for r in runtime.ledger.list_messages(TENANT) if r.mailbox_id == mailbox]
    assert skipped.outcome == Outcome.QUARANTINED and "could not be fetched in 3 polls" in skipped.reason
    assert stack.dovecot.message_count(mailbox) == 3  # nothing deleted, the skipped one included
    assert stack.runner.drain(60)


def test_a_failure_outside_the_mail_server_is_recorded_in_the_mailbox_health(stack: LocalStack) -> None:
    assert stack.dovecot is not None
    mailbox = _mailbox(stack, "imap")
    stack.dovecot.deliver(mailbox, raw_mail(subject="Queued", message_id=f"<q-{mailbox}@client.example>"))
    runtime = reset_runtime()
    queue_url = aws.client("sqs").create_queue(QueueName=f"gone-{mailbox}")["QueueUrl"]
    aws.client("sqs").delete_queue(QueueUrl=queue_url)
    poller = MailboxPoller(
        runtime.settings.model_copy(update={"inbound_queue_url": queue_url}),
        runtime.tenants,
        runtime.ledger,
        runtime.raw_store,
        runtime.queue,
        runtime.secrets,
    )

    result = poller.poll(TENANT, mailbox)

    health = TenantStore().get_health(TENANT, mailbox)
    assert result.state == "failing" and "internal error" in result.reason
    assert (health.state, health.consecutive_failures) == ("failing", 1)
    assert "internal error" in health.reason and "QueueDoesNotExist" in health.reason
    # Nothing was handed off, so the next poll with a working queue fetches the message.
    assert reset_runtime().poller.poll(TENANT, mailbox).fetched == 1


@pytest.fixture(scope="module")
def server_without_uidplus() -> Iterator[DovecotServer]:
    workdir = Path(tempfile.mkdtemp(prefix="emailrouter-dovecot-"))
    server = DovecotServer(workdir, extra_config="imap_capability = IMAP4rev1 LITERAL+ IDLE")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_server_without_uidplus_keeps_flagged_mail_and_the_health_says_why(
    stack: LocalStack, server_without_uidplus: DovecotServer
) -> None:
    assert stack.runner is not None
    name, password = f"nouidplus{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    server_without_uidplus.add_user(name, password)
    secret = f"emailrouter/{TENANT}/mailbox-{name}"
    aws.client("secretsmanager").create_secret(
        Name=secret, SecretString=json.dumps({"username": name, "password": password})
    )
    mailbox = {
        "mailbox_id": name,
        "address": f"{name}@acme.example",
        "protocol": "imap",
        "host": "127.0.0.1",
        "port": server_without_uidplus.imap_port,
        "security": "none",
        "credential_secret": secret,
        "tracking": "all",
        "delete_after_processing": True,
    }
    add_tenant(stack, [mailbox])
    server_without_uidplus.deliver(name, raw_mail(subject="Flag me", message_id=f"<f-{name}@client.example>"))

    assert reset_runtime().poller.poll(TENANT, name).fetched == 1
    assert stack.runner.drain(60)
    again = reset_runtime().poller.poll(TENANT, name)

    health = TenantStore().get_health(TENANT, name)
    assert (again.state, health.state) == ("ok", "ok")
    assert "UIDPLUS" in health.reason
    # Processed and flagged \Deleted, but not expunged: that is left to the owner's client.
    assert server_without_uidplus.message_count(name) == 1
    assert reset_runtime().ledger.pending_deletions(TENANT, name) == []
