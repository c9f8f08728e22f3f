"""`emailrouter status` and `emailrouter dlq …`: what an operator checks first."""

from __future__ import annotations

import argparse
import os
from typing import Any

from emailrouter import aws
from emailrouter.cli.context import CliError, load_runtime
from emailrouter.cli.output import emit

QUEUE_VARS = {
    "poll-jobs": "POLL_JOBS_QUEUE_URL",
    "inbound": "INBOUND_QUEUE_URL",
    "outbound": "OUTBOUND_QUEUE_URL",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = sub.add_parser(
        "status", help="tenants, mailbox health, CRM circuit breakers, queue and DLQ depths"
    )
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    dlq = sub.add_parser("dlq", help="inspect and redrive dead-letter queues")
    dsub = dlq.add_subparsers(dest="action", required=True)
    lst = dsub.add_parser("list", help="depth of every DLQ")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_dlq_list)
    redrive = dsub.add_parser("redrive", help="move a DLQ's messages back to their source queue")
    redrive.add_argument("queue", choices=sorted(QUEUE_VARS))
    redrive.add_argument("--max", type=int, default=1000)
    redrive.add_argument("--json", action="store_true")
    redrive.set_defaults(func=cmd_dlq_redrive)


def _queues() -> dict[str, str]:
    return {name: os.environ[var] for name, var in QUEUE_VARS.items() if os.environ.get(var)}


def _depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def _dlq_url(sqs: Any, url: str) -> str:
    import json

    policy = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"].get(
        "RedrivePolicy"
    )
    if not policy:
        raise CliError(f"{url} has no dead-letter queue")
    arn = json.loads(policy)["deadLetterTargetArn"]
    return str(sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[1])["QueueUrl"])


def cmd_status(args: argparse.Namespace) -> int:
    runtime = load_runtime()
    sqs = aws.client("sqs")
    queues = {
        name: {"depth": _depth(sqs, url), "dlq": _depth(sqs, _dlq_url(sqs, url))}
        for name, url in _queues().items()
    }
    mailboxes = []
    crm = []
    for tenant in runtime.tenants.all():
        breaker = runtime.breaker.health(tenant.tenant_id)
        crm.append(
            {
                "tenant": tenant.tenant_id,
                "state": breaker.state,
                "consecutive_timeouts": breaker.consecutive_timeouts,
                "reason": breaker.reason,
            }
        )
        for mailbox in tenant.mailboxes:
            health = runtime.tenants.get_health(tenant.tenant_id, mailbox.mailbox_id)
            mailboxes.append(
                {
                    "tenant": tenant.tenant_id,
                    "mailbox": mailbox.mailbox_id,
                    "health": health.state,
                    "reason": health.reason,
                }
            )
    if args.json:
        emit({"queues": queues, "mailboxes": mailboxes, "crm": crm}, True)
    else:
        emit([{"queue": n, **v} for n, v in queues.items()], False)
        print()
        emit(mailboxes, False)
        print()
        emit(crm, False)
    failing = (
        any(m["health"] == "failing" for m in mailboxes)
        or any(q["dlq"] for q in queues.values())
        or any(c["state"] != "closed" for c in crm)
    )
    return 1 if failing else 0


def cmd_dlq_list(args: argparse.Namespace) -> int:
    load_runtime()
    sqs = aws.client("sqs")
    rows = [{"queue": name, "dlq_depth": _depth(sqs, _dlq_url(sqs, url))} for name, url in _queues().items()]
    emit(rows, args.json)
    return 0


def cmd_dlq_redrive(args: argparse.Namespace) -> int:
    """Receive from the DLQ, send to the source queue, delete: a message is never in neither."""
    load_runtime()
    sqs = aws.client("sqs")
    source = _queues()[args.queue]
    dlq = _dlq_url(sqs, source)
    moved = 0
    while moved < args.max:
        batch = sqs.receive_message(
            QueueUrl=dlq,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["MessageGroupId"],
        ).get("Messages", [])
        if not batch:
            break
        for message in batch:
            extra = {}
            group = message.get("Attributes", {}).get("MessageGroupId")
            if group:
                extra["MessageGroupId"] = group
            sqs.send_message(QueueUrl=source, MessageBody=message["Body"], **extra)
            sqs.delete_message(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
    emit({"queue": args.queue, "moved": moved}, args.json)
    return 0
