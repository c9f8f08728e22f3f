"""Small builders shared by tests: a tenant in the local stack, raw messages, CRM reads."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import requests

from emailrouter.clock import iso
from emailrouter.local.stack import LocalStack
from emailrouter.queues.messages import InboundMessage
from emailrouter.routing.faults import FaultPoints
from emailrouter.tenancy.models import TenantConfig
from emailrouter.tenancy.sending import SendingIdentities

TENANT = "acme"
USER_ID = "aaaaaaaa-0000-0000-0000-000000000001"
CONTACT_ID = "cccccccc-0000-0000-0000-000000000001"
ACCOUNT_ID = "dddddddd-0000-0000-0000-000000000001"
QUEUE_ID = "eeeeeeee-0000-0000-0000-000000000001"
USER_MAILBOX_ID = "ffffffff-0000-0000-0000-000000000001"


def seed_org(stack: LocalStack) -> None:
    stack.dataverse.seed(
        {
            "systemusers": [
                {
                    "systemuserid": USER_ID,
                    "fullname": "Uma User",
                    "internalemailaddress": "uma@acme.example",
                    "isdisabled": False,
                }
            ],
            "contacts": [
                {
                    "contactid": CONTACT_ID,
                    "fullname": "Carl Contact",
                    "emailaddress1": "carl@client.example",
                    "statecode": 0,
                }
            ],
            "accounts": [
                {
                    "accountid": ACCOUNT_ID,
                    "name": "Client Ltd",
                    "emailaddress1": "office@client.example",
                    "statecode": 0,
                }
            ],
            "queues": [
                {"queueid": QUEUE_ID, "name": "Help", "emailaddress": "help@acme.example", "statecode": 0}
            ],
            # Uma's mailbox sends through the router (Server-Side Synchronization or Email Router).
            "mailboxes": [
                {
                    "mailboxid": USER_MAILBOX_ID,
                    "name": "Uma User",
                    "emailaddress": "uma@acme.example",
                    "outgoingemaildeliverymethod": 2,
                }
            ],
        }
    )


def add_tenant(
    stack: LocalStack,
    mailboxes: list[dict[str, Any]] | None = None,
    sending_identities: list[str] | None = None,
    **extra: Any,
) -> TenantConfig:
    """Store a tenant whose CRM is the stack's emulator; its token goes to Secrets Manager.
    The operator's sending identities default to acme.example with the tenant's SES tenant
    (`sending_identities=[]`: none set, as for a tenant the operator has not set up)."""
    from emailrouter import aws
    from emailrouter.tenancy.store import TenantStore

    assert stack.endpoints is not None
    secret = f"emailrouter/{TENANT}/crm"
    sm = aws.client("secretsmanager")
    with contextlib.suppress(sm.exceptions.ResourceExistsException):
        sm.create_secret(Name=secret, SecretString=json.dumps({"token": stack.endpoints.dataverse_token}))
    tenant = TenantConfig.model_validate(
        {
            "tenant_id": TENANT,
            "crm": {"url": stack.endpoints.dataverse_url, "credential_secret": secret},
            "mailboxes": mailboxes
            if mailboxes is not None
            else [
                {
                    "mailbox_id": "help",
                    "address": "help@acme.example",
                    "protocol": "pop3",
                    "host": "127.0.0.1",
                    "port": 1,
                    "security": "none",
                    "credential_secret": f"emailrouter/{TENANT}/help",
                    "tracking": "all",
                }
            ],
            **extra,
        }
    )
    store = TenantStore()
    store.save(tenant)
    identities = ["acme.example"] if sending_identities is None else sending_identities
    if identities:
        store.save_sending(
            tenant.tenant_id,
            SendingIdentities(
                identities=identities,
                ses_tenant_name=f"{stack.endpoints.environment['SES_CONFIGURATION_SET']}-{tenant.tenant_id}",
            ),
        )
    return tenant


def raw_mail(
    subject: str = "Hello",
    sender: str = "Carl Contact <carl@client.example>",
    to: str = "help@acme.example",
    message_id: str | None = "<m1@client.example>",
    extra_headers: str = "",
    body: str = "Hello there.",
) -> bytes:
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", "Date: Thu, 26 Nov 2026 10:00:00 +0000"]
    if message_id:
        lines.append(f"Message-ID: {message_id}")
    if extra_headers:
        lines.append(extra_headers.rstrip("\r\n"))
    lines += ["Content-Type: text/plain; charset=utf-8", "", body, ""]
    return "\r\n".join(lines).encode()


def enqueue_inbound(
    stack: LocalStack, raw: bytes, mailbox_id: str = "help", source_ref: str = "ref-1"
) -> None:
    from emailrouter.queues.sender import QueueSender

    message = InboundMessage(
        tenant_id=TENANT,
        mailbox_id=mailbox_id,
        source_ref=source_ref,
        fetched_at=iso(),
        size=len(raw),
        raw_b64=base64.b64encode(raw).decode(),
    )
    QueueSender().send(stack.endpoints.environment["INBOUND_QUEUE_URL"], TENANT, [message])  # type: ignore[union-attr]


def crm_get(stack: LocalStack, path: str) -> Any:
    assert stack.endpoints is not None
    response = requests.get(
        f"{stack.endpoints.dataverse_url}/api/data/v9.2/{path}",
        headers={
            "Authorization": f"Bearer {stack.endpoints.dataverse_token}",
            "Accept": "application/json",
            "Prefer": 'odata.include-annotations="*"',
        },
        timeout=10,
    )
    response.raise_for_status()
    return response.json()


def incoming_emails(stack: LocalStack) -> list[dict[str, Any]]:
    body = crm_get(
        stack,
        "emails?$filter=directioncode eq false&$expand=email_activity_parties($select=participationtypemask,addressused,_partyid_value),"
        "email_activity_mime_attachment($select=filename,mimetype,attachmentcontentid)",
    )
    return list(body["value"])


def pending_send(
    stack: LocalStack,
    subject: str,
    to: str = "carl@client.example",
    description: str = "<p>Hello <b>Carl</b></p>",
    session: requests.Session | None = None,
    recipient: dict[str, Any] | None = None,
    sender: str = "uma@acme.example",
) -> str:
    """An email from Uma to `to`, composed in the CRM and sent there (Pending Send), as a user
    would: create it with its parties, then move it to Completed / Pending Send."""
    assert stack.endpoints is not None
    http = session or requests.Session()
    api = f"{stack.endpoints.dataverse_url}/api/data/v9.2/"
    headers = {
        "Authorization": f"Bearer {stack.endpoints.dataverse_token}",
        "Content-Type": "application/json",
    }
    response = http.post(
        api + "emails",
        json={
            "subject": subject,
            "description": description,
            "directioncode": True,
            "sendermailboxid@odata.bind": f"/mailboxes({USER_MAILBOX_ID})",
            "email_activity_parties": [
                {
                    "participationtypemask": 1,
                    "partyid_systemuser@odata.bind": f"/systemusers({USER_ID})",
                    "addressused": sender,
                },
                recipient
                or {
                    "participationtypemask": 2,
                    "partyid_contact@odata.bind": f"/contacts({CONTACT_ID})",
                    "addressused": to,
                },
            ],
        },
        headers=headers,
        timeout=10,
    )
    response.raise_for_status()
    email_id = response.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    http.patch(
        f"{api}emails({email_id})", json={"statecode": 1, "statuscode": 6}, headers=headers, timeout=10
    ).raise_for_status()
    return email_id


def dovecot_mailbox(
    stack: LocalStack,
    mailbox_id: str,
    protocol: str,
    *,
    delete_after_processing: bool = False,
    tracking: str = "all",
) -> dict[str, Any]:
    """A user `mailbox_id` on the stack's Dovecot, its credential in Secrets Manager, and the
    tenant's configuration of that mailbox (address `<mailbox_id>@acme.example`)."""
    import secrets

    from emailrouter import aws

    assert stack.endpoints is not None and stack.dovecot is not None
    password = secrets.token_urlsafe(12)
    stack.dovecot.add_user(mailbox_id, password)
    secret = f"emailrouter/{TENANT}/mailbox-{mailbox_id}"
    aws.client("secretsmanager").create_secret(
        Name=secret, SecretString=json.dumps({"username": mailbox_id, "password": password})
    )
    port = stack.endpoints.pop3_port if protocol == "pop3" else stack.endpoints.imap_port
    return {
        "mailbox_id": mailbox_id,
        "address": f"{mailbox_id}@acme.example",
        "protocol": protocol,
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "credential_secret": secret,
        "tracking": tracking,
        "delete_after_processing": delete_after_processing,
    }


