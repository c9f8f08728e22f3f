"""Crash injection on the send path: 300 CRM emails, the worker killed at every step boundary
in turn (after the claim, after the intent, after SES accepted, before marking Sent). Exactly
one SES send per email; every email ends Sent (or Failed with a reason)."""

from __future__ import annotations

import collections
import os
import time

import pytest
import requests

from emailrouter import aws
from emailrouter.ledger.models import OutboundState
from emailrouter.ledger.store import Ledger
from emailrouter.local.stack import LocalStack
from emailrouter.routing.faults import FaultPoints
from emailrouter.runtime import reset_runtime
from tests.helpers import add_tenant, pending_send, seed_org

EMAILS = int(os.environ.get("CRASH_TEST_EMAILS", "300"))
POINTS = {"after_claim": 5, "after_intent": 7, "after_ses_accepted": 6, "before_mark_sent": 8}


def _create_pending(stack: LocalStack, count: int) -> list[str]:
    session = requests.Session()
    return [
        pending_send(stack, f"Crash test {i}", description=f"<p>message {i}</p>", session=session)
        for i in range(count)
    ]


def _ses_sends_per_email(stack: LocalStack) -> collections.Counter[str]:
    assert stack.endpoints is not None
    data = requests.get(f"{stack.endpoints.aws_endpoint}/moto-api/data.json", timeout=30).json()
    counts: collections.Counter[str] = collections.Counter()
    for message in data.get("ses", {}).get("RawMessage", []):
        for line in message["raw_data"].splitlines():
            if line.lower().startswith("x-emailrouter-id:"):
                counts[line.split(":", 1)[1].strip().split("/")[1]] += 1  # <tenant>/<email id>/<signature>
    return counts


def _sent_in_crm(local_stack: LocalStack) -> set[str]:
    """Ids of the organization's outgoing emails in status Sent."""
    body = requests.get(
        f"{local_stack.endpoints.dataverse_url}/api/data/v9.2/emails?$filter=directioncode eq true and statuscode eq 3&$count=true&$select=activityid",  # type: ignore[union-attr]
        headers={
            "Authorization": f"Bearer {local_stack.endpoints.dataverse_token}",  # type: ignore[union-attr]
            "Prefer": "odata.maxpagesize=5000",
        },
        timeout=30,
    ).json()
    return {row["activityid"] for row in body["value"]}


@pytest.mark.timeout(900)
def test_crash_at_every_step_boundary_never_sends_twice_and_loses_nothing(local_stack: LocalStack) -> None:
    seed_org(local_stack)
    add_tenant(
        local_stack,
        mailboxes=[],
        outbound={"sending_status_delay_minutes": 0.02, "max_attempts": 20, "max_jobs_per_dispatch": 300},
    )
    aws.client("sesv2").create_email_identity(EmailIdentity="acme.example")
    email_ids = _create_pending(local_stack, EMAILS)
    faults = FaultPoints()
    for point, nth in POINTS.items():
        faults.arm_every(point, nth)
    reset_runtime(faults)
    runner = local_stack.runner
    assert runner is not None
    ledger = Ledger()

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        runner.fire_due_schedules(force=True)
        runner.drain(120)
        finished = {
            r.email_id
            for r in ledger.list_outbound("acme")
            if r.state in (OutboundState.SENT, OutboundState.FAILED)
        }
        # Done when the ledger has settled every email and the CRM shows each as Sent (a crash
        # between the two is settled by a later dispatch run).
        if finished >= set(email_ids) and _sent_in_crm(local_stack) >= set(email_ids):
            break
        time.sleep(1.3)  # past the (shortened) sending-status delay, as the minute schedule would be

    assert all(faults.crashed.get(point, 0) > 0 for point in POINTS), faults.crashed
    sends = _ses_sends_per_email(local_stack)
    assert set(sends) == set(email_ids)
    assert max(sends.values()) == 1, [e for e, n in sends.items() if n > 1]
    records = {e: ledger.get_outbound("acme", e) for e in email_ids}
    assert all(r is not None and r.state is OutboundState.SENT for r in records.values()), (
        collections.Counter((r.state if r else None) for r in records.values())
    )
    assert _sent_in_crm(local_stack) >= set(email_ids)
