"""`emailrouter messages …` (the ledger) and `emailrouter ingest` (the mailgate)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emailrouter.cli.context import CliError, load_runtime
from emailrouter.cli.exits import Exit
from emailrouter.cli.output import emit
from emailrouter.clock import iso
from emailrouter.ledger.models import Outcome
from emailrouter.queues.messages import InboundMessage
from emailrouter.queues.sender import inbound_message


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    messages = sub.add_parser("messages", help="messages and their outcomes")
    msub = messages.add_subparsers(dest="action", required=True)
    lst = msub.add_parser("list", help="list a tenant's messages")
    lst.add_argument("--tenant", required=True)
    lst.add_argument("--outcome", choices=[o.value for o in Outcome])
    lst.add_argument("--since", help="only messages updated at or after this ISO time")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)
    show = msub.add_parser("show", help="one message's ledger record")
    show.add_argument("key")
    show.add_argument("--tenant", required=True)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)
    replay = msub.add_parser("replay", help="re-run a quarantined message from its kept raw MIME")
    replay.add_argument("key")
    replay.add_argument("--tenant", required=True)
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=cmd_replay)
    discard = msub.add_parser(
        "discard", help="give up on a quarantined message: delete its raw copy and let the source delete it"
    )
    discard.add_argument("key")
    discard.add_argument("--tenant", required=True)
    discard.add_argument("--note", default="", help="why, kept in the message's reason")
    discard.add_argument("--json", action="store_true")
    discard.set_defaults(func=cmd_discard)

    ingest = sub.add_parser(
        "ingest",
        help="put one raw RFC 822 message (file or stdin) into the pipeline; exits with sysexits codes",
    )
    ingest.add_argument("--tenant", required=True)
    ingest.add_argument("--mailbox", required=True)
    ingest.add_argument("file", nargs="?", default="-")
    ingest.add_argument(
        "--enqueue",
        action="store_true",
        help="hand it to the inbound queue (S3 when large) for deliver_inbound, as a poll does; "
        "accepted even while the CRM is down (the default to use in MTA pipes)",
    )
    ingest.add_argument("--json", action="store_true")
    ingest.set_defaults(func=cmd_ingest)


def cmd_list(args: argparse.Namespace) -> int:
    runtime = load_runtime()
    outcome = Outcome(args.outcome) if args.outcome else None
    rows = []
    for record in runtime.ledger.list_messages(args.tenant, outcome):
        if args.since and record.updated_at < args.since:
            continue
        rows.append(
            {
                "key": record.message_key,
                "mailbox": record.mailbox_id,
                "outcome": record.outcome.value if record.outcome else record.status,
                "subject": record.subject[:50],
                "reason": record.reason[:60],
                "crm_email_id": record.crm_email_id or "",
                "updated_at": record.updated_at,
            }
        )
    rows.sort(key=lambda r: r["updated_at"])
    emit(rows, args.json, ["key", "mailbox", "outcome", "subject", "reason", "updated_at"])
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    runtime = load_runtime()
    record = runtime.ledger.get(args.tenant, args.key)
    if record is None:
        raise CliError(f"tenant {args.tenant} has no message {args.key}")
    emit(record.model_dump(mode="json"), args.json)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from emailrouter.routing.replay import replay_quarantined

    runtime = load_runtime()
    result = replay_quarantined(runtime, args.tenant, args.key)
    emit({"key": result.message_key, "outcome": result.outcome.value, "reason": result.reason}, args.json)
    # A replay that ends quarantined again did not deliver: scripts must see it.
    return Exit.DATAERR if result.outcome is Outcome.QUARANTINED else Exit.OK


def _read_input(file: str) -> bytes:
    try:
        raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as error:
        raise CliError(f"cannot read {file}: {error.strerror}", Exit.NOINPUT) from None
    if not raw.strip():
        raise CliError("no message: the input is empty or only white space", Exit.DATAERR)
    return raw


def cmd_discard(args: argparse.Namespace) -> int:
    from emailrouter.routing.replay import ReplayError, discard_quarantined

    runtime = load_runtime()
    try:
        record = discard_quarantined(runtime, args.tenant, args.key, args.note)
    except ReplayError as error:
        raise CliError(str(error)) from None
    emit({"key": record.message_key, "discarded_at": record.discarded_at, "reason": record.reason}, args.json)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    """The mailgate. Every failure exits with a sysexits code an MTA understands; anything the
    router cannot take now (CRM, AWS, an unexpected error) is 75, so the MTA keeps the message."""
    raw = _read_input(args.file)
    runtime = load_runtime()
    tenant = runtime.tenants.get(args.tenant)
    tenant.mailbox(args.mailbox)
    ref = f"ingest-{iso()}"
    try:
        message: InboundMessage = inbound_message(
            tenant.tenant_id, args.mailbox, ref, raw, runtime.raw_store, runtime.settings.inline_max_bytes
        )
        if args.enqueue:
            runtime.queue.send(runtime.settings.inbound_queue_url, tenant.tenant_id, [message])
            emit({"result": "queued", "size": len(raw)}, args.json)
            return Exit.OK
        result = runtime.delivery.deliver(message, owner=f"ingest:{ref}")
    except Exception as error:
        raise CliError(
            f"not accepted now, try again later: {type(error).__name__}: {error}", Exit.TEMPFAIL
        ) from None
    data = {
        "outcome": result.outcome.value,
        "reason": result.reason,
        "crm_email_id": result.crm_email_id or "",
        "key": result.message_key,
    }
    if args.json:
        emit(data, True)
    else:
        print(
            f"{result.outcome.value}: {result.reason or result.crm_email_id or ''} (key {result.message_key})".strip()
        )
    return Exit.OK  # quarantined included: the raw message is kept for a replay


def register_outbound(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    outbound = sub.add_parser("outbound", help="CRM emails the router sends")
    osub = outbound.add_subparsers(dest="action", required=True)
    show = osub.add_parser("show", help="one outbound email's send record (state, SES ids, reason)")
    show.add_argument("email_id")
    show.add_argument("--tenant", required=True)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_outbound_show)


def cmd_outbound_show(args: argparse.Namespace) -> int:
    runtime = load_runtime()
    record = runtime.ledger.get_outbound(args.tenant, args.email_id)
    if record is None:
        raise CliError(f"tenant {args.tenant} has no outbound record for email {args.email_id}")
    emit(record.model_dump(mode="json"), args.json)
    return 0
