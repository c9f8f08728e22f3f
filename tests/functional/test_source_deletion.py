"""Deleting at the source only what was fetched: the real poller and worker against Dovecot.

A mailbox with delete-after-processing hands a message off, and before its outcome is recorded
the folder is re-created (a server migration, an admin's repair) and another message arrives
under the same UID. The worker's acknowledgement must not delete that other message: the ref it
holds belongs to the old UIDVALIDITY, or (when the new folder was given the old UIDVALIDITY, or a
POP3 maildrop reuses a UIDL) names a message whose headers differ. The dropped deletion is
recorded in the ledger and never retried.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from emailrouter import aws
from emailrouter.local.stack import LocalStack
from emailrouter.runtime import reset_runtime
from tests.helpers import TENANT, add_tenant, dovecot_mailbox, incoming_emails, raw_mail, seed_org

pytestmark = [pytest.mark.dovecot, pytest.mark.timeout(180)]

FOLDER = "Tracked"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(
        workdir=tmp_path_factory.mktemp("deletion") / "local", time_scale=0.005, with_dovecot=True
    )
    stack.start()
    seed_org(stack)
    yield stack
    stack.stop()


def _mailbox(stack: LocalStack, protocol: str, **extra: Any) -> str:
    """A fresh Dovecot user as the tenant's only mailbox, deleted after processing."""
    name = f"{protocol}{secrets.token_hex(4)}"
    add_tenant(stack, [{**dovecot_mailbox(stack, name, protocol, delete_after_processing=True), **extra}])
    reset_runtime()
    return name


def _source_items(stack: LocalStack, mailbox: str) -> list[dict[str, Any]]:
    assert stack.endpoints is not None
    response = aws.client("dynamodb").query(
        TableName=stack.endpoints.environment["LEDGER_TABLE"],
        KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
        ExpressionAttributeValues={":pk": {"S": f"TENANT#{TENANT}"}, ":p": {"S": f"SRC#{mailbox}#"}},
    )
    return list(response["Items"])


def _mail(label: str) -> bytes:
    return raw_mail(subject=f"Message {label}", message_id=f"<{label}-{secrets.token_hex(4)}@client.example>")


def _recreate_imap_folder(stack: LocalStack, mailbox: str, uidvalidity: int | None) -> bytes:
    """Delete the folder and deliver another message into a new one, whose first UID is 1 again."""
    assert stack.dovecot is not None
    stack.dovecot.doveadm("mailbox", "delete", "-u", mailbox, FOLDER)
    other = _mail("other")
    stack.dovecot.deliver(mailbox, other, folder=FOLDER)
    if uidvalidity is not None:
        stack.dovecot.doveadm("mailbox", "update", "-u", mailbox, "--uid-validity", str(uidvalidity), FOLDER)
    return other


@pytest.mark.parametrize("same_uidvalidity", [False, True], ids=["new-uidvalidity", "same-uidvalidity"])
def test_imap_deletion_after_the_folder_was_recreated_leaves_the_other_message(
    stack: LocalStack, same_uidvalidity: bool
) -> None:
    assert stack.dovecot is not None and stack.runner is not None
    mailbox = _mailbox(stack, "imap", folder=FOLDER)
    stack.dovecot.deliver(mailbox, _mail("fetched"), folder=FOLDER)
    old = stack.dovecot.mailbox_status(mailbox, FOLDER)
    assert reset_runtime().poller.poll(TENANT, mailbox).fetched == 1

    _recreate_imap_folder(stack, mailbox, old["uidvalidity"] if same_uidvalidity else old["uidvalidity"] + 7)
    assert stack.runner.drain(60)

    now = stack.dovecot.mailbox_status(mailbox, FOLDER)
    assert (now["uidvalidity"] == old["uidvalidity"]) is same_uidvalidity
    # The fetched message reached the CRM; the message that took its UID is still on the server.
    assert [e["subject"] for e in incoming_emails(stack) if e["subject"] == "Message fetched"]
    assert now["messages"] == 1
    (item,) = _source_items(stack, mailbox)
    assert item["ack_pending"] == {"BOOL": False}
    reason = item["ack_dropped"]["S"]
    assert ("headers differ" in reason) if same_uidvalidity else ("UIDVALIDITY" in reason)

    # The next poll does not retry the dropped deletion. It fetches the new message when the
    # UIDVALIDITY says it is new; a server that reuses a UID under the same UIDVALIDITY breaks
    # RFC 3501, and then the message waits for an operator rather than being lost.
    result = reset_runtime().poller.poll(TENANT, mailbox)
    assert result.state == "ok" and result.fetched == (0 if same_uidvalidity else 1)
    assert stack.runner.drain(60)
    # Fetched and processed, it is deleted like any other message; unfetched, it stays.
    assert stack.dovecot.message_count(mailbox, FOLDER) == (1 if same_uidvalidity else 0)


def test_pop3_deletion_of_a_reused_uidl_leaves_the_other_message(stack: LocalStack) -> None:
    assert stack.dovecot is not None and stack.runner is not None
    mailbox = _mailbox(stack, "pop3")
    stack.dovecot.deliver(mailbox, _mail("fetched"))
    old = stack.dovecot.mailbox_status(mailbox)
    assert reset_runtime().poller.poll(TENANT, mailbox).fetched == 1

    # The maildrop is rebuilt (restored from elsewhere): another message gets UID 1 under the old
    # UIDVALIDITY, so Dovecot gives it the UIDL the fetched message had (%08Xu%08Xv).
    shutil.rmtree(stack.dovecot.maildir(mailbox))
    stack.dovecot.deliver(mailbox, _mail("other"))
    stack.dovecot.doveadm(
        "mailbox", "update", "-u", mailbox, "--uid-validity", str(old["uidvalidity"]), "INBOX"
    )
    assert stack.dovecot.mailbox_status(mailbox)["uidnext"] == old["uidnext"]
    assert stack.runner.drain(60)

    assert stack.dovecot.message_count(mailbox) == 1
    (item,) = _source_items(stack, mailbox)
    assert item["ack_pending"] == {"BOOL": False}
    assert "headers differ" in item["ack_dropped"]["S"]
    assert reset_runtime().poller.poll(TENANT, mailbox).state == "ok"
    assert stack.runner.drain(60)
    assert stack.dovecot.message_count(mailbox) == 1
