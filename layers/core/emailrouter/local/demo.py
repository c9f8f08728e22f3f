"""`make demo`: a demo organization end to end on the local stack, then a readable summary.

Checks its own result against what the organization, the ledger and SES hold, and exits
non-zero when they disagree, so the demo doubles as a smoke test.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import requests
import yaml

from emailrouter.ledger.models import Outcome
from emailrouter.local.stack import REPO_ROOT, LocalStack

DEMO_DIR = REPO_ROOT / "demo"
TENANT = "demo"
ALICE = "11111111-0000-0000-0000-000000000001"
FABRIKAM = "22222222-0000-0000-0000-000000000001"
DANA = "33333333-0000-0000-0000-000000000001"
EVAN = "33333333-0000-0000-0000-000000000002"
SUPPORT_QUEUE = "55555555-0000-0000-0000-000000000001"
ALICE_MAILBOX = "77777777-0000-0000-0000-000000000001"
SUPPORT_MAILBOX = "77777777-0000-0000-0000-000000000002"


@dataclass
class DemoSummary:
    delivered: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    crm_incoming: int = 0
    sent: int = 0
    ses_messages: int = 0
    problems: list[str] = field(default_factory=list)


def demo_messages() -> list[tuple[str, bytes]]:
    """(mailbox, raw) pairs: the files in demo/messages plus two generated big ones."""
    plan: list[tuple[str, bytes]] = []
    for path in sorted((DEMO_DIR / "messages").glob("*.eml")):
        raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        mailbox = path.stem.split("-")[1]
        plan.append((mailbox, raw))
        if path.name.startswith("09-"):
            plan.append(("support", raw))  # the same reply reaches both mailboxes
    plan.append(("support", _big_message("oversize@contoso.example", "Scanned archive (too big)", 1_200_000)))
    plan.append(("support", _big_message("photos@fabrikam.example", "Site photos", 300_000)))
    return plan


def _big_message(message_id: str, subject: str, size: int) -> bytes:
    import base64

    payload = base64.encodebytes(os.urandom(size * 3 // 4)).replace(b"\n", b"\r\n")
    head = (
        "From: Dana Diaz <dana@fabrikam.example>\r\nTo: support@contoso.example\r\n"
        f"Subject: {subject}\r\nMessage-ID: <{message_id}>\r\nDate: Thu, 26 Nov 2026 17:00:00 +0000\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="big"\r\n\r\n'
        "--big\r\nContent-Type: text/plain\r\n\r\nSee attachment.\r\n--big\r\n"
        'Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="data.bin"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    return head + payload + b"\r\n--big--\r\n"


def _api(stack: LocalStack) -> tuple[str, dict[str, str]]:
    assert stack.endpoints is not None
    headers = {
        "Authorization": f"Bearer {stack.endpoints.dataverse_token}",
        "Accept": "application/json",
        "Content-Type": "application/json",
        "OData-Version": "4.0",
        "OData-MaxVersion": "4.0",
    }
    return stack.endpoints.dataverse_url + "/api/data/v9.2/", headers


def seed_organization(stack: LocalStack) -> list[str]:
    """Users, contacts, accounts, a lead and a queue; a sent quote; two emails in Pending Send."""
    stack.dataverse.seed(json.loads((DEMO_DIR / "org.json").read_text(encoding="utf-8")))
    api, headers = _api(stack)
    quote = {
        "subject": "Quote 1001",
        "description": "<p>Please find our quote attached.</p>",
        "directioncode": True,
        "messageid": "<quote-1001@contoso.example>",
        "regardingobjectid_account_email@odata.bind": f"/accounts({FABRIKAM})",
        "email_activity_parties": [
            {"participationtypemask": 1, "partyid_systemuser@odata.bind": f"/systemusers({ALICE})"},
            {"participationtypemask": 2, "partyid_contact@odata.bind": f"/contacts({DANA})"},
        ],
    }
    response = requests.post(api + "emails", json=quote, headers=headers, timeout=10)
    response.raise_for_status()
    quote_id = _entity_id(response)
    _patch(api, headers, quote_id, {"statecode": 1, "statuscode": 3})
    outgoing = [
        {
            "subject": "Your quote 1002",
            "description": "<p>Dear Dana,</p><p>our quote <b>1002</b> is attached.</p>",
            "directioncode": True,
            "sendermailboxid@odata.bind": f"/mailboxes({ALICE_MAILBOX})",
            "regardingobjectid_account_email@odata.bind": f"/accounts({FABRIKAM})",
            "email_activity_parties": [
                {
                    "participationtypemask": 1,
                    "partyid_systemuser@odata.bind": f"/systemusers({ALICE})",
                    "addressused": "alice@contoso.example",
                },
                {
                    "participationtypemask": 2,
                    "partyid_contact@odata.bind": f"/contacts({DANA})",
                    "addressused": "dana@fabrikam.example",
                },
            ],
            "email_activity_mime_attachment": [
                {
                    "filename": "Quote 1002 – Fabrikam.txt",
                    "mimetype": "text/plain",
                    "body": "UXVvdGUgMTAwMjogMTAgdW5pdHMgQCAxMDAgRVVS",
                    "objecttypecode": "email",
                }
            ],
        },
        {
            "subject": "We received your question about INV-7781",
            "description": "<p>Hello Evan,</p><p>we are looking into it.</p>",
            "directioncode": True,
            "sendermailboxid@odata.bind": f"/mailboxes({SUPPORT_MAILBOX})",
            "email_activity_parties": [
                {
                    "participationtypemask": 1,
                    "partyid_queue@odata.bind": f"/queues({SUPPORT_QUEUE})",
                    "addressused": "support@contoso.example",
                },
                {
                    "participationtypemask": 2,
                    "partyid_contact@odata.bind": f"/contacts({EVAN})",
                    "addressused": "evan@northwind.example",
                },
            ],
        },
    ]
    ids = []
    for email in outgoing:
        response = requests.post(api + "emails", json=email, headers=headers, timeout=10)
        response.raise_for_status()
        email_id = _entity_id(response)
        _patch(api, headers, email_id, {"statecode": 1, "statuscode": 6})  # what "Send" in the CRM does
        ids.append(email_id)
    return ids


def _entity_id(response: requests.Response) -> str:
    return response.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


def _patch(api: str, headers: dict[str, str], email_id: str, body: dict[str, Any]) -> None:
    requests.patch(f"{api}emails({email_id})", json=body, headers=headers, timeout=10).raise_for_status()


def import_demo_tenant(stack: LocalStack, passwords: dict[str, str]) -> None:
    from emailrouter.tenancy.importer import import_tenants
    from emailrouter.tenancy.store import TenantStore

    assert stack.endpoints is not None
    # The endpoints change with every start: set them in the parsed file (placeholders are for
    # secrets only); the secrets come from the environment as in any tenants file.
    document = yaml.safe_load((DEMO_DIR / "tenant.yaml").read_text(encoding="utf-8"))
    document["crm"]["url"] = stack.endpoints.dataverse_url
    ports = {"pop3": stack.endpoints.pop3_port, "imap": stack.endpoints.imap_port}
    for mailbox in document["mailboxes"]:
        mailbox["port"] = ports[mailbox["protocol"]]
    rendered = stack.workdir / "demo-tenant.yaml"
    rendered.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    env = dict(os.environ)
    env.update(
        {
            "DEMO_DATAVERSE_TOKEN": stack.endpoints.dataverse_token,
            "DEMO_SUPPORT_PASSWORD": passwords["support"],
            "DEMO_ALICE_PASSWORD": passwords["alice"],
        }
    )
    import_tenants(rendered, TenantStore(), env=env)


def verify_sender_domain() -> None:
    """The operator's SES steps: the domain verified in SES, then given to the demo tenant
    (what `emailrouter tenants identities add demo contoso.example` does)."""
    from emailrouter import aws
    from emailrouter.config import get_settings
    from emailrouter.outbound.identities import add_identities, ses_tenants_for
    from emailrouter.tenancy.store import TenantStore

    aws.client("sesv2").create_email_identity(EmailIdentity="contoso.example")
    settings = get_settings()
    add_identities(
        TenantStore(), ses_tenants_for(settings), "demo", ["contoso.example"], settings.ses_configuration_set
    )


def collect_summary(stack: LocalStack, delivered: int, outbound_ids: list[str]) -> DemoSummary:
    from emailrouter.ledger.store import Ledger

    summary = DemoSummary(delivered=delivered)
    for record in Ledger().list_messages(TENANT):
        if record.outcome is not None:
            summary.outcomes[record.outcome.value] = summary.outcomes.get(record.outcome.value, 0) + 1
    duplicates = delivered - sum(summary.outcomes.values())
    summary.outcomes[Outcome.DUPLICATE.value] = duplicates
    emails = stack.dataverse.rows("emails")
    summary.crm_incoming = sum(1 for e in emails if e.get("directioncode") is False)
    summary.sent = sum(1 for e in emails if e.get("activityid") in outbound_ids and e.get("statuscode") == 3)
    assert stack.endpoints is not None
    data = requests.get(f"{stack.endpoints.aws_endpoint}/moto-api/data.json", timeout=10).json()
    summary.ses_messages = _count_ses(data)
    tracked = summary.outcomes.get("created", 0) + summary.outcomes.get("correlated", 0)
    if summary.crm_incoming != tracked:
        summary.problems.append(
            f"{tracked} tracked in the ledger but {summary.crm_incoming} incoming emails in the CRM"
        )
    if summary.sent != len(outbound_ids):
        summary.problems.append(f"{summary.sent} of {len(outbound_ids)} outbound emails marked Sent")
    if summary.ses_messages != len(outbound_ids):
        summary.problems.append(f"SES holds {summary.ses_messages} messages, expected {len(outbound_ids)}")
    return summary


def _count_ses(data: dict[str, Any]) -> int:
    total = 0
    for service in ("ses", "sesv2"):
        for name, items in (data.get(service) or {}).items():
            if "Message" in name and isinstance(items, list):
                total += len(items)
    return total


def print_summary(summary: DemoSummary, elapsed: float) -> None:
    outcomes = summary.outcomes
    lines = [
        "",
        "Email Router demo — organization 'demo'",
        "=" * 44,
        f"  messages delivered to the mailboxes  {summary.delivered}",
        f"  created as CRM emails                {outcomes.get('created', 0)}",
        f"  correlated to an existing thread     {outcomes.get('correlated', 0)}",
        f"  duplicates (same message again)      {outcomes.get('duplicate', 0)}",
        f"  filtered (auto-replies, bulk, rules) {outcomes.get('filtered', 0)}",
        f"  quarantined (raw kept for replay)    {outcomes.get('quarantined', 0)}",
        f"  incoming emails now in the CRM       {summary.crm_incoming}",
        f"  outbound emails sent through SES     {summary.sent}",
        f"  finished in {elapsed:.1f} s",
        "",
        "Where to look next:",
        "  emailrouter local demo --keep              run it again and keep the stack up; then, in",
        "    emailrouter messages list --tenant demo    another terminal: every message and its outcome",
        "    emailrouter mailboxes list --tenant demo   mailbox health",
        "    emailrouter status                         queue and DLQ depths",
        "  README.md, docs/operations.md              deploying, onboarding, operating",
        "",
    ]
    if summary.problems:
        lines += ["PROBLEMS:", *[f"  - {p}" for p in summary.problems], ""]
    print("\n".join(lines))


def run_demo(time_scale: float = 0.01, keep: bool = False) -> int:
    started = time.monotonic()
    stack = LocalStack(time_scale=time_scale)
    try:
        stack.start()
        passwords = {name: secrets.token_urlsafe(16) for name in ("support", "alice")}
        for name, password in passwords.items():
            stack.dovecot.add_user(name, password)
        import_demo_tenant(stack, passwords)
        verify_sender_domain()
        outbound_ids = seed_organization(stack)
        plan = demo_messages()
        for mailbox, raw in plan:
            stack.dovecot.deliver(mailbox, raw)
        assert stack.runner is not None
        if not stack.runner.run_until_idle(rounds=3, max_seconds=150):
            print("the pipeline did not become idle in time", file=sys.stderr)
            return 1
        summary = collect_summary(stack, len(plan), outbound_ids)
        print_summary(summary, time.monotonic() - started)
        if keep:
            print(f"The stack keeps running (endpoints in {stack.workdir / 'stack.json'}); Ctrl-C stops it.")
            sys.stdout.flush()
            stack.stop_on_signals()
            stack.runner.serve_forever()
        return 1 if summary.problems else 0
    finally:
        stack.stop()
