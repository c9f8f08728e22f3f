"""`emailrouter tenants …` and `emailrouter mailboxes …`."""

from __future__ import annotations

import argparse
from pathlib import Path

from emailrouter.cli.context import load_runtime
from emailrouter.cli.output import emit
from emailrouter.tenancy.importer import import_tenants


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tenants = sub.add_parser("tenants", help="import and inspect tenants")
    tsub = tenants.add_subparsers(dest="action", required=True)
    imp = tsub.add_parser("import", help="validate a tenants YAML file and store it (idempotent)")
    imp.add_argument("file", type=Path)
    imp.add_argument("--json", action="store_true")
    imp.set_defaults(func=cmd_import)
    lst = tsub.add_parser("list", help="list tenants")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)
    show = tsub.add_parser("show", help="show one tenant's configuration")
    show.add_argument("tenant")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    mailboxes = sub.add_parser("mailboxes", help="inspect and poll mailboxes")
    msub = mailboxes.add_subparsers(dest="action", required=True)
    mlist = msub.add_parser("list", help="mailboxes of a tenant with their health")
    mlist.add_argument("--tenant", required=True)
    mlist.add_argument("--json", action="store_true")
    mlist.set_defaults(func=cmd_mailboxes)
    poll = msub.add_parser("poll", help="poll one mailbox now")
    poll.add_argument("--tenant", required=True)
    poll.add_argument("--mailbox", required=True)
    poll.add_argument("--json", action="store_true")
    poll.set_defaults(func=cmd_poll)


def cmd_import(args: argparse.Namespace) -> int:
    runtime = load_runtime()
    result = import_tenants(args.file, runtime.tenants)
    data = {
        "created": result.created,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "secrets_written": result.secrets_written,
    }
    emit(data if args.json else {k: ", ".join(v) or "-" for k, v in data.items()}, args.json)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    runtime = load_runtime()
    rows = [
        {
            "tenant": t.tenant_id,
            "name": t.name,
            "enabled": t.enabled,
            "mailboxes": len(t.mailboxes),
            "crm": t.crm.url,
        }
        for t in runtime.tenants.all()
    ]
    emit(rows, args.json, ["tenant", "name", "enabled", "mailboxes", "crm"])
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    runtime = load_runtime()
    tenant = runtime.tenants.get(args.tenant)
    data = tenant.model_dump(mode="json")
    emit(data if args.json else {k: v for k, v in data.items() if k != "mailboxes"}, args.json)
    return 0


def cmd_mailboxes(args: argparse.Namespace) -> int:
    runtime = load_runtime()
    tenant = runtime.tenants.get(args.tenant)
    rows = []
    for mailbox in tenant.mailboxes:
        health = runtime.tenants.get_health(tenant.tenant_id, mailbox.mailbox_id)
        rows.append(
            {
                "mailbox": mailbox.mailbox_id,
                "address": mailbox.address,
                "protocol": mailbox.protocol.value,
                "tracking": mailbox.tracking.value,
                "health": health.state,
                "last_poll": health.last_poll_at or "-",
                "reason": health.reason,
            }
        )
    emit(rows, args.json)
    return 0


def cmd_poll(args: argparse.Namespace) -> int:
    runtime = load_runtime()
    result = runtime.poller.poll(args.tenant, args.mailbox)
    data = {
        "fetched": result.fetched,
        "acknowledged": result.acknowledged,
        "state": result.state,
        "reason": result.reason,
    }
    emit(data, args.json)
    return 0 if result.state != "failing" else 1
