"""A quarantined message is not lost: it stays in its mailbox (even with delete_after_processing)
and its raw copy stays in S3 until it is replayed or explicitly discarded.

Real components: Dovecot over POP3 (the mailbox deletes what was processed), the real poller,
deliver_inbound through the local runner, the Dataverse emulator, moto. The quarantine cause is
one an operator can fix: a message over the tenant's max_message_bytes (lowered while the message
was queued, so the poller fetched it and the worker quarantines it); raising the limit again and
replaying tracks it. Expectations come from the scenario (what was delivered to the mailbox),
not from the code under test.
"""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from emailrouter import aws
from emailrouter.cli.main import main
from emailrouter.ledger.models import InboundRecord, Outcome
from emailrouter.ledger.store import Ledger
from emailrouter.local.stack import LocalStack
from emailrouter.runtime import Runtime, reset_runtime
from tests.helpers import TENANT, add_tenant, dovecot_mailbox, incoming_emails, raw_mail, seed_org

HELP = "help"
LIMIT = 1024
PADDING = "The scanned delivery note follows, line by line. " * 60  # well over LIMIT


def _poll(runtime: Runtime) -> None:
    result = runtime.poller.poll(TENANT, HELP)
    assert result.state == "ok", result


def _poll_and_drain(stack: LocalStack, runtime: Runtime) -> None:
    assert stack.runner is not None
    _poll(runtime)
    assert stack.runner.drain(60)


def _fetch_then_lower_the_limit(stack: LocalStack, mailbox: dict[str, object]) -> None:
    """Poll with the default limit, then lower it before the worker runs."""
    assert stack.runner is not None
    _poll(reset_runtime())
    add_tenant(stack, mailboxes=[mailbox], max_message_bytes=LIMIT)
    assert stack.runner.drain(60)
    _poll_and_drain(stack, reset_runtime())  # the next minute's poll deletes what was processed


def _quarantined() -> list[InboundRecord]:
    return [r for r in Ledger().list_messages(TENANT) if r.outcome is Outcome.QUARANTINED]


def _setup(stack: LocalStack) -> dict[str, object]:
    seed_org(stack)
    mailbox = dovecot_mailbox(stack, HELP, "pop3", delete_after_processing=True)
    add_tenant(stack, mailboxes=[mailbox])
    return mailbox


@pytest.mark.timeout(300)
def test_quarantined_message_stays_in_the_mailbox_and_replay_tracks_it(full_stack: LocalStack) -> None:
    stack, dovecot = full_stack, full_stack.dovecot
    assert dovecot is not None and stack.endpoints is not None
    mailbox = _setup(stack)
    dovecot.deliver(HELP, raw_mail(subject="Small", message_id="<small@client.example>"))
    dovecot.deliver(HELP, raw_mail(subject="Big", message_id="<big@client.example>", body=PADDING))

    _fetch_then_lower_the_limit(stack, mailbox)

    assert [e["subject"] for e in incoming_emails(stack)] == ["Small"]
    (quarantined,) = _quarantined()
    assert quarantined.message_id == "<big@client.example>" and str(LIMIT) in quarantined.reason
    # Only the tracked message left the mailbox; the quarantined one is still there.
    assert dovecot.message_count(HELP) == 1
    bucket = stack.endpoints.environment["RAW_MAIL_BUCKET"]
    assert quarantined.raw_s3_key and quarantined.raw_s3_key.startswith(f"quarantine/{TENANT}/{HELP}/")
    kept = aws.client("s3").get_object(Bucket=bucket, Key=quarantined.raw_s3_key)["Body"].read()
    assert b"<big@client.example>" in kept

    # The operator fixes the cause (a higher limit) and replays: tracked once, then deleted at
    # the source by the next poll like any processed message.
    add_tenant(stack, mailboxes=[mailbox])
    assert main(["messages", "replay", quarantined.message_key, "--tenant", TENANT, "--json"]) == 0
    _poll_and_drain(stack, reset_runtime())

    assert sorted(e["subject"] for e in incoming_emails(stack)) == ["Big", "Small"]
    record = Ledger().get(TENANT, quarantined.message_key)
    assert record is not None and record.outcome is Outcome.CREATED
    assert dovecot.message_count(HELP) == 0


@pytest.mark.timeout(300)
def test_discarded_quarantine_loses_its_raw_copy_and_leaves_the_mailbox(
    full_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    stack, dovecot = full_stack, full_stack.dovecot
    assert dovecot is not None and stack.endpoints is not None
    mailbox = _setup(stack)
    dovecot.deliver(HELP, raw_mail(subject="Junk", message_id="<junk@client.example>", body=PADDING))
    _fetch_then_lower_the_limit(stack, mailbox)
    (quarantined,) = _quarantined()
    assert dovecot.message_count(HELP) == 1
    assert quarantined.raw_s3_key

    assert main(["messages", "discard", quarantined.message_key, "--tenant", TENANT, "--note", "spam"]) == 0
    # Once only, and a discarded message cannot be replayed.
    assert main(["messages", "discard", quarantined.message_key, "--tenant", TENANT]) == 1
    assert main(["messages", "replay", quarantined.message_key, "--tenant", TENANT]) != 0
    capsys.readouterr()

    record = Ledger().get(TENANT, quarantined.message_key)
    assert record is not None and record.outcome is Outcome.QUARANTINED
    assert record.discarded_at and "spam" in record.reason and record.raw_s3_key is None
    bucket = stack.endpoints.environment["RAW_MAIL_BUCKET"]
    with pytest.raises(ClientError):
        aws.client("s3").get_object(Bucket=bucket, Key=quarantined.raw_s3_key)
    _poll_and_drain(stack, reset_runtime())
    assert dovecot.message_count(HELP) == 0
    assert incoming_emails(stack) == []
