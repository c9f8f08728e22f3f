"""`emailrouter dlq list`, `dlq redrive` and `status` see every dead-letter queue of the stack.

The CLI runs as an operator runs it, in its own process, against the local stack through its
stack.json. The expected queues come from template.yaml: every queue no other queue or schedule
redrives to is a work queue, every other one a DLQ (the schedules' DLQ included).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from emailrouter import aws
from emailrouter.local.stack import LocalStack
from emailrouter.local.template import load_stack_template

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


def _cli_name(logical_id: str) -> str:
    """SesEventsQueue → ses-events, SchedulerDLQ → scheduler."""
    stem = re.sub(r"(Queue|DLQ)$", "", logical_id)
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", stem).lower()


def _cli(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_TABLE", "_URL", "_BUCKET"))}
    env["EMAILROUTER_STACK_FILE"] = str(stack.workdir / "stack.json")
    return subprocess.run(
        [sys.executable, "-m", "emailrouter.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_every_dead_letter_queue_is_listed_shown_in_status_and_redrivable(local_stack: LocalStack) -> None:
    template = load_stack_template(TEMPLATE)
    dead_letter_ids = {q.logical_id for q in template.queues.values() if q.dlq_logical_id is None}
    fed_by = {q.dlq_logical_id: q.logical_id for q in template.queues.values() if q.dlq_logical_id}
    assert {"SesEventsDLQ", "SchedulerDLQ"} <= dead_letter_ids
    # One message in each DLQ, as five failed receives (or a failed schedule) would leave it.
    resources = local_stack.endpoints.resources  # type: ignore[union-attr]
    sqs = aws.client("sqs")
    for logical_id in dead_letter_ids:
        sqs.send_message(QueueUrl=resources[logical_id], MessageBody=json.dumps({"from": logical_id}))

    listed = _cli(local_stack, "dlq", "list", "--json")

    assert listed.returncode == 0, listed.stderr
    expected = {
        _cli_name(fed_by.get(logical_id, logical_id)): {"dlq_depth": 1, "redrive": logical_id in fed_by}
        for logical_id in dead_letter_ids
    }
    assert {
        row["queue"]: {"dlq_depth": row["dlq_depth"], "redrive": row["redrive"]}
        for row in json.loads(listed.stdout)
    } == expected

    status = _cli(local_stack, "status", "--json")
    assert status.returncode == 1  # a DLQ is not empty
    queues = json.loads(status.stdout)["queues"]
    assert {name: row["dlq"] for name, row in queues.items()} == {name: 1 for name in expected}

    moved = _cli(local_stack, "dlq", "redrive", "ses-events", "--json")
    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout) == {"queue": "ses-events", "moved": 1}
    (message,) = sqs.receive_message(QueueUrl=resources["SesEventsQueue"], WaitTimeSeconds=1)["Messages"]
    assert json.loads(message["Body"]) == {"from": "SesEventsDLQ"}
    refused = _cli(local_stack, "dlq", "redrive", "scheduler")
    assert refused.returncode == 64 and "scheduler" in refused.stderr  # EX_USAGE: nothing to redrive into


def _bodies_in(sqs: object, url: str) -> list[str]:
    """Every message body on the queue, taken off it."""
    bodies: list[str] = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)  # type: ignore[attr-defined]
        if not batch.get("Messages"):
            return bodies
        for message in batch["Messages"]:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])  # type: ignore[attr-defined]


def _depth(sqs: object, url: str) -> int:
    attributes = sqs.get_queue_attributes(  # type: ignore[attr-defined]
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def test_redrive_moves_every_message_of_a_dlq_back_to_its_queue(local_stack: LocalStack) -> None:
    resources = local_stack.endpoints.resources  # type: ignore[union-attr]
    sqs = aws.client("sqs")
    sent = [json.dumps({"n": n}) for n in range(23)]  # more than two receive batches
    for body in sent:
        sqs.send_message(QueueUrl=resources["InboundDLQ"], MessageBody=body, MessageGroupId="acme")

    moved = _cli(local_stack, "dlq", "redrive", "inbound", "--json")

    assert moved.returncode == 0, moved.stderr
    assert json.loads(moved.stdout) == {"queue": "inbound", "moved": 23}
    assert _depth(sqs, resources["InboundDLQ"]) == 0
    assert sorted(_bodies_in(sqs, resources["InboundQueue"])) == sorted(sent)
    listed = {
        row["queue"]: row["dlq_depth"]
        for row in json.loads(_cli(local_stack, "dlq", "list", "--json").stdout)
    }
    assert listed["inbound"] == 0


def test_redrive_deletes_from_the_dlq_only_what_its_queue_took(local_stack: LocalStack) -> None:
    """The work queue refuses the messages (its size limit lowered below theirs): the send
    fails, and every message is still in the DLQ afterwards."""
    resources = local_stack.endpoints.resources  # type: ignore[union-attr]
    sqs = aws.client("sqs")
    for n in range(3):
        sqs.send_message(
            QueueUrl=resources["OutboundDLQ"], MessageBody=json.dumps({"n": n, "pad": "x" * 2048})
        )
    sqs.set_queue_attributes(QueueUrl=resources["OutboundQueue"], Attributes={"MaximumMessageSize": "1024"})

    failed = _cli(local_stack, "dlq", "redrive", "outbound", "--json")

    assert failed.returncode != 0 and failed.stdout == "", failed
    assert "SendMessage" in failed.stderr
    assert _depth(sqs, resources["OutboundDLQ"]) == 3
    assert _depth(sqs, resources["OutboundQueue"]) == 0
