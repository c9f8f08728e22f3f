"""A tenant disabled while its work is queued: neither worker acts for it, and nothing is lost.

Inbound mail already queued waits (queued again, delayed) and is delivered once the tenant is
enabled again; a send job already queued is not sent, and the email goes out after re-enabling.
Workers re-read tenant configuration at most every 30 s; the tests start a new runtime instead
of waiting for that.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from emailrouter import aws
from emailrouter.clock import iso
from emailrouter.ledger.store import Ledger
from emailrouter.local.sqs_events import schedule_event
from emailrouter.local.stack import LocalStack
from emailrouter.runtime import reset_runtime
from emailrouter.tenancy.models import TenantConfig
from emailrouter.tenancy.store import TenantStore
from tests.helpers import (
    TENANT,
    add_tenant,
    crm_get,
    enqueue_inbound,
    incoming_emails,
    pending_send,
    raw_mail,
    seed_org,
)


def _set_enabled(tenant: TenantConfig, enabled: bool) -> None:
    TenantStore().save(tenant.model_copy(update={"enabled": enabled}))
    reset_runtime()  # as a warm worker sees it once its tenant cache expires


def _binding(stack: LocalStack, function: str) -> Any:
    assert stack.runner is not None
    return next(b for b in stack.runner.queues if b.function == function)


def test_queued_inbound_mail_of_a_disabled_tenant_waits_and_is_delivered_once_it_is_enabled(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISABLED_TENANT_RETRY_SECONDS", "1")
    seed_org(local_stack)
    tenant = add_tenant(local_stack)
    enqueue_inbound(local_stack, raw_mail(subject="While disabled", message_id="<held@client.example>"))
    _set_enabled(tenant, False)
    runner = local_stack.runner
    assert runner is not None

    assert runner.poll_queue(_binding(local_stack, "DeliverInboundFunction")) == 1

    assert incoming_emails(local_stack) == []
    assert list(Ledger().list_messages(TENANT)) == []  # no outcome: it is not finished
    assert runner.stats.failed_records == 0 and runner.stats.crashed_invocations == 0

    _set_enabled(tenant, True)
    time.sleep(1.5)  # its delay on the queue
    assert runner.drain(30)

    assert [e["subject"] for e in incoming_emails(local_stack)] == ["While disabled"]
    assert [r.outcome.value for r in Ledger().list_messages(TENANT) if r.outcome] == ["created"]


def test_a_queued_send_job_of_a_disabled_tenant_is_not_sent_and_goes_out_once_it_is_enabled(
    local_stack: LocalStack,
) -> None:
    seed_org(local_stack)
    tenant = add_tenant(local_stack)
    aws.client("sesv2").create_email_identity(EmailIdentity="acme.example")
    email_id = pending_send(local_stack, "Held back")
    runner, endpoints = local_stack.runner, local_stack.endpoints
    assert runner is not None and endpoints is not None
    dispatch = schedule_event("dispatch-outbound", endpoints.region, iso())
    assert runner.invoke("DispatchOutboundFunction", dispatch)["enqueued"] == 1
    _set_enabled(tenant, False)

    assert runner.poll_queue(_binding(local_stack, "SendOutboundFunction")) == 1

    assert _ses_sent(local_stack) == 0
    assert crm_get(local_stack, f"emails({email_id})?$select=statuscode")["statuscode"] == 6  # Pending Send

    _set_enabled(tenant, True)
    assert runner.invoke("DispatchOutboundFunction", dispatch)["enqueued"] == 1  # at once, not in 30 min
    assert runner.poll_queue(_binding(local_stack, "SendOutboundFunction")) == 1

    assert _ses_sent(local_stack) == 1
    assert crm_get(local_stack, f"emails({email_id})?$select=statuscode")["statuscode"] == 3  # Sent


def _ses_sent(stack: LocalStack) -> int:
    assert stack.endpoints is not None
    data = requests.get(f"{stack.endpoints.aws_endpoint}/moto-api/data.json", timeout=10).json()
    return len((data.get("ses") or {}).get("RawMessage", []))
