"""`emailrouter ingest` as an MTA pipe runs it, and the commands an operator scripts: exit codes
follow sendmail's sysexits.h (0 accepted, 64 usage, 65 not mail, 67 unknown tenant or mailbox,
75 try again later, 78 configuration), so Postfix or Exim retries, bounces or accepts rightly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emailrouter.ledger.models import Outcome
from emailrouter.ledger.store import Ledger
from emailrouter.local.stack import LocalStack
from tests.helpers import TENANT, add_tenant, incoming_emails, raw_mail, seed_org


def _cli(stack: LocalStack, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """The command in its own process, finding the local stack through its stack.json only."""
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_TABLE", "_QUEUE_URL", "_BUCKET"))}
    env["EMAILROUTER_STACK_FILE"] = str(stack.workdir / "stack.json")
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    return subprocess.run(
        [sys.executable, "-m", "emailrouter.cli.main", *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        env=env,
    )


@pytest.fixture
def stack(local_stack: LocalStack) -> LocalStack:
    seed_org(local_stack)
    add_tenant(local_stack, max_message_bytes=4096)
    return local_stack


def _one_line(result: subprocess.CompletedProcess[bytes]) -> str:
    text = result.stderr.decode()
    assert text.count("\n") == 1 and "Traceback" not in text, text
    return text


def test_accepted_mail_exits_0_and_reaches_the_crm(stack: LocalStack) -> None:
    result = _cli(
        stack, "ingest", "--tenant", TENANT, "--mailbox", "help", stdin=raw_mail(message_id="<ok@c.example>")
    )

    assert result.returncode == 0, result.stderr
    assert [e["messageid"] for e in incoming_emails(stack)] == ["<ok@c.example>"]


def test_quarantined_mail_exits_0_because_its_raw_is_kept(stack: LocalStack) -> None:
    raw = raw_mail(message_id="<big@c.example>", body="x" * 8000)

    result = _cli(stack, "ingest", "--tenant", TENANT, "--mailbox", "help", "--json", stdin=raw)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outcome"] == "quarantined"
    assert [r.outcome for r in Ledger().list_messages(TENANT)] == [Outcome.QUARANTINED]


@pytest.mark.parametrize("raw", [b"", b"  \r\n\t\n\n", b"\n"], ids=["empty", "whitespace", "blank-line"])
def test_input_without_a_message_exits_65_and_leaves_nothing(stack: LocalStack, raw: bytes) -> None:
    result = _cli(stack, "ingest", "--tenant", TENANT, "--mailbox", "help", stdin=raw)

    assert result.returncode == 65  # EX_DATAERR
    _one_line(result)
    assert list(Ledger().list_messages(TENANT)) == []


@pytest.mark.parametrize(
    "args",
    [
        ["ingest", "--tenant", "nobody", "--mailbox", "help"],
        ["ingest", "--tenant", TENANT, "--mailbox", "nobody"],
        ["ingest", "--tenant", TENANT, "--mailbox", "nobody", "--enqueue"],
        ["mailboxes", "poll", "--tenant", TENANT, "--mailbox", "nobody"],
        ["mailboxes", "poll", "--tenant", "nobody", "--mailbox", "help"],
        ["tenants", "show", "nobody"],
    ],
    ids=["ingest-tenant", "ingest-mailbox", "enqueue-mailbox", "poll-mailbox", "poll-tenant", "show-tenant"],
)
def test_unknown_tenant_or_mailbox_exits_67_with_one_plain_line(stack: LocalStack, args: list[str]) -> None:
    result = _cli(stack, *args, stdin=raw_mail())

    assert result.returncode == 67  # EX_NOUSER
    line = _one_line(result)
    assert "nobody" in line and "KeyError" not in line


def test_crm_outage_exits_75_and_enqueue_accepts_the_message_for_later(stack: LocalStack) -> None:
    stack.dataverse.set_faults([{"kind": "503", "retry_after": 0}])
    direct = _cli(
        stack,
        "ingest",
        "--tenant",
        TENANT,
        "--mailbox",
        "help",
        stdin=raw_mail(message_id="<retry@c.example>"),
    )
    queued = _cli(
        stack,
        "ingest",
        "--tenant",
        TENANT,
        "--mailbox",
        "help",
        "--enqueue",
        stdin=raw_mail(message_id="<outage@c.example>"),
    )

    assert direct.returncode == 75, direct.stderr  # EX_TEMPFAIL: the MTA keeps it and retries
    _one_line(direct)
    assert queued.returncode == 0, queued.stderr
    stack.dataverse.set_faults([])
    assert stack.runner is not None and stack.runner.drain(60)
    assert [e["messageid"] for e in incoming_emails(stack)] == ["<outage@c.example>"]


def test_usage_errors_exit_64(stack: LocalStack) -> None:
    result = _cli(stack, "ingest", "--mailbox", "help")

    assert result.returncode == 64  # EX_USAGE


def test_unreadable_input_file_exits_66(stack: LocalStack, tmp_path: Path) -> None:
    result = _cli(stack, "ingest", "--tenant", TENANT, "--mailbox", "help", str(tmp_path / "missing.eml"))

    assert result.returncode == 66  # EX_NOINPUT
    _one_line(result)


def test_missing_deployment_exits_78(stack: LocalStack, tmp_path: Path) -> None:
    env_stack = LocalStack.__new__(LocalStack)
    env_stack.workdir = tmp_path  # no stack.json there
    result = _cli(env_stack, "ingest", "--tenant", TENANT, "--mailbox", "help", stdin=raw_mail())

    assert result.returncode == 78  # EX_CONFIG
    _one_line(result)


def test_replay_that_does_not_deliver_exits_non_zero_and_one_that_does_exits_0(stack: LocalStack) -> None:
    raw = raw_mail(message_id="<replay@c.example>", body="y" * 8000)
    first = _cli(stack, "ingest", "--tenant", TENANT, "--mailbox", "help", "--json", stdin=raw)
    key = json.loads(first.stdout)["key"]

    still = _cli(stack, "messages", "replay", key, "--tenant", TENANT, "--json")
    add_tenant(stack, max_message_bytes=1024 * 1024)  # the operator's fix
    again = _cli(stack, "messages", "replay", json.loads(still.stdout)["key"], "--tenant", TENANT, "--json")

    assert json.loads(still.stdout)["outcome"] == "quarantined"
    assert still.returncode == 65  # EX_DATAERR: the message still cannot be delivered
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["outcome"] == "created"
    assert [e["messageid"] for e in incoming_emails(stack)] == ["<replay@c.example>"]


def test_a_replayed_message_is_delivered_once_and_a_second_replay_is_refused(stack: LocalStack) -> None:
    raw = raw_mail(message_id="<replay-twice@c.example>", body="z" * 8000)
    key = json.loads(
        _cli(stack, "ingest", "--tenant", TENANT, "--mailbox", "help", "--json", stdin=raw).stdout
    )["key"]
    add_tenant(stack, max_message_bytes=1024 * 1024)  # the operator's fix
    first = _cli(stack, "messages", "replay", key, "--tenant", TENANT, "--json")
    assert first.returncode == 0, first.stderr
    delivered = json.loads(first.stdout)
    assert delivered["outcome"] == "created"

    second = _cli(stack, "messages", "replay", key, "--tenant", TENANT, "--json")
    again = _cli(stack, "messages", "replay", delivered["key"], "--tenant", TENANT, "--json")

    for refused in (second, again):
        assert refused.returncode == 1 and refused.stdout == b"", refused
        assert delivered["key"] in _one_line(refused)
    assert [e["messageid"] for e in incoming_emails(stack)] == ["<replay-twice@c.example>"]
    record = Ledger().get(TENANT, delivered["key"])
    assert record is not None and record.outcome is Outcome.CREATED
