"""`status`, `tenants list/show`, `mailboxes list`, `messages list/show` print what the stack holds.

Each command runs in its own process against the local stack (through stack.json only); what
it prints is compared with what the test put into the stack: the tenant it stored, the mail it
delivered (read back from the organization), the health it recorded, the queue it filled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from emailrouter import aws
from emailrouter.local.stack import LocalStack
from emailrouter.tenancy.models import MailboxHealth
from emailrouter.tenancy.store import TenantStore
from tests.helpers import TENANT, add_tenant, enqueue_inbound, incoming_emails, raw_mail, seed_org


def _cli(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_TABLE", "_URL", "_BUCKET"))}
    env["EMAILROUTER_STACK_FILE"] = str(stack.workdir / "stack.json")
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    return subprocess.run(
        [sys.executable, "-m", "emailrouter.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def _json(stack: LocalStack, *args: str) -> Any:
    result = _cli(stack, *args, "--json")
    assert result.returncode in (0, 1), result.stderr  # status exits 1 while something fails
    return json.loads(result.stdout)


def test_the_read_commands_print_what_the_stack_holds(local_stack: LocalStack) -> None:
    assert local_stack.runner is not None and local_stack.endpoints is not None
    seed_org(local_stack)
    add_tenant(local_stack, name="Acme Ltd")
    enqueue_inbound(
        local_stack, raw_mail(subject="Broken printer", message_id="<p1@client.example>"), "help", "r1"
    )
    enqueue_inbound(
        local_stack,
        raw_mail(
            subject="Out of office",
            message_id="<ooo@client.example>",
            extra_headers="Auto-Submitted: auto-replied",
        ),
        "help",
        "r2",
    )
    assert local_stack.runner.drain(60)
    (email,) = incoming_emails(local_stack)
    TenantStore().save_health(
        TENANT, "help", MailboxHealth(state="failing", reason="unreachable: refused", consecutive_failures=2)
    )
    # Two messages waiting on the inbound queue (no worker runs while the commands read).
    resources = local_stack.endpoints.resources
    for n in range(2):
        aws.client("sqs").send_message(
            QueueUrl=resources["InboundQueue"], MessageBody=f"{n}", MessageGroupId=TENANT
        )

    tenants = _json(local_stack, "tenants", "list")
    assert tenants == [
        {
            "tenant": TENANT,
            "name": "Acme Ltd",
            "enabled": True,
            "mailboxes": 1,
            "crm": local_stack.endpoints.dataverse_url,
        }
    ]
    shown = _json(local_stack, "tenants", "show", TENANT)
    assert (shown["tenant_id"], shown["name"]) == (TENANT, "Acme Ltd")
    assert [(m["mailbox_id"], m["address"]) for m in shown["mailboxes"]] == [("help", "help@acme.example")]

    (mailbox,) = _json(local_stack, "mailboxes", "list", "--tenant", TENANT)
    assert (mailbox["mailbox"], mailbox["health"], mailbox["reason"]) == (
        "help",
        "failing",
        "unreachable: refused",
    )

    listed = _json(local_stack, "messages", "list", "--tenant", TENANT)
    assert sorted((r["subject"], r["outcome"], r["crm_email_id"]) for r in listed) == [
        ("Broken printer", "created", email["activityid"]),
        ("Out of office", "filtered", ""),
    ]
    (filtered,) = _json(local_stack, "messages", "list", "--tenant", TENANT, "--outcome", "filtered")
    assert filtered["subject"] == "Out of office"
    created_key = next(r["key"] for r in listed if r["subject"] == "Broken printer")
    record = _json(local_stack, "messages", "show", created_key, "--tenant", TENANT)
    assert (record["message_id"], record["crm_email_id"], record["source_ref"]) == (
        "<p1@client.example>",
        email["activityid"],
        "r1",
    )
    text = _cli(local_stack, "messages", "list", "--tenant", TENANT)
    assert text.returncode == 0 and "Broken printer" in text.stdout and "Out of office" in text.stdout

    status = _cli(local_stack, "status", "--json")
    assert status.returncode == 1  # a mailbox is failing
    held = json.loads(status.stdout)
    assert held["queues"]["inbound"] == {"depth": 2, "dlq": 0}
    assert held["mailboxes"] == [
        {"tenant": TENANT, "mailbox": "help", "health": "failing", "reason": "unreachable: refused"}
    ]
    assert [c["tenant"] for c in held["crm"]] == [TENANT]
