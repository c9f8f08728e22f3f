"""`emailrouter tenants …` and `emailrouter mailboxes …`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emailrouter.cli.context import CliError, load_runtime
from emailrouter.cli.output import emit
from emailrouter.outbound.errors import OutboundError
from emailrouter.outbound.identities import (
    add_identities,
    provision_ses_tenant,
    remove_identities,
    ses_tenants_for,
)
from emailrouter.tenancy.importer import import_tenants

if TYPE_CHECKING:
    from collections.abc import Callable

    from emailrouter.tenancy.sending import SendingIdentities


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
    identities = tsub.add_parser(
        "identities", help="what a tenant may send as: its sending identities and its SES tenant"
    )
    isub = identities.add_subparsers(dest="identities_action", required=True)
    ishow = isub.add_parser("show", help="a tenant's sending identities and SES tenant")
    ishow.add_argument("tenant")
    ishow.add_argument("--json", action="store_true")
    ishow.set_defaults(func=cmd_identities_show)
    iadd = isub.add_parser(
        "add", help="give a tenant sending identities (SES domains or addresses; creates its SES tenant)"
    )
    iadd.add_argument("tenant")
    iadd.add_argument("identity", nargs="+")
    iadd.add_argument("--json", action="store_true")
    iadd.set_defaults(func=cmd_identities_add)
    iremove = isub.add_parser("remove", help="take sending identities away from a tenant")
    iremove.add_argument("tenant")
    iremove.add_argument("identity", nargs="+")
    iremove.add_argument("--json", action="store_true")
    iremove.set_defaults(func=cmd_identities_remove)

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
    # Every imported tenant gets its SES tenant (created once; existing ones are left as they are).
    ses_tenants = None
    provisioned = []
    for tenant_id in [*result.created, *result.updated, *result.unchanged]:
        if runtime.tenants.get_sending(tenant_id).ses_tenant_name:
            continue
        ses_tenants = ses_tenants or ses_tenants_for(runtime.settings)
        sending = _operator_step(
            provision_ses_tenant,
            runtime.tenants,
            ses_tenants,
            tenant_id,
            runtime.settings.ses_configuration_set,
        )
        provisioned.append(sending.ses_tenant_name)
    data = {
        "created": result.created,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "secrets_written": result.secrets_written,
        "ses_tenants_created": provisioned,
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


def _operator_step(step: Callable[..., SendingIdentities], *args: Any) -> SendingIdentities:
    try:
        return step(*args)
    except OutboundError as error:
        raise CliError(str(error)) from None


def _emit_sending(tenant_id: str, sending: SendingIdentities, as_json: bool) -> None:
    data = {
        "tenant": tenant_id,
        "identities": sending.identities,
        "ses_tenant": sending.ses_tenant_name,
        "updated_at": sending.updated_at,
    }
    emit(data if as_json else {**data, "identities": ", ".join(sending.identities) or "-"}, as_json)


def cmd_identities_show(args: argparse.Namespace) -> int:
    runtime = load_runtime()
    runtime.tenants.get(args.tenant)
    _emit_sending(args.tenant, runtime.tenants.get_sending(args.tenant), args.json)
    return 0


def cmd_identities_add(args: argparse.Namespace) -> int:
    runtime = load_runtime()
    sending = _operator_step(
        add_identities,
        runtime.tenants,
        ses_tenants_for(runtime.settings),
        args.tenant,
        args.identity,
        runtime.settings.ses_configuration_set,
    )
    _emit_sending(args.tenant, sending, args.json)
    return 0


def cmd_identities_remove(args: argparse.Namespace) -> int:
    runtime = load_runtime()
    runtime.tenants.get(args.tenant)
    sending = _operator_step(
        remove_identities, runtime.tenants, ses_tenants_for(runtime.settings), args.tenant, args.identity
    )
    _emit_sending(args.tenant, sending, args.json)
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