def tracked_email(stack: LocalStack, subject: str, message_id: str, account_id: str = ACCOUNT_ID) -> str:
    """An email sent from the CRM earlier, regarding an account: what replies correlate to."""
    assert stack.endpoints is not None
    response = requests.post(
        f"{stack.endpoints.dataverse_url}/api/data/v9.2/emails",
        json={
            "subject": subject,
            "directioncode": True,
            "messageid": message_id,
            "regardingobjectid_account_email@odata.bind": f"/accounts({account_id})",
        },
        headers={
            "Authorization": f"Bearer {stack.endpoints.dataverse_token}",
            "Content-Type": "application/json",
        },
        timeout=10,
    )
    response.raise_for_status()
    return str(response.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")"))


def ledger_source_records(tenant_id: str = TENANT) -> list[dict[str, Any]]:
    """The ledger's source records (`SRC#<mailbox>#<ref>`, one per message taken from a
    mailbox): mailbox_id, source_ref, message_key and ack_pending of each."""
    from boto3.dynamodb.types import TypeDeserializer

    from emailrouter import aws
    from emailrouter.config import get_settings

    deserializer = TypeDeserializer()
    paginator = aws.client("dynamodb").get_paginator("query")
    records = []
    for page in paginator.paginate(
        TableName=get_settings().ledger_table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :src)",
        ExpressionAttributeValues={":pk": {"S": f"TENANT#{tenant_id}"}, ":src": {"S": "SRC#"}},
    ):
        for item in page.get("Items", []):
            plain = {key: deserializer.deserialize(value) for key, value in item.items()}
            mailbox_id, source_ref = plain["sk"].removeprefix("SRC#").split("#", 1)
            records.append(
                {
                    "mailbox_id": mailbox_id,
                    "source_ref": source_ref,
                    "message_key": plain["message_key"],
                    "ack_pending": bool(plain.get("ack_pending")),
                }
            )
    return records


