"""The whole path on real components: Dovecot → poll → SQS/S3 → deliver → Dataverse emulator,
and Pending Send → SES (moto) → Sent. The expected counts are worked out by hand from the demo
messages in demo/messages and the two large ones local/demo.py generates."""

from __future__ import annotations

import secrets

import pytest

from emailrouter.local import demo
from emailrouter.local.stack import LocalStack
from emailrouter.runtime import get_runtime
from tests.helpers import ledger_source_records

pytestmark = pytest.mark.e2e

# Subject → outcome of every message in demo/messages and the two generated ones.
EXPECTED_OUTCOMES = {
    "Printer on floor 3 is jammed again": "created",
    "Question about invoice INV-7781": "created",
    "Do you ship to Norway?": "created",  # an unknown sender: a new contact
    "Automatic reply: Your order": "filtered",  # Auto-Submitted: auto-replied
    "Signed delivery note": "created",
    "This week's deals": "filtered",  # Precedence: bulk, List-Unsubscribe
    "F\u00fcr M\u00fcller: R\u00fcckruf erbeten": "created",  # support tracks all mail
    "RE: Quote 1001": "correlated",  # In-Reply-To the quote sent from the CRM
    "Interested in your product": "filtered",  # alice tracks responses only (demo/tenant.yaml)
    "Re: Quote 1001 - purchase order": "correlated",  # References the quote
    # "Scanned archive (too big)": over the size limit, never fetched, so the ledger knows it by
    # its source ref alone (no subject).
    "": "quarantined",
    "Site photos": "created",
}


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

    # The ledger, read directly: each message's own outcome, worked out from its file.
    runtime = get_runtime()
    records = list(runtime.ledger.list_messages("demo"))
    assert sorted((r.subject, r.outcome.value if r.outcome else r.status) for r in records) == sorted(
        EXPECTED_OUTCOMES.items()
    )
    (oversize,) = [r for r in records if r.outcome and r.outcome.value == "quarantined"]
    assert oversize.mailbox_id == "support" and oversize.message_key.startswith("oversize-support-")
    # The reply that reached both mailboxes: one message, two arrivals, each with its source record.
    (reply,) = [r for r in records if r.message_id == "<re-quote-1001@fabrikam.example>"]
    arrivals = [
        s["mailbox_id"] for s in ledger_source_records("demo") if s["message_key"] == reply.message_key
    ]
    assert sorted(arrivals) == ["alice", "support"]
    # The organization, read directly: one incoming email per tracked message, the replies
    # regarding the account the quote was about, each pointing back at its ledger record.
    incoming = {
        str(e["subject"]): e for e in full_stack.dataverse.rows("emails") if e.get("directioncode") is False
    }
    assert sorted(incoming) == sorted(
        s for s, o in EXPECTED_OUTCOMES.items() if o in ("created", "correlated")
    )
    for subject in ("RE: Quote 1001", "Re: Quote 1001 - purchase order"):
        assert incoming[subject].get("_regardingobjectid_value") == demo.FABRIKAM, incoming[subject]
    tracked = {
        r.subject: r.crm_email_id
        for r in records
        if r.outcome and r.outcome.value in ("created", "correlated")
    }
    assert {s: str(e["activityid"]) for s, e in incoming.items()} == tracked
    sent = {
        e["activityid"]: e.get("statuscode")
        for e in full_stack.dataverse.rows("emails")
        if e["activityid"] in outbound_ids
    }
    assert sent == dict.fromkeys(outbound_ids, 3)

    summary = demo.collect_summary(full_stack, len(plan), outbound_ids)

    # What the demo prints agrees (its duplicate count is derived: arrivals minus records).
    assert summary.problems == []
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
