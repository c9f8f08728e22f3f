"""`emailrouter status` and `emailrouter dlq …`: what an operator checks first."""

from __future__ import annotations

import argparse
import os
from typing import Any

from emailrouter import aws
from emailrouter.cli.context import CliError, load_runtime
from emailrouter.cli.exits import Exit
from emailrouter.cli.output import emit

QUEUE_SUFFIX, DLQ_SUFFIX = "_QUEUE_URL", "_DLQ_URL"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = sub.add_parser(
        "status", help="tenants, mailbox health, CRM circuit breakers, queue and DLQ depths"
    )
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
    dlq = sub.add_parser("dlq", help="inspect and redrive dead-letter queues")
    dsub = dlq.add_subparsers(dest="action", required=True)
    lst = dsub.add_parser("list", help="depth of every DLQ of the deployment")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_dlq_list)
    redrive = dsub.add_parser("redrive", help="move a DLQ's messages back to their source queue")
    redrive.add_argument("queue", help="the source queue: poll-jobs, inbound, outbound, ses-events, …")
    redrive.add_argument("--max", type=int, default=1000)
    redrive.add_argument("--json", action="store_true")
    redrive.set_defaults(func=cmd_dlq_redrive)


def _queue_name(variable: str, suffix: str) -> str:
    """POLL_JOBS_QUEUE_URL → poll-jobs; SCHEDULER_DLQ_URL → scheduler."""
    return variable.removesuffix(suffix).lower().replace("_", "-")


def _queues() -> dict[str, str]:
    """Every work queue of the deployment: one `<NAME>_QUEUE_URL` variable each."""
    return {
        _queue_name(var, QUEUE_SUFFIX): url
        for var, url in sorted(os.environ.items())
        if var.endswith(QUEUE_SUFFIX) and url
    }


def _dead_letter_queues(sqs: Any) -> dict[str, tuple[str, str | None]]:
    """Every DLQ: the work queues' redrive targets (named for their queue) and any
    `<NAME>_DLQ_URL` variable besides (a DLQ no queue feeds, such as the schedules').
    Values are (DLQ URL, source queue URL or None)."""
    found: dict[str, tuple[str, str | None]] = {}
    for name, url in _queues().items():
        dlq = _dlq_url(sqs, url)
        if dlq is not None:
            found[name] = (dlq, url)
    known = {dlq for dlq, _source in found.values()}
    for var, url in sorted(os.environ.items()):
        if var.endswith(DLQ_SUFFIX) and url and url not in known:
            found.setdefault(_queue_name(var, DLQ_SUFFIX), (url, None))
    return found


def _depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def _dlq_url(sqs: Any, url: str) -> str | None:
    import json

    policy = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"].get(
        "RedrivePolicy"
    )
    if not policy:
        return None
    arn = json.loads(policy)["deadLetterTargetArn"]
    return str(sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[1])["QueueUrl"])


def cmd_status(args: argparse.Namespace) -> int:
    runtime = load_runtime()
    sqs = aws.client("sqs")
    dead_letter = _dead_letter_queues(sqs)
    queues: dict[str, dict[str, int | None]] = {
        name: {"depth": _depth(sqs, url), "dlq": None} for name, url in _queues().items()
    }
    for name, (dlq, _source) in dead_letter.items():
        queues.setdefault(name, {"depth": None, "dlq": None})["dlq"] = _depth(sqs, dlq)
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
        emit(
            [{"queue": n, **{k: "-" if v is None else v for k, v in q.items()}} for n, q in queues.items()],
            False,
        )
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
    rows = [
        {"queue": name, "dlq_depth": _depth(sqs, dlq), "redrive": source is not None}
        for name, (dlq, source) in _dead_letter_queues(sqs).items()
    ]
    emit(rows, args.json)
    return 0


def cmd_dlq_redrive(args: argparse.Namespace) -> int:
    """Receive from the DLQ, send to the source queue, delete: a message is never in neither."""
    load_runtime()
    sqs = aws.client("sqs")
    dead_letter = _dead_letter_queues(sqs)
    if args.queue not in dead_letter or dead_letter[args.queue][1] is None:
        redrivable = sorted(name for name, (_dlq, source) in dead_letter.items() if source is not None)
        raise CliError(
            f"no queue {args.queue!r} with a dead-letter queue to redrive; one of {redrivable}", Exit.USAGE
        )
    dlq, source = dead_letter[args.queue]
    assert source is not None
    moved = 0
    while moved < args.max:
        batch = sqs.receive_message(
            QueueUrl=dlq,
            MaxNumberOfMessages=min(10, args.max - moved),
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
