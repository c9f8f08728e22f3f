"""poll_mailbox's approval check asks the CRM within the invocation's remaining time."""

from __future__ import annotations

import time
from typing import Any

import pytest

from emailrouter import aws
from emailrouter.clock import iso
from emailrouter.local.sqs_events import sqs_event
from emailrouter.local.stack import LocalStack
from emailrouter.queues.messages import PollJob
from emailrouter.queues.sender import QueueSender
from emailrouter.tenancy.store import TenantStore
from tests.helpers import TENANT, add_tenant, seed_org


@pytest.mark.timeout(300)
def test_an_approval_check_against_a_hung_crm_ends_within_the_invocations_remaining_time(
    local_stack: LocalStack,
) -> None:
    seed_org(local_stack)
    add_tenant(
        local_stack,
        mailboxes=[
            {
                "mailbox_id": "help",
                "address": "help@acme.example",
                "protocol": "pop3",
                "host": "127.0.0.1",
                "port": 1,
                "security": "none",
                "credential_secret": f"emailrouter/{TENANT}/help",
                "require_approval": True,
            }
        ],
    )
    runner, endpoints = local_stack.runner, local_stack.endpoints
    assert runner is not None and endpoints is not None
    binding = next(b for b in runner.queues if b.function == "PollMailboxFunction")

    def job_event(job_id: str) -> dict[str, Any]:
        job = PollJob(
            tenant_id=TENANT, mailbox_id="help", job_id=f"{TENANT}/help/{job_id}", scheduled_at=iso()
        )
        QueueSender().send(binding.queue_url, TENANT, [job])
        messages = aws.client("sqs").receive_message(
            QueueUrl=binding.queue_url,
            MaxNumberOfMessages=1,
            VisibilityTimeout=600,
            AttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )["Messages"]
        return sqs_event(messages, binding.queue_arn, endpoints.region)

    runner.invoke("PollMailboxFunction", job_event("warm"))  # a warm container: loaded, clients built
    local_stack.dataverse.set_faults([{"kind": "latency", "delay_ms": 8_000}])
    event = job_event("hung")

    started = time.monotonic()
    runner.invoke("PollMailboxFunction", event, timeout_seconds=6)
    elapsed = time.monotonic() - started

    assert elapsed < 6
    health = TenantStore().get_health(TENANT, "help")
    assert health.state == "failing"
    assert health.reason.startswith("approval could not be checked") and "Timeout" in health.reason