def dataverse_journal(stack: LocalStack) -> list[dict[str, Any]]:
    """The emulator's request journal over its control endpoint, by arrival."""
    assert stack.endpoints is not None
    response = requests.get(f"{stack.endpoints.dataverse_url}/_emulator/journal", timeout=10)
    response.raise_for_status()
    return list(response.json()["entries"])


# Arrival times and the client's waits use the same monotonic clock (nanosecond resolution),
# and a client that counts Retry-After from when it read the 429 passes with no slack at all.
# The 2 ms only absorbs timer rounding; it is tiny next to a 1 s Retry-After.
CLOCK_GRANULARITY_SECONDS = 0.002


def retry_after_violations(
    entries: list[dict[str, Any]], granularity: float = CLOCK_GRANULARITY_SECONDS
) -> list[str]:
    """Requests that arrived while a Retry-After given to the same caller was still running.

    For each 429 (the request's own, or a `$batch` part's) that arrived at `t` with Retry-After
    `r`, every later request of that caller must arrive at `t + r` or after (less `granularity`).
    A request that arrived before the 429 was answered is exempt: it was on its way before the
    client could know. Entries are the journal's (`arrived`, `answered`, `caller`, `status`,
    `operation_statuses`, `retry_after`, `method`, `path`).
    """
    problems: list[str] = []
    for throttle in entries:
        if throttle["status"] != 429 and 429 not in (throttle.get("operation_statuses") or ()):
            continue
        until = throttle["arrived"] + float(throttle["retry_after"] or 0)
        for entry in entries:
            if entry["caller"] != throttle["caller"] or entry["arrived"] <= throttle["answered"]:
                continue
            if entry["arrived"] < until - granularity:
                problems.append(
                    f"{entry['method']} {entry['path']} arrived {entry['arrived'] - throttle['arrived']:.3f} s "
                    f"after a 429 with Retry-After {throttle['retry_after']} s"
                )
    return problems


class Concurrent:
    """What `run_concurrently` saw of each call, in the order the calls were given: its return
    value, or the exception it raised (None for a call that returned normally)."""

    def __init__(self, results: list[Any], errors: list[BaseException | None]) -> None:
        self.results = results
        self.errors = errors

    def raised(self) -> list[BaseException]:
        return [error for error in self.errors if error is not None]


def run_concurrently(calls: list[Any], timeout: float = 20.0) -> Concurrent:
    """Run each callable in `calls` on its own thread, all released together by a barrier (as
    Lambda runs several invocations of one function at once), and wait at most `timeout`
    seconds for all of them. A call that is still running then fails the test.

    The barrier only makes the calls start together; where a race needs a precise
    interleaving, hold the callers at a step boundary (`StepBarrier`, fault points whose
    `reach` waits) so that each has done the same reads before any of them writes."""
    import threading

    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            start.wait(timeout)
            results[index] = calls[index]()
        except BaseException as error:  # reported to the test, whatever it is
            errors[index] = error

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, timeout))
    stuck = [i for i, thread in enumerate(threads) if thread.is_alive()]
    assert not stuck, f"calls {stuck} still running after {timeout} s"
    return Concurrent(results, errors)


class StepBarrier(FaultPoints):
    """Fault points whose `reach(point)` holds the first `parties` callers that reach `point`
    until all of them have (later arrivals pass straight on): every worker has done what comes
    before the step before any of them does what comes after. Give each concurrent worker its
    own Runtime with one shared StepBarrier. Other points behave as in `FaultPoints`."""

    def __init__(self, point: str, parties: int, timeout: float = 10.0) -> None:
        import threading

        super().__init__()
        self.point = point
        self._parties = parties
        self._arrived = 0
        self._lock = threading.Lock()
        self._barrier = threading.Barrier(parties, timeout=timeout)

    def reach(self, point: str) -> None:
        if point == self.point:
            with self._lock:
                self._arrived += 1
                held = self._arrived <= self._parties
            if held:
                self._barrier.wait()
        super().reach(point)
