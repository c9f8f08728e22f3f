"""`emailrouter suppressions …`: a tenant's suppressed recipients, and lifting one."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from emailrouter.cli.context import CliError, load_runtime
from emailrouter.cli.output import emit
from emailrouter.clock import iso


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    suppressions = sub.add_parser(
        "suppressions", help="recipients a tenant does not send to (hard bounces, complaints)"
    )
    ssub = suppressions.add_subparsers(dest="action", required=True)
    lst = ssub.add_parser("list", help="a tenant's suppressed recipients, with reason and end")
    lst.add_argument("--tenant", required=True)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)
    lift = ssub.add_parser("lift", help="send to a suppressed recipient again")
    lift.add_argument("address")
    lift.add_argument("--tenant", required=True)
    lift.add_argument("--json", action="store_true")
    lift.set_defaults(func=cmd_lift)


def cmd_list(args: argparse.Namespace) -> int:
    runtime = load_runtime()
    rows = [
        {
            "address": entry.address,
            "reason": entry.reason,
            "updated_at": entry.updated_at,
            "expires_at": iso(datetime.fromtimestamp(entry.expires_at, UTC)) if entry.expires_at else "never",
        }
        for entry in runtime.ledger.list_suppressions(args.tenant)
    ]
    emit(rows, args.json, ["address", "expires_at", "updated_at", "reason"])
    return 0


def cmd_lift(args: argparse.Namespace) -> int:
    runtime = load_runtime()
    address = args.address.strip().lower()
    if not runtime.ledger.lift_suppression(args.tenant, address):
        raise CliError(f"{address} is not suppressed for tenant {args.tenant}")
    emit({"address": address, "result": "lifted"}, args.json)
    return 0
