"""Pending Send → SES (moto, raw) → Sent, through dispatch_outbound and send_outbound."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser
from typing import Any

import requests

from emailrouter import aws
from emailrouter.local.stack import LocalStack
from emailrouter.outbound.ses import ses_assigned_message_id
from emailrouter.routing.faults import FaultPoints
from emailrouter.runtime import reset_runtime
from tests.helpers import add_tenant, crm_get, pending_send, seed_org


def _pending_send(stack: LocalStack, subject: str, to: str = "carl@client.example") -> str:
    return pending_send(stack, subject, to)


def _ses_sent(stack: LocalStack) -> list[dict[str, Any]]:
    assert stack.endpoints is not None
    data = requests.get(f"{stack.endpoints.aws_endpoint}/moto-api/data.json", timeout=10).json()
    sent: list[dict[str, Any]] = []
    for service in ("ses", "sesv2"):
        for name, items in (data.get(service) or {}).items():
            if "Message" in name and isinstance(items, list):
                sent += items
    return sent


def _prepare(stack: LocalStack) -> None:
    seed_org(stack)
    add_tenant(stack)
    aws.client("sesv2").create_email_identity(EmailIdentity="acme.example")


def test_pending_send_email_goes_out_once_and_is_marked_sent(local_stack: LocalStack) -> None:
    _prepare(local_stack)
    email_id = _pending_send(local_stack, "Your order")

    assert local_stack.runner is not None and local_stack.runner.run_until_idle(rounds=2, max_seconds=60)

    sent = _ses_sent(local_stack)
    assert len(sent) == 1
    message = BytesParser(policy=policy.default).parsebytes(
        sent[0]["raw_data"].encode() if isinstance(sent[0]["raw_data"], str) else sent[0]["raw_data"]
    )
    assert message["Subject"] == "Your order"
    assert message["To"].addresses[0].addr_spec == "carl@client.example"
    assert message["From"].addresses[0].addr_spec == "uma@acme.example"
    row = crm_get(local_stack, f"emails({email_id})?$select=statecode,statuscode,messageid")
    assert (row["statecode"], row["statuscode"]) == (1, 3)
    # Once SES accepted it, the CRM email keeps the Message-ID SES gave it (what replies carry).
    assert row["messageid"] == ses_assigned_message_id(sent[0]["id"], "eu-west-1")


def test_crash_after_ses_accepted_never_sends_twice(local_stack: LocalStack) -> None:
    _prepare(local_stack)
    email_id = _pending_send(local_stack, "Only once")
    faults = FaultPoints()
    faults.arm("before_mark_sent")
    reset_runtime(faults)

    assert local_stack.runner is not None and local_stack.runner.run_until_idle(rounds=2, max_seconds=60)

    assert local_stack.runner.stats.crashed_invocations == 1
    assert len(_ses_sent(local_stack)) == 1
    row = crm_get(local_stack, f"emails({email_id})?$select=statecode,statuscode")
    assert (row["statecode"], row["statuscode"]) == (1, 3)


def test_unverified_sender_marks_email_failed_with_reason(local_stack: LocalStack) -> None:
    from emailrouter.ledger.store import Ledger

    seed_org(local_stack)
    add_tenant(local_stack)  # no SES identity verified
    email_id = _pending_send(local_stack, "Will bounce at SES")

    assert local_stack.runner is not None and local_stack.runner.run_until_idle(rounds=2, max_seconds=60)

    assert _ses_sent(local_stack) == []
    row = crm_get(local_stack, f"emails({email_id})?$select=statecode,statuscode")
    assert (row["statecode"], row["statuscode"]) == (0, 8)
    record = Ledger().get_outbound("acme", email_id)
    assert record is not None and "MessageRejected" in record.reason


def test_tenant_tracking_tokens_go_on_the_subject_and_the_crm_email(local_stack: LocalStack) -> None:
    seed_org(local_stack)
    add_tenant(local_stack, tracking_token={"enabled": True, "prefix": "CRM", "base": 0})
    aws.client("sesv2").create_email_identity(EmailIdentity="acme.example")
    first = _pending_send(local_stack, "Quote A")
    second = _pending_send(local_stack, "Quote B")

    assert local_stack.runner is not None and local_stack.runner.run_until_idle(rounds=2, max_seconds=60)

    subjects = sorted(
        str(BytesParser(policy=policy.default).parsebytes(m["raw_data"].encode())["Subject"])
        for m in _ses_sent(local_stack)
    )
    assert subjects == ["Quote A CRM:0001001", "Quote B CRM:0001002"] or subjects == [
        "Quote A CRM:0001002",
        "Quote B CRM:0001001",
    ]
    tokens = {
        crm_get(local_stack, f"emails({e})?$select=trackingtoken")["trackingtoken"] for e in (first, second)
    }
    assert tokens == {"CRM:0001001", "CRM:0001002"}
