"""SES events through SNS → SQS → ses_events: a hard bounce marks the CRM email Failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import boto3
import pytest

from emailrouter import aws, clock
from emailrouter.config import get_settings
from emailrouter.ledger.store import Ledger
from emailrouter.local.sqs_events import sqs_event
from emailrouter.local.stack import LocalStack
from emailrouter.outbound.events import parse_ses_event
from emailrouter.outbound.router_id import sign
from tests.functional.test_send_outbound import _pending_send, _prepare
from tests.helpers import add_tenant, crm_get, seed_org

CARL = "carl@client.example"
SAMPLE = Path(__file__).resolve().parents[2] / "events" / "ses_events.json"


def _bounce_for(email_id: str, ses_message_id: str) -> str:
    sns = json.loads(json.loads(SAMPLE.read_text())["Records"][0]["body"])
    event = json.loads(sns["Message"])
    event["mail"]["messageId"] = ses_message_id
    event["mail"]["tags"] = {"tenant_id": ["acme"], "email_id": [email_id]}
    event["mail"]["headers"] = [h for h in event["mail"]["headers"] if h["name"] != "X-EmailRouter-Id"]
    event["mail"]["destination"] = ["carl@client.example"]
    event["bounce"]["bouncedRecipients"][0]["emailAddress"] = "carl@client.example"
    return json.dumps(event)


def test_permanent_bounce_marks_the_sent_email_failed_once(local_stack: LocalStack) -> None:
    _prepare(local_stack)
    email_id = _pending_send(local_stack, "Will bounce later")
    assert local_stack.runner is not None and local_stack.runner.run_until_idle(rounds=2, max_seconds=60)
    record = Ledger().get_outbound("acme", email_id)
    assert record is not None and record.ses_message_id

    topic = local_stack.endpoints.resources["SesEventsTopic"]  # type: ignore[union-attr]
    message = _bounce_for(email_id, record.ses_message_id)
    sns = aws.client("sns")
    sns.publish(TopicArn=topic, Message=message)
    sns.publish(TopicArn=topic, Message=message)  # SNS delivers at least once
    assert local_stack.runner.drain(30)

    row = crm_get(local_stack, f"emails({email_id})?$select=statecode,statuscode,description")
    assert (row["statecode"], row["statuscode"]) == (0, 8)
    assert row["description"].startswith("<p>Hello <b>Carl</b></p>")  # the body is kept
    assert row["description"].count("Delivery failed") == 1  # once, though SNS delivered twice
    assert "550 5.1.1 user unknown" in row["description"]
    after = Ledger().get_outbound("acme", email_id)
    assert after is not None and after.last_event == "Bounce"
    assert local_stack.runner.stats.by_function.get("SesEventsFunction", 0) >= 1
    assert local_stack.runner.stats.failed_records == 0


def test_hard_bounced_recipient_is_suppressed_for_the_tenant(local_stack: LocalStack) -> None:
    _prepare(local_stack)
    first = _pending_send(local_stack, "First")
    assert local_stack.runner is not None and local_stack.runner.run_until_idle(rounds=2, max_seconds=60)
    record = Ledger().get_outbound("acme", first)
    assert record is not None and record.ses_message_id
    topic = local_stack.endpoints.resources["SesEventsTopic"]  # type: ignore[union-attr]
    aws.client("sns").publish(TopicArn=topic, Message=_bounce_for(first, record.ses_message_id))
    assert local_stack.runner.drain(30)

    second = _pending_send(local_stack, "Second, to the same address")
    assert local_stack.runner.run_until_idle(rounds=2, max_seconds=60)

    row = crm_get(local_stack, f"emails({second})?$select=statecode,statuscode")
    assert (row["statecode"], row["statuscode"]) == (0, 8)
    failed = Ledger().get_outbound("acme", second)
    assert (
        failed is not None and "suppression list" in failed.reason and "carl@client.example" in failed.reason
    )


def test_event_without_tags_names_an_email_only_by_a_signed_router_id(
    aws: boto3.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SES copies our headers into its events; without the message tags, X-EmailRouter-Id is
    believed only when it carries the deployment key's signature for those ids."""
    secrets = aws.client("secretsmanager")
    key = "k" * 40
    arn = secrets.create_secret(Name="router-id-key-events-test", SecretString=key)["ARN"]
    monkeypatch.setenv("ROUTER_ID_KEY_SECRET", arn)
    get_settings.cache_clear()

    def event_with(header: str) -> str:
        sns = json.loads(json.loads(SAMPLE.read_text())["Records"][0]["body"])
        event = json.loads(sns["Message"])
        event["mail"]["tags"] = {}
        event["mail"]["headers"] = [{"name": "X-EmailRouter-Id", "value": header}]
        return json.dumps(event)

    signed = parse_ses_event(event_with(" " + sign("acme", "e-1", key.encode())))
    unsigned = parse_ses_event(event_with("acme/e-1"))
    other_key = parse_ses_event(event_with(sign("acme", "e-1", b"another key of forty characters....")))
    get_settings.cache_clear()

    assert (signed.tenant_id, signed.email_id) == ("acme", "e-1")
    assert (unsigned.tenant_id, unsigned.email_id) == (None, None)
    assert (other_key.tenant_id, other_key.email_id) == (None, None)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The `emailrouter` command against the running local stack (its environment is inherited)."""
    return subprocess.run(
        [sys.executable, "-m", "emailrouter.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )


def test_suppression_lasts_the_tenants_days_and_can_be_listed_and_lifted(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hard bounce suppresses Carl for the tenant's outbound.suppression_days, not forever;
    `emailrouter suppressions list` shows it with its reason and end, `lift` ends it now, and
    mail to Carl goes out again."""
    seed_org(local_stack)
    add_tenant(local_stack, outbound={"suppression_days": 7})
    aws.client("sesv2").create_email_identity(EmailIdentity="acme.example")
    first = _pending_send(local_stack, "First")
    assert local_stack.runner is not None and local_stack.runner.run_until_idle(rounds=2, max_seconds=60)
    record = Ledger().get_outbound("acme", first)
    assert record is not None and record.ses_message_id
    topic = local_stack.endpoints.resources["SesEventsTopic"]  # type: ignore[union-attr]
    bounced_at = time.time()
    aws.client("sns").publish(TopicArn=topic, Message=_bounce_for(first, record.ses_message_id))
    assert local_stack.runner.drain(30)

    listed = _cli("suppressions", "list", "--tenant", "acme", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [row["address"] for row in rows] == [CARL]
    assert "550 5.1.1" in rows[0]["reason"]
    expires = datetime.fromisoformat(rows[0]["expires_at"].replace("Z", "+00:00")).timestamp()
    assert abs(expires - (bounced_at + 7 * 86400)) < 120
    assert Ledger().suppressed("acme", [CARL]) == {CARL}
    # Eight days later (DynamoDB deletes expired items only eventually): no longer suppressed.
    later = bounced_at + 8 * 86400
    monkeypatch.setattr(clock.time, "time", lambda: later)
    assert Ledger().suppressed("acme", [CARL]) == set()
    monkeypatch.undo()

    lifted = _cli("suppressions", "lift", CARL, "--tenant", "acme")
    again = _cli("suppressions", "lift", CARL, "--tenant", "acme")
    second = _pending_send(local_stack, "Second, to the same address")
    assert local_stack.runner.run_until_idle(rounds=2, max_seconds=60)

    assert lifted.returncode == 0, lifted.stderr
    assert again.returncode == 1 and "not suppressed" in again.stderr
    assert json.loads(_cli("suppressions", "list", "--tenant", "acme", "--json").stdout) == []
    row = crm_get(local_stack, f"emails({second})?$select=statecode,statuscode")
    assert (row["statecode"], row["statuscode"]) == (1, 3)  # Sent


@pytest.mark.timeout(300)
def test_a_bounce_for_a_hung_crm_ends_within_the_invocations_remaining_time_and_comes_back(
    local_stack: LocalStack,
) -> None:
    _prepare(local_stack)
    email_id = _pending_send(local_stack, "Bounces while the CRM hangs")
    runner, endpoints = local_stack.runner, local_stack.endpoints
    assert runner is not None and endpoints is not None and runner.run_until_idle(rounds=2, max_seconds=60)
    record = Ledger().get_outbound("acme", email_id)
    assert record is not None and record.ses_message_id
    aws.client("sns").publish(
        TopicArn=endpoints.resources["SesEventsTopic"], Message=_bounce_for(email_id, record.ses_message_id)
    )
    binding = next(b for b in runner.queues if b.function == "SesEventsFunction")
    assert runner.stats.by_function.get("SesEventsFunction", 0) >= 1  # warm: SES's Send event came
    messages = aws.client("sqs").receive_message(
        QueueUrl=binding.queue_url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=600,
        AttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    )["Messages"]
    assert len(messages) == 1
    local_stack.dataverse.set_faults([{"kind": "latency", "delay_ms": 8_000}])

    started = time.monotonic()
    response = runner.invoke(
        "SesEventsFunction", sqs_event(messages, binding.queue_arn, endpoints.region), timeout_seconds=6
    )
    elapsed = time.monotonic() - started

    assert elapsed < 6
    assert [item["itemIdentifier"] for item in response["batchItemFailures"]] == [messages[0]["MessageId"]]
