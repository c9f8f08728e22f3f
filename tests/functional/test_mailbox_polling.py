"""The poller against Dovecot and the local stack: a mailbox keeps moving whatever its mail.

Ordinary mail must never stop a mailbox: ten large inline messages in one hand-off, a message
the server refuses to hand out, a failure outside the mail server. Every poll leaves its
mark in the mailbox health.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from emailrouter.local.stack import LocalStack
from emailrouter.runtime import reset_runtime
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
