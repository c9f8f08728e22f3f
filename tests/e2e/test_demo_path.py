"""The whole path on real components: Dovecot → poll → SQS/S3 → deliver → Dataverse emulator,
and Pending Send → SES (moto) → Sent. The expected counts are worked out by hand from the demo
messages in demo/messages and the two large ones local/demo.py generates."""

from __future__ import annotations

import secrets

import pytest

from emailrouter.local import demo
from emailrouter.local.stack import LocalStack
from emailrouter.runtime import get_runtime

pytestmark = pytest.mark.e2e


def test_demo_organization_end_to_end(full_stack: LocalStack) -> None:
    passwords = {name: secrets.token_urlsafe(12) for name in ("support", "alice")}
    for name, password in passwords.items():
        full_stack.dovecot.add_user(name, password)
    demo.import_demo_tenant(full_stack, passwords)
    demo.verify_sender_domain()
    outbound_ids = demo.seed_organization(full_stack)
    plan = demo.demo_messages()
    for mailbox, raw in plan:
        full_stack.dovecot.deliver(mailbox, raw)

    assert full_stack.runner is not None and full_stack.runner.run_until_idle(rounds=3, max_seconds=150)
    summary = demo.collect_summary(full_stack, len(plan), outbound_ids)

    assert summary.problems == []
    assert summary.delivered == 13
    assert summary.outcomes == {
        "created": 6,
        "correlated": 2,
        "duplicate": 1,
        "filtered": 3,
        "quarantined": 1,
    }
    assert summary.crm_incoming == 8
    assert summary.sent == 2 and summary.ses_messages == 2
    # support deletes after processing: only the oversize message (never fetched) stays there.
    assert full_stack.dovecot.message_count("support") == 1
    # alice keeps her mail at the source.
    assert full_stack.dovecot.message_count("alice") == 3
    runtime = get_runtime()
    assert runtime.tenants.get_health("demo", "support").state == "ok"
    assert runtime.tenants.get_health("demo", "alice").state == "ok"


def test_wrong_password_marks_only_that_mailbox_failing(full_stack: LocalStack) -> None:
    full_stack.dovecot.add_user("support", "right-password")
    full_stack.dovecot.add_user("alice", "alice-password")
    demo.import_demo_tenant(full_stack, {"support": "wrong-password", "alice": "alice-password"})
    demo.seed_organization(full_stack)
    full_stack.dovecot.deliver(
        "support",
        b"From: a@b.example\r\nTo: support@contoso.example\r\nSubject: x\r\nMessage-ID: <s1@b>\r\n\r\nhi\r\n",
    )
    reply = (demo.DEMO_DIR / "messages" / "09-alice-reply.eml").read_bytes()
    full_stack.dovecot.deliver("alice", reply)

    assert full_stack.runner is not None and full_stack.runner.run_until_idle(rounds=1, max_seconds=60)

    runtime = get_runtime()
    support = runtime.tenants.get_health("demo", "support")
    assert support.state == "failing" and "authentication failed" in support.reason
    assert "wrong-password" not in support.reason
    assert runtime.tenants.get_health("demo", "alice").state == "ok"
    assert full_stack.dovecot.message_count("support") == 1
    outcomes = [r.outcome.value for r in runtime.ledger.list_messages("demo") if r.outcome]
    assert outcomes == ["correlated"]
