"""Tracking inbound mail end to end, case by case: correlation, filters, delivery status
notifications, one email per message across mailboxes, parties, content and mailbox approval.

The messages are the corpus in tests/fixtures/mail/tracking (its README lists them). Each goes
through the local stack as a poll would hand it over: onto the inbound queue (moto), through the
real deliver_inbound handler (the local runner), into the Dataverse emulator. Expected results
come from each case's definition — Dynamics 365's documented behaviour and the tenant's settings
(participationtypemask 1 sender, 2 To, 3 Cc, 4 Bcc; statecode 1 / statuscode 4 Received,
statecode 0 / statuscode 8 Failed; notifications 1 "not every attachment was saved", 2
"truncated") — and are checked in the organization over its Web API and in the ledger.

One stack serves the module. Before each test the organization is reset to its seed and the
router's tables and queues are emptied, so every test starts from the same state.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import logging
import socketserver
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path
from string import Template
from typing import Any

import pytest
import requests

from emailrouter import aws
from emailrouter.clock import iso
from emailrouter.ledger.models import InboundRecord, OutboundRecord, OutboundState
from emailrouter.ledger.store import Ledger
from emailrouter.local.sqs_events import schedule_event, sqs_event
from emailrouter.local.stack import REGION, LocalStack
from emailrouter.observability import logger
from emailrouter.outbound.events import DSN_EVENT
from emailrouter.runtime import reset_runtime
from emailrouter.tenancy.store import TenantStore
from tests.helpers import (
    ACCOUNT_ID,
    CONTACT_ID,
    QUEUE_ID,
    TENANT,
    USER_ID,
    add_tenant,
    crm_get,
    enqueue_inbound,
    incoming_emails,
    pending_send,
    seed_org,
)
from tests.unit.test_mime_tnef import file_attachment, message_header, tnef_stream

pytestmark = pytest.mark.timeout(120)

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "mail" / "tracking"
DELIVER = "DeliverInboundFunction"

INCIDENT_ID = "11111111-0000-0000-0000-00000000a001"
OPPORTUNITY_ID = "11111111-0000-0000-0000-00000000b001"
DORA_ID = "cccccccc-0000-0000-0000-000000000002"
# (logical name, entity set, id) of the records emails are regarding
ACCOUNT = ("account", "accounts", ACCOUNT_ID)
INCIDENT = ("incident", "incidents", INCIDENT_ID)
OPPORTUNITY = ("opportunity", "opportunities", OPPORTUNITY_ID)

SENDER, TO, CC, BCC = 1, 2, 3, 4
CARL = "carl@client.example"
HELP = "help@acme.example"
UMA = "uma@acme.example"


# ---- the stack, fresh for every test ------------------------------------------------------------


@pytest.fixture(scope="module")
def module_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(
        workdir=tmp_path_factory.mktemp("tracking") / "local", time_scale=0.005, with_dovecot=False
    )
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def stack(module_stack: LocalStack) -> LocalStack:
    """The module's stack with the seeded organization only: no tenant, no ledger entries, no
    queued messages, no cached configuration."""
    _empty_router_state(module_stack)
    module_stack.dataverse.reset()
    seed_org(module_stack)
    module_stack.dataverse.seed(
        {
            "incidents": [{"incidentid": INCIDENT_ID, "title": "Boiler service, main building"}],
            "opportunities": [{"opportunityid": OPPORTUNITY_ID, "name": "Contoso rollout"}],
            # Stored in mixed case, as users type addresses.
            "contacts": [
                {
                    "contactid": DORA_ID,
                    "firstname": "Dora",
                    "lastname": "Diaz",
                    "emailaddress1": "Dora.Diaz@Client.Example",
                    "statecode": 0,
                }
            ],
        }
    )
    reset_runtime()
    return module_stack


def _empty_router_state(stack: LocalStack) -> None:
    assert stack.endpoints is not None and stack.runner is not None
    environment = stack.endpoints.environment
    ddb = aws.client("dynamodb")
    for name in ("LEDGER_TABLE", "TENANTS_TABLE", "IDEMPOTENCY_TABLE", "PARTY_CACHE_TABLE"):
        table = environment[name]
        keys = [k["AttributeName"] for k in ddb.describe_table(TableName=table)["Table"]["KeySchema"]]
        for page in ddb.get_paginator("scan").paginate(
            TableName=table,
            ProjectionExpression=", ".join(f"#k{i}" for i in range(len(keys))),
            ExpressionAttributeNames={f"#k{i}": key for i, key in enumerate(keys)},
        ):
            items = page.get("Items", [])
            for start in range(0, len(items), 25):
                ddb.batch_write_item(
                    RequestItems={table: [{"DeleteRequest": {"Key": i}} for i in items[start : start + 25]]}
                )
    sqs = aws.client("sqs")
    for binding in stack.runner.queues:
        if stack.runner.queue_depth(binding):
            sqs.purge_queue(QueueUrl=binding.queue_url)


@pytest.fixture
def delivery_log() -> Iterator[list[dict[str, Any]]]:
    """What deliver_inbound reports for every message it finishes ("message delivered"), in
    order: mailbox_id, outcome, reason, correlation — duplicates included, which leave no
    record of their own in the ledger."""
    entries: list[dict[str, Any]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "message delivered":
                entries.append(
                    {
                        key: getattr(record, key, None)
                        for key in ("mailbox_id", "outcome", "reason", "correlation", "crm_email_id")
                    }
                )

    handler = Capture(level=logging.INFO)
    target = logging.getLogger(logger.service)
    previous = logger.log_level
    target.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield entries
    target.removeHandler(handler)
    logger.setLevel(previous)


# ---- arranging ----------------------------------------------------------------------------------


def corpus_mail(name: str, **values: str) -> bytes:
    """A corpus message with its `${placeholders}` filled, with CRLF line ends as on the wire."""
    text = Template((CORPUS / f"{name}.eml").read_text(encoding="utf-8")).substitute(values)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def mailbox(mailbox_id: str, tracking: str = "all", **settings: Any) -> dict[str, Any]:
    """A POP3 mailbox `<mailbox_id>@acme.example`; never polled here (messages are queued directly)."""
    return {
        "mailbox_id": mailbox_id,
        "address": f"{mailbox_id}@acme.example",
        "protocol": "pop3",
        "host": "127.0.0.1",
        "port": 1,
        "security": "none",
        "credential_secret": f"emailrouter/{TENANT}/{mailbox_id}",
        "tracking": tracking,
        **settings,
    }


def tenant(stack: LocalStack, *mailbox_ids: str, **settings: Any) -> None:
    add_tenant(stack, [mailbox(m) for m in mailbox_ids or ("help",)], **settings)


_source_refs = itertools.count(1)


def deliver(stack: LocalStack, *arrivals: tuple[bytes, str]) -> int:
    """Queue each (raw message, mailbox id) as a poll of that mailbox would and run deliver_inbound
    until the queue is empty. Returns how many invocations (SQS batches) that took."""
    runner = stack.runner
    assert runner is not None
    invocations, crashed, failed = (
        runner.stats.by_function.get(DELIVER, 0),
        runner.stats.crashed_invocations,
        runner.stats.failed_records,
    )
    for raw, mailbox_id in arrivals:
        enqueue_inbound(stack, raw, mailbox_id=mailbox_id, source_ref=f"{mailbox_id}-{next(_source_refs)}")
    assert runner.drain(30)
    assert runner.stats.crashed_invocations == crashed, "deliver_inbound crashed"
    assert runner.stats.failed_records == failed, "a message went back to its queue"
    return runner.stats.by_function.get(DELIVER, 0) - invocations


def org_email(
    stack: LocalStack,
    subject: str,
    *,
    message_id: str | None = None,
    token: str | None = None,
    regarding: tuple[str, str, str] = INCIDENT,
) -> str:
    """An email the organization has and the router never saw (sent by a user, tracked by
    another deployment), regarding a record."""
    assert stack.endpoints is not None
    logical, entity_set, record_id = regarding
    body: dict[str, Any] = {
        "subject": subject,
        "directioncode": True,
        f"regardingobjectid_{logical}_email@odata.bind": f"/{entity_set}({record_id})",
    }
    if message_id:
        body["messageid"] = message_id
    if token:
        body["trackingtoken"] = token
    response = requests.post(
        f"{stack.endpoints.dataverse_url}/api/data/v9.2/emails",
        json=body,
        headers=_crm_headers(stack),
        timeout=10,
    )
    response.raise_for_status()
    return str(response.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")"))


def send_from_crm(
    stack: LocalStack, subject: str, regarding: tuple[str, str, str] = OPPORTUNITY
) -> tuple[str, OutboundRecord]:
    """Uma's email to Carl, regarding `regarding`, sent through the router (Pending Send → SES →
    Sent). Returns its id and the ledger's outbound record."""
    from botocore.exceptions import ClientError

    assert stack.endpoints is not None and stack.runner is not None
    with contextlib.suppress(ClientError):  # the identity outlives the test
        aws.client("sesv2").create_email_identity(EmailIdentity="acme.example")
    email_id = pending_send(stack, subject)
    # The user sets the regarding record: reopen, set it, send again.
    logical, entity_set, record_id = regarding
    url = f"{stack.endpoints.dataverse_url}/api/data/v9.2/emails({email_id})"
    requests.patch(
        url,
        json={
            "statecode": 0,
            "statuscode": 1,
            f"regardingobjectid_{logical}_email@odata.bind": f"/{entity_set}({record_id})",
        },
        headers=_crm_headers(stack),
        timeout=10,
    ).raise_for_status()
    requests.patch(
        url, json={"statecode": 1, "statuscode": 6}, headers=_crm_headers(stack), timeout=10
    ).raise_for_status()
    assert stack.runner.run_until_idle(rounds=2, max_seconds=60)
    record = Ledger().get_outbound(TENANT, email_id)
    assert record is not None and record.state is OutboundState.SENT, record
    assert record.message_id and record.ses_message_id
    return email_id, record


def sent_router_id(stack: LocalStack, email_id: str) -> str:
    """The X-EmailRouter-Id of the message SES (moto) accepted for `email_id`, as its recipients saw it."""
    assert stack.endpoints is not None
    data = requests.get(f"{stack.endpoints.aws_endpoint}/moto-api/data.json", timeout=30).json()
    for message in (data.get("ses") or {}).get("RawMessage", []):
        raw = message["raw_data"]
        sent = BytesParser(policy=policy.default).parsebytes(raw.encode() if isinstance(raw, str) else raw)
        value = str(sent.get("X-EmailRouter-Id", ""))
        if email_id in value:
            return value
    raise AssertionError(f"no message sent for {email_id}")


def _crm_headers(stack: LocalStack) -> dict[str, str]:
    assert stack.endpoints is not None
    return {
        "Authorization": f"Bearer {stack.endpoints.dataverse_token}",
        "Content-Type": "application/json",
    }


FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)


def thread_index(conversation: uuid.UUID, started: datetime, replies: int) -> str:
    """An Outlook Thread-Index in base64: the 22-byte header block (a reserved byte, the five
    high bytes of the FILETIME the conversation started, its GUID), then one 5-byte child block
    per reply (a code bit, 31 bits of time since the start, 4 random bits, a 4-bit sequence)."""
    filetime = int((started - FILETIME_EPOCH).total_seconds() * 10_000_000)
    index = b"\x01" + filetime.to_bytes(8, "big")[:5] + conversation.bytes
    for reply in range(1, replies + 1):
        delta = (reply * 3600 * 10_000_000) >> 18  # an hour per reply, in units of 2^18 ticks
        index += ((delta & 0x7FFFFFFF) << 8 | (reply * 7 & 0xF) << 4 | reply & 0xF).to_bytes(5, "big")
    return base64.b64encode(index).decode("ascii")


# ---- reading the outcome ----------------------------------------------------------------------


def tracked(stack: LocalStack, message_id: str) -> dict[str, Any] | None:
    """The organization's received email for `message_id` (at most one may exist)."""
    found = [e for e in incoming_emails(stack) if e.get("messageid") == message_id]
    assert len(found) <= 1, f"{len(found)} emails for {message_id}"
    return found[0] if found else None


def the_email(stack: LocalStack, message_id: str) -> dict[str, Any]:
    email = tracked(stack, message_id)
    assert email is not None, f"no email for {message_id}"
    return email


def parties(email: dict[str, Any]) -> set[tuple[int, str | None, str | None]]:
    """(participationtypemask, bound record id or None, addressused) of every party; no party
    may be there twice."""
    found = [
        (p["participationtypemask"], p.get("_partyid_value"), p.get("addressused"))
        for p in email["email_activity_parties"]
    ]
    assert len(found) == len(set(found)), f"a party is there twice: {sorted(found, key=str)}"
    return set(found)


def regarding(email: dict[str, Any]) -> tuple[str, str] | None:
    record = email.get("_regardingobjectid_value")
    if not record:
        return None
    return str(email.get("_regardingobjectid_value@Microsoft.Dynamics.CRM.lookuplogicalname")), str(record)


def attachments(email: dict[str, Any]) -> set[tuple[str, str, str | None]]:
    return {
        (a["filename"], a["mimetype"], a.get("attachmentcontentid"))
        for a in email["email_activity_mime_attachment"]
    }


def record(message_id: str) -> InboundRecord:
    """The ledger's record of the message with `message_id` (one per message per tenant)."""
    found = [r for r in Ledger().list_messages(TENANT) if r.message_id == message_id]
    assert len(found) == 1, f"{len(found)} ledger records for {message_id}"
    return found[0]


def assert_outcome(
    message_id: str, outcome: str, *, reason: str = "", correlation: str | None = None
) -> InboundRecord:
    found = record(message_id)
    assert found.outcome is not None and found.outcome.value == outcome, (found.outcome, found.reason)
    assert reason.lower() in found.reason.lower(), found.reason
    assert found.correlation == correlation, (found.correlation, found.reason)
    return found


def email_reads(stack: LocalStack, since: int) -> list[str]:
    """Web API GETs on `emails` among the organization's requests after the first `since`."""
    return [
        r["path"]
        for r in stack.dataverse.stats()["requests"][since:]
        if r["method"] == "GET" and r["path"].rsplit("/", 1)[-1].startswith("emails")
    ]


def request_count(stack: LocalStack) -> int:
    return len(stack.dataverse.stats()["requests"])


def contact_addresses(stack: LocalStack) -> set[str]:
    return {
        str(c.get("emailaddress1") or "").lower()
        for c in crm_get(stack, "contacts?$select=emailaddress1")["value"]
    }


def outbound_row(stack: LocalStack, email_id: str) -> dict[str, Any]:
    return dict(crm_get(stack, f"emails({email_id})?$select=statecode,statuscode,description"))


# ==== 1. correlation ============================================================================


def test_reply_to_mail_only_the_org_knows_correlates_through_the_org_fallback(stack: LocalStack) -> None:
    tenant(stack)
    org_email(stack, "Service visit on 3 December", message_id="<visit-0001@acme.example>")
    before = request_count(stack)

    deliver(stack, (corpus_mail("org_reply"), "help"))

    email = the_email(stack, "<visit-0002@client.example>")
    assert regarding(email) == ("incident", INCIDENT_ID)
    assert parties(email) == {(SENDER, CONTACT_ID, CARL), (TO, QUEUE_ID, HELP)}
    assert (email["statecode"], email["statuscode"]) == (1, 4)
    assert email["conversationindex"] is None  # no Thread-Index
    assert_outcome("<visit-0002@client.example>", "correlated", correlation="in-reply-to")
    assert email_reads(stack, before), "the organization's emails were never asked"


def test_reply_to_a_tracked_message_correlates_from_the_ledger_without_asking_the_org(
    stack: LocalStack,
) -> None:
    tenant(stack)
    org_email(stack, "Service visit on 3 December", message_id="<visit-0001@acme.example>")
    deliver(stack, (corpus_mail("org_reply"), "help"))
    before = request_count(stack)

    deliver(stack, (corpus_mail("ledger_reply"), "help"))

    assert email_reads(stack, before) == []
    email = the_email(stack, "<visit-0003@client.example>")
    assert regarding(email) == ("incident", INCIDENT_ID)
    assert_outcome("<visit-0003@client.example>", "correlated", correlation="in-reply-to")


def test_references_alone_correlate_to_a_tracked_message(stack: LocalStack) -> None:
    tenant(stack)
    org_email(stack, "Service visit on 3 December", message_id="<visit-0001@acme.example>")
    deliver(stack, (corpus_mail("org_reply"), "help"))

    deliver(stack, (corpus_mail("references_only"), "help"))

    assert regarding(the_email(stack, "<visit-0004@client.example>")) == ("incident", INCIDENT_ID)
    assert_outcome("<visit-0004@client.example>", "correlated", correlation="in-reply-to")


def test_reply_to_router_sent_mail_correlates_by_the_ses_assigned_message_id(stack: LocalStack) -> None:
    tenant(stack, "help", "uma")
    _email_id, sent = send_from_crm(stack, "Your quote for the annual service plan")
    # What the recipient got: SES replaced our Message-ID with its own, at the region's host.
    ses_header = f"<{sent.ses_message_id}@{REGION}.amazonses.com>"

    deliver(stack, (corpus_mail("reply_to_sent_ses_id", ses_message_id=ses_header), "uma"))

    email = the_email(stack, "<quote-reply-1@client.example>")
    assert regarding(email) == ("opportunity", OPPORTUNITY_ID)
    assert parties(email) == {(SENDER, CONTACT_ID, CARL), (TO, USER_ID, UMA)}
    assert_outcome("<quote-reply-1@client.example>", "correlated", correlation="in-reply-to")


def test_reply_to_router_sent_mail_correlates_by_our_message_id_in_references(stack: LocalStack) -> None:
    tenant(stack, "help", "uma")
    _email_id, sent = send_from_crm(stack, "Your quote for the annual service plan")
    assert sent.message_id is not None

    deliver(stack, (corpus_mail("reply_to_sent_references", our_message_id=sent.message_id), "uma"))

    email = the_email(stack, "<quote-reply-2@client.example>")
    assert regarding(email) == ("opportunity", OPPORTUNITY_ID)
    assert (CC, None, "pat.whitfield@client.example") in parties(email)
    assert_outcome("<quote-reply-2@client.example>", "correlated", correlation="in-reply-to")


def test_tracking_token_the_router_issued_correlates_and_a_token_of_another_base_is_ignored(
    stack: LocalStack,
) -> None:
    add_tenant(
        stack,
        [mailbox("help"), mailbox("uma")],
        tracking_token={"enabled": True, "prefix": "CRM", "base": 1},
    )
    # Another deployment's token (base 0) on an email the organization has, regarding the account.
    org_email(stack, "Delivery schedule CRM:0001001", token="CRM:0001001", regarding=ACCOUNT)
    email_id, _sent = send_from_crm(stack, "Your quote for the annual service plan")
    token = str(crm_get(stack, f"emails({email_id})?$select=trackingtoken")["trackingtoken"])
    assert token.startswith("CRM:1")  # this organization's base

    batches = deliver(
        stack,
        (corpus_mail("token_reply", token=token), "uma"),
        (corpus_mail("token_other_base"), "uma"),
    )

    assert batches == 1
    ours = the_email(stack, "<token-reply-1@webmail.client.example>")
    assert regarding(ours) == ("opportunity", OPPORTUNITY_ID)
    assert_outcome("<token-reply-1@webmail.client.example>", "correlated", correlation="tracking-token")
    assert ours["trackingtoken"] == token  # the reply carries the thread's token, as CRM stores it
    theirs = the_email(stack, "<token-reply-2@webmail.client.example>")
    assert regarding(theirs) is None
    assert not theirs.get("trackingtoken")
    assert_outcome("<token-reply-2@webmail.client.example>", "created")


def _site_survey(stack: LocalStack) -> tuple[str, str]:
    """The survey email in the organization and the Thread-Index values of Carl's reply to it
    and of his next message in the same conversation."""
    org_email(stack, "Site survey", message_id="<survey-0001@acme.example>")
    conversation = uuid.UUID("5b0c9f4e-7d21-4c3a-9e8f-1a2b3c4d5e6f")
    started = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
    return thread_index(conversation, started, 1), thread_index(conversation, started, 2)


REPLY_ID = "<AM0PR07MB4411C2D0A1B2C3D4E5F6A7B8C9D0@AM0PR07MB4411.eurprd07.prod.outlook.com>"
FOLLOWUP_ID = "<AM0PR07MB4411F1E2D3C4B5A69788A7B6C5D4@AM0PR07MB4411.eurprd07.prod.outlook.com>"


def test_thread_index_continuing_a_tracked_conversation_correlates(stack: LocalStack) -> None:
    tenant(stack)
    reply_index, followup_index = _site_survey(stack)
    assert followup_index != reply_index and len(base64.b64decode(followup_index)) == 22 + 2 * 5
    deliver(stack, (corpus_mail("thread_index_reply", thread_index=reply_index), "help"))
    assert the_email(stack, REPLY_ID)["conversationindex"] == reply_index
    assert_outcome(REPLY_ID, "correlated", correlation="in-reply-to")

    deliver(stack, (corpus_mail("thread_index_followup", thread_index=followup_index), "help"))

    email = the_email(stack, FOLLOWUP_ID)
    assert regarding(email) == ("incident", INCIDENT_ID)
    assert email["conversationindex"] == followup_index
    assert_outcome(FOLLOWUP_ID, "correlated", correlation="conversation-index")


def test_smart_matching_needs_the_same_subject_words_and_two_shared_participants(stack: LocalStack) -> None:
    tenant(stack, correlation={"smart_matching": True})
    org_email(
        stack,
        "Pricing for the Contoso rollout",
        message_id="<pricing-0001@acme.example>",
        regarding=OPPORTUNITY,
    )
    deliver(stack, (corpus_mail("smart_first"), "help"))  # Carl to help, Uma in copy
    assert_outcome("<pricing-0002@client.example>", "correlated", correlation="in-reply-to")

    deliver(stack, (corpus_mail("smart_reply"), "help"), (corpus_mail("smart_stranger"), "help"))

    # Carl and help shared: the same thread.
    reply_id = "<0F3A7C1E-5B2D-4E8A-9C61-7D0B3E2F4A19@client.example>"
    assert regarding(the_email(stack, reply_id)) == ("opportunity", OPPORTUNITY_ID)
    assert_outcome(reply_id, "correlated", correlation="smart-matching")
    # Only help shared: a new thread, although the subject words are the same.
    stranger_id = "<b7e2c9a4d1f0@mail.other.example>"
    assert regarding(the_email(stack, stranger_id)) is None
    assert_outcome(stranger_id, "created")


def test_in_reply_to_switched_off_for_the_tenant_does_not_correlate(stack: LocalStack) -> None:
    tenant(stack, correlation={"in_reply_to": False})
    org_email(stack, "Service visit on 3 December", message_id="<visit-0001@acme.example>")

    deliver(stack, (corpus_mail("org_reply"), "help"))

    assert regarding(the_email(stack, "<visit-0002@client.example>")) is None
    assert_outcome("<visit-0002@client.example>", "created")


def test_conversation_index_switched_off_for_the_tenant_does_not_correlate(stack: LocalStack) -> None:
    tenant(stack, correlation={"conversation_index": False})
    reply_index, followup_index = _site_survey(stack)
    deliver(stack, (corpus_mail("thread_index_reply", thread_index=reply_index), "help"))

    deliver(stack, (corpus_mail("thread_index_followup", thread_index=followup_index), "help"))

    assert regarding(the_email(stack, FOLLOWUP_ID)) is None
    assert_outcome(FOLLOWUP_ID, "created")


@pytest.mark.parametrize("correlate_forwards", [False, True])
def test_forwards_start_a_new_thread_unless_the_tenant_correlates_forwards(
    stack: LocalStack, correlate_forwards: bool
) -> None:
    tenant(stack, correlation={"correlate_forwards": correlate_forwards})
    org_email(stack, "Service visit on 3 December", message_id="<visit-0001@acme.example>")

    deliver(stack, (corpus_mail("forward_fw"), "help"), (corpus_mail("forward_wg"), "help"))

    for message_id in ("<visit-fw-0005@client.example>", "<visit-wg-0006@client.example>"):
        email = the_email(stack, message_id)
        if correlate_forwards:
            assert regarding(email) == ("incident", INCIDENT_ID), message_id
            assert_outcome(message_id, "correlated", correlation="in-reply-to")
        else:
            assert regarding(email) is None, message_id
            assert_outcome(message_id, "created")


# ==== 2. filters ================================================================================


def test_tracking_options_decide_which_messages_become_emails(stack: LocalStack) -> None:
    add_tenant(
        stack,
        [
            mailbox("help", "responses"),
            mailbox("all", "all"),
            mailbox("records", "crm_records"),
            mailbox("enabled", "email_enabled"),
            mailbox("none", "none"),
        ],
    )
    org_email(stack, "Service visit on 3 December", message_id="<visit-0001@acme.example>")
    carl, uma, office = (
        "Carl Contact <carl@client.example>",
        "Uma User <uma@acme.example>",
        "office@client.example",
    )
    stranger = "Ivy Unknown <ivy@unknown.example>"
    cases = [
        # (mailbox, sender, message id, tracked?, filter reason)
        ("help", carl, "<opt-1@client.example>", False, "not a response to CRM email"),
        ("all", stranger, "<opt-2@unknown.example>", True, ""),
        ("records", carl, "<opt-3@client.example>", True, ""),
        ("records", office, "<opt-4@client.example>", True, ""),
        ("records", uma, "<opt-5@acme.example>", False, "not a CRM lead, contact or account"),
        ("enabled", uma, "<opt-6@acme.example>", True, ""),
        ("enabled", stranger, "<opt-7@unknown.example>", False, "not an email-enabled CRM record"),
        ("none", carl, "<opt-8@client.example>", False, "tracking option: none"),
    ]
    arrivals = [
        (corpus_mail("new_request", sender=s, to=f"{m}@acme.example", message_id=i), m)
        for m, s, i, _, _ in cases
    ]

    deliver(stack, *arrivals, (corpus_mail("org_reply"), "help"))

    for mailbox_id, _sender, message_id, is_tracked, reason in cases:
        assert (tracked(stack, message_id) is not None) is is_tracked, (mailbox_id, message_id)
        assert_outcome(message_id, "created" if is_tracked else "filtered", reason=reason)
    # A response is tracked by a mailbox that tracks only responses.
    assert regarding(the_email(stack, "<visit-0002@client.example>")) == ("incident", INCIDENT_ID)
    assert_outcome("<visit-0002@client.example>", "correlated", correlation="in-reply-to")


def test_automatic_mail_is_filtered_and_a_mailing_list_is_not_by_default(stack: LocalStack) -> None:
    tenant(stack)
    cases = {
        "auto_submitted": ("<oof-8812@client.example>", "Auto-Submitted"),
        "suppress_all": ("<remit-20261127-0042@billing.client.example>", "X-Auto-Response-Suppress"),
        "precedence_bulk": ("<nl-2026-11.4471@news.client.example>", "Precedence"),
        "x_loop": ("<1764251425.417@tickets.client.example>", "X-Loop"),
    }

    deliver(stack, *[(corpus_mail(name), "help") for name in cases], (corpus_mail("mailing_list"), "help"))

    for message_id, header in cases.values():
        assert tracked(stack, message_id) is None, message_id
        assert_outcome(message_id, "filtered", reason=header)
    assert tracked(stack, "<list-4431@client.example>") is not None
    assert_outcome("<list-4431@client.example>", "created")


LIST_POSTS = {  # human posts a list server distributed, with the Precedence it adds
    "mailing_list": ("<list-4431@client.example>", "List-Id"),
    "list_post_precedence": ("<list-4432@client.example>", "List-Id"),
    "list_post_ezmlm": ("<ezmlm-7719@client.example>", "Mailing-List"),
}


def test_human_list_mail_is_tracked_by_default_whatever_its_precedence(stack: LocalStack) -> None:
    tenant(stack)

    deliver(
        stack,
        *[(corpus_mail(name), "help") for name in LIST_POSTS],
        (corpus_mail("list_autoreply"), "help"),
        (corpus_mail("precedence_bulk"), "help"),
    )

    for message_id, _header in LIST_POSTS.values():
        assert tracked(stack, message_id) is not None, message_id
        assert_outcome(message_id, "created")
    # An autoresponder's answer through a list is automatic; so is bulk mail without list headers.
    assert tracked(stack, "<vacation-5580@client.example>") is None
    assert_outcome("<vacation-5580@client.example>", "filtered", reason="auto-generated (X-Autoreply)")
    assert_outcome("<nl-2026-11.4471@news.client.example>", "filtered", reason="Precedence: bulk")


def test_mailing_list_is_filtered_when_the_tenant_counts_lists_as_automatic(stack: LocalStack) -> None:
    tenant(stack, auto_generated={"list_id": True})

    deliver(stack, *[(corpus_mail(name), "help") for name in LIST_POSTS])

    for message_id, header in LIST_POSTS.values():
        assert tracked(stack, message_id) is None, message_id
        assert_outcome(message_id, "filtered", reason=f"mailing list ({header}")


def test_automatic_mail_is_tracked_when_the_tenant_says_so_without_creating_a_contact(
    stack: LocalStack,
) -> None:
    add_tenant(stack, [mailbox("help", auto_create_contact=True)], auto_generated={"track": True})

    deliver(stack, (corpus_mail("auto_from_unknown"), "help"))

    message_id = "<alarm-20261127-1709@alerts.newco.example>"
    email = the_email(stack, message_id)
    assert (SENDER, None, "alerts@newco.example") in parties(email)
    assert_outcome(message_id, "created")
    contacts = crm_get(stack, "contacts?$select=contactid&$filter=emailaddress1 eq 'alerts@newco.example'")
    assert contacts["value"] == []


def test_mail_received_before_the_mailbox_start_date_is_filtered(stack: LocalStack) -> None:
    add_tenant(stack, [mailbox("help", process_email_received_after="2026-11-01T00:00:00Z")])

    deliver(
        stack, (corpus_mail("received_before_start"), "help"), (corpus_mail("received_after_start"), "help")
    )

    assert tracked(stack, "<meter-2026-10@client.example>") is None
    assert_outcome("<meter-2026-10@client.example>", "filtered", reason="before the mailbox's start date")
    assert tracked(stack, "<meter-2026-11@client.example>") is not None
    assert_outcome("<meter-2026-11@client.example>", "created")


def test_loop_protection_counts_the_messages_of_one_batch(stack: LocalStack) -> None:
    tenant(
        stack, loop_protection={"max_messages": 3, "window_minutes": 120, "allow": ["office@client.example"]}
    )
    arrivals = [
        (corpus_mail("status_update", sender=sender, sender_tag=tag, n=str(n)), "help")
        for n in range(5)
        for sender, tag in (
            ("Boiler Monitor <carl@client.example>", "carl"),
            ("office@client.example", "office"),
        )
    ]

    batches = deliver(stack, *arrivals)

    assert batches == 1
    flooding = [record(f"<reading-{n}.carl@monitor.client.example>") for n in range(5)]
    assert sorted(str(r.outcome) for r in flooding) == ["created"] * 3 + ["filtered"] * 2
    assert all(
        "loop protection" in r.reason and "limit 3" in r.reason for r in flooding if r.outcome == "filtered"
    )
    allowed = [record(f"<reading-{n}.office@monitor.client.example>") for n in range(5)]
    assert [str(r.outcome) for r in allowed] == ["created"] * 5
    assert len(incoming_emails(stack)) == 8


# ==== 3. delivery status notifications ==========================================================


def _failed_as_bounced(stack: LocalStack, email_id: str, status: str) -> None:
    """The outbound email is Failed with the bounce in its description, the ledger's outbound
    record holds the report, Carl is on the suppression list, and the report is no email."""
    row = outbound_row(stack, email_id)
    assert (row["statecode"], row["statuscode"]) == (0, 8)
    assert "Hello" in row["description"]  # the body the user wrote is kept
    assert status in row["description"] and CARL in row["description"]
    outbound = Ledger().get_outbound(TENANT, email_id)
    assert outbound is not None and outbound.last_event == DSN_EVENT
    assert Ledger().suppressed(TENANT, [CARL]) == {CARL}
    assert incoming_emails(stack) == []


def test_bounce_of_router_sent_mail_marks_it_failed_and_suppresses_the_recipient(stack: LocalStack) -> None:
    tenant(stack, "help", "uma")
    email_id, sent = send_from_crm(stack, "Your quote for the annual service plan")
    bounce = corpus_mail(
        "dsn_bounce_full",
        ses_message_id=f"<{sent.ses_message_id}@{REGION}.amazonses.com>",
        our_message_id=str(sent.message_id),
        router_id=sent_router_id(stack, email_id),
    )

    deliver(stack, (bounce, "uma"))

    _failed_as_bounced(stack, email_id, "5.1.1")
    assert_outcome("<20261127150007.7F1A2400D5@mx1.client.example>", "filtered", reason=email_id)


def test_report_naming_an_address_longer_than_smtp_allows_is_handled_not_retried(stack: LocalStack) -> None:
    """RFC 5321 4.5.3.1: a path is at most 256 octets. A Final-Recipient beyond that is no
    address: it is left out (with a defect) instead of becoming a ledger key DynamoDB refuses,
    which would send the message back to its queue forever."""
    tenant(stack, "help", "uma")
    email_id, sent = send_from_crm(stack, "Your quote for the annual service plan")
    bounce = corpus_mail(
        "dsn_bounce_full",
        ses_message_id=f"<{sent.ses_message_id}@{REGION}.amazonses.com>",
        our_message_id=str(sent.message_id),
        router_id=sent_router_id(stack, email_id),
    )
    huge = "x" * 1100 + "@client.example"
    extra = (f"\r\nFinal-Recipient: rfc822; {huge}\r\nAction: failed\r\nStatus: 5.1.1\r\n").encode()
    bounce = bounce.replace(
        b"User unknown in virtual mailbox table\r\n", b"User unknown in virtual mailbox table\r\n" + extra, 1
    )
    assert huge.encode() in bounce

    deliver(stack, (bounce, "uma"))

    _failed_as_bounced(stack, email_id, "5.1.1")
    found = assert_outcome("<20261127150007.7F1A2400D5@mx1.client.example>", "filtered", reason=email_id)
    assert huge not in found.reason


def test_report_whose_status_is_in_a_later_status_part_marks_the_bounce(stack: LocalStack) -> None:
    """A gateway writes a first status part with only its banner and per-message fields, and
    Carl's failure in a second one (after a stray block without Action): every status part is
    read and the recipient with a definite action counts."""
    tenant(stack, "help", "uma")
    email_id, sent = send_from_crm(stack, "Your quote for the annual service plan")
    bounce = corpus_mail(
        "dsn_multi_status",
        ses_message_id=f"<{sent.ses_message_id}@{REGION}.amazonses.com>",
        our_message_id=str(sent.message_id),
        router_id=sent_router_id(stack, email_id),
    )

    deliver(stack, (bounce, "uma"))

    _failed_as_bounced(stack, email_id, "5.1.1")
    assert_outcome("<dsn-20261127161001.99@gw.client.example>", "filtered", reason=email_id)


@pytest.mark.parametrize("returned_id", ["ses-assigned", "rendered"])
def test_bounce_naming_only_the_sent_message_id_is_matched(stack: LocalStack, returned_id: str) -> None:
    tenant(stack, "help", "uma")
    email_id, sent = send_from_crm(stack, "Your quote for the annual service plan")
    message_id = (
        f"<{sent.ses_message_id}@{REGION}.amazonses.com>"
        if returned_id == "ses-assigned"
        else str(sent.message_id)
    )

    deliver(stack, (corpus_mail("dsn_bounce_headers", returned_message_id=message_id), "uma"))

    _failed_as_bounced(stack, email_id, "5.1.10")
    assert_outcome("<0e7c2b14-5d1f-4f3a-9a0e-4b8d2c6e1f37@EX01.client.example>", "filtered", reason=email_id)


@pytest.mark.parametrize("forged", ["plain ids", "wrong signature", "another email's signature"])
def test_forged_router_id_in_a_report_is_not_trusted(stack: LocalStack, forged: str) -> None:
    """Every recipient sees X-EmailRouter-Id. A report that names the email only by a header
    the router did not sign (the tenant and email ids in clear, a made-up signature, or the
    signature of another email) neither fails the email nor suppresses anyone."""
    tenant(stack, "help", "uma")
    email_id, _sent = send_from_crm(stack, "Your quote for the annual service plan")
    other_id, _other = send_from_crm(stack, "Your second quote")
    signed = sent_router_id(stack, other_id)
    router_id = {
        "plain ids": f"{TENANT}/{email_id}",
        "wrong signature": f"{TENANT}/{email_id}/{'0' * 32}",
        "another email's signature": signed.replace(other_id, email_id),
    }[forged]
    bounce = corpus_mail(
        "dsn_bounce_full",
        ses_message_id="<forged-1@attacker.example>",
        our_message_id="<forged-2@attacker.example>",
        router_id=router_id,
    )

    deliver(stack, (bounce, "uma"))

    row = outbound_row(stack, email_id)
    assert (row["statecode"], row["statuscode"]) == (1, 3)  # still Sent
    assert Ledger().suppressed(TENANT, [CARL]) == set()
    outbound = Ledger().get_outbound(TENANT, email_id)
    assert outbound is not None and outbound.last_event != DSN_EVENT
    assert_outcome(
        "<20261127150007.7F1A2400D5@mx1.client.example>", "filtered", reason="mail the router did not send"
    )


def test_report_on_a_sent_email_affects_only_that_emails_recipients(stack: LocalStack) -> None:
    """A recipient of the email knows its Message-ID and can forge a report on it: the report
    counts only for addresses the email went to. Dora never received it: she is not suppressed
    and the email is not failed on her account."""
    tenant(stack, "help", "uma")
    email_id, sent = send_from_crm(stack, "Your quote for the annual service plan")
    bounce = corpus_mail(
        "dsn_bounce_full",
        ses_message_id=f"<{sent.ses_message_id}@{REGION}.amazonses.com>",
        our_message_id=str(sent.message_id),
        router_id=sent_router_id(stack, email_id),
    ).replace(CARL.encode(), b"dora.diaz@client.example")

    deliver(stack, (bounce, "uma"))

    row = outbound_row(stack, email_id)
    assert (row["statecode"], row["statuscode"]) == (1, 3)  # still Sent
    assert Ledger().suppressed(TENANT, ["dora.diaz@client.example", CARL]) == set()
    found = assert_outcome("<20261127150007.7F1A2400D5@mx1.client.example>", "filtered", reason=email_id)
    assert "not a recipient" in found.reason


def test_bounce_of_mail_the_router_did_not_send_is_filtered_with_the_reason(stack: LocalStack) -> None:
    tenant(stack, "help", "uma")

    deliver(stack, (corpus_mail("dsn_unknown_message"), "uma"))

    assert incoming_emails(stack) == []
    assert_outcome(
        "<20261127152016.3C9D1400E2@mx1.client.example>", "filtered", reason="mail the router did not send"
    )
    assert Ledger().suppressed(TENANT, ["dora.diaz@client.example"]) == set()


def test_delayed_delivery_report_does_not_fail_the_email(stack: LocalStack) -> None:
    tenant(stack, "help", "uma")
    email_id, sent = send_from_crm(stack, "Your quote for the annual service plan")
    delay = corpus_mail(
        "dsn_delayed",
        ses_message_id=f"<{sent.ses_message_id}@{REGION}.amazonses.com>",
        our_message_id=str(sent.message_id),
        router_id=sent_router_id(stack, email_id),
    )

    deliver(stack, (delay, "uma"))

    row = outbound_row(stack, email_id)
    assert (row["statecode"], row["statuscode"]) == (1, 3)  # still Sent
    outbound = Ledger().get_outbound(TENANT, email_id)
    assert outbound is not None and outbound.last_event == DSN_EVENT
    assert Ledger().suppressed(TENANT, [CARL]) == set()
    assert incoming_emails(stack) == []
    assert_outcome("<20261127190029.5E2B7400F9@mx1.client.example>", "filtered", reason=email_id)


PLAIN_BOUNCES = {
    "bounce_exim": "<E1vQ2xk-0003aB-7C@mx.client.example>",
    "bounce_qmail": "<20261127150231.28193.qmail@mail.client.example>",
    "bounce_gmail": "<5f2a9c61.1c69fb81.0a1b.77aa.GMR@mx.google.com>",
    "bounce_sendmail": "<202611271504.4ARF4Lq0019911@relay.client.example>",
    "bounce_office365": "<ab12cd34-0000-4000-8000-0123456789ab@AM0PR01MB1234.eurprd01.prod.outlook.com>",
}


@pytest.mark.parametrize("name", sorted(PLAIN_BOUNCES))
def test_plain_text_bounce_of_router_sent_mail_marks_it_failed_like_a_structured_one(
    stack: LocalStack, name: str
) -> None:
    """Bounces without multipart/report (Exim, qmail, Gmail, old sendmail, Office 365's text)
    are recognised from their headers and wording, matched through the quoted original's
    headers, and recorded as a structured report would be; no email, no contact."""
    add_tenant(stack, [mailbox("help"), mailbox("uma", auto_create_contact=True)])
    email_id, sent = send_from_crm(stack, "Your quote for the annual service plan")
    bounce = corpus_mail(
        name,
        ses_message_id=f"<{sent.ses_message_id}@{REGION}.amazonses.com>",
        our_message_id=str(sent.message_id),
        router_id=sent_router_id(stack, email_id),
    )

    deliver(stack, (bounce, "uma"))

    _failed_as_bounced(stack, email_id, "5.1.1" if name != "bounce_office365" else "5.1.10")
    assert_outcome(PLAIN_BOUNCES[name], "filtered", reason=email_id)
    assert not any(a.startswith(("postmaster@", "mailer-daemon@")) for a in contact_addresses(stack))


def test_plain_text_bounce_of_other_mail_is_filtered_and_a_postmaster_gets_no_contact(
    stack: LocalStack,
) -> None:
    """A bounce of mail sent from elsewhere is still no email; a person writing from postmaster@
    is tracked, but a mailer daemon's address never becomes a contact."""
    add_tenant(stack, [mailbox("uma", auto_create_contact=True)])
    bounce = corpus_mail(
        "bounce_qmail",
        ses_message_id="<elsewhere-1@mail.acme.example>",
        our_message_id="<elsewhere-0@mail.acme.example>",
        router_id="",
    )

    deliver(stack, (bounce, "uma"), (corpus_mail("postmaster_note"), "uma"))

    assert_outcome(PLAIN_BOUNCES["bounce_qmail"], "filtered", reason="mail the router did not send")
    note = the_email(stack, "<note-44@client.example>")
    assert {p for p in parties(note) if p[0] == SENDER} == {(SENDER, None, "postmaster@client.example")}
    addresses = {
        str(c.get("emailaddress1") or "").lower()
        for c in crm_get(stack, "contacts?$select=emailaddress1")["value"]
    }
    assert not any(a.startswith(("postmaster@", "mailer-daemon@")) for a in addresses)


@pytest.mark.parametrize("complainer", [CARL, "dora.diaz@client.example"])
def test_abuse_report_on_router_sent_mail_records_the_complaint_and_suppresses_the_recipient(
    stack: LocalStack, complainer: str
) -> None:
    """An ARF report (a feedback loop forwarding a recipient's "this is spam") on mail the router
    sent is recorded on that email as SES's complaint events are, and suppresses the complaining
    address — only when it is one the email went to. It never becomes an email, and the sent
    email stays Sent."""
    tenant(stack, "help", "uma")
    email_id, sent = send_from_crm(stack, "Your quote for the annual service plan")
    report = corpus_mail(
        "arf_complaint",
        ses_message_id=f"<{sent.ses_message_id}@{REGION}.amazonses.com>",
        our_message_id=str(sent.message_id),
        router_id=sent_router_id(stack, email_id),
        complainer=complainer,
    )

    deliver(stack, (report, "uma"))

    assert incoming_emails(stack) == []
    found = assert_outcome("<fbl-20261128091241.5512@feedback.mailbox.example>", "filtered", reason=email_id)
    assert "abuse" in found.reason
    row = outbound_row(stack, email_id)
    assert (row["statecode"], row["statuscode"]) == (1, 3)  # still Sent
    outbound = Ledger().get_outbound(TENANT, email_id)
    suppressed = Ledger().suppressed(TENANT, [CARL, "dora.diaz@client.example"])
    if complainer == CARL:
        assert outbound is not None and outbound.last_event == "Complaint"
        assert suppressed == {CARL}
    else:
        assert suppressed == set()
        assert "not a recipient" in found.reason


def test_abuse_report_on_mail_the_router_did_not_send_is_filtered(stack: LocalStack) -> None:
    tenant(stack, "help", "uma")
    report = corpus_mail(
        "arf_complaint",
        ses_message_id="<elsewhere-1@mail.acme.example>",
        our_message_id="<elsewhere-0@mail.acme.example>",
        router_id="",
        complainer=CARL,
    )

    deliver(stack, (report, "uma"))

    assert incoming_emails(stack) == []
    assert_outcome(
        "<fbl-20261128091241.5512@feedback.mailbox.example>",
        "filtered",
        reason="mail the router did not send",
    )
    assert Ledger().suppressed(TENANT, [CARL]) == set()


def test_read_receipt_is_filtered_as_automatic_unless_the_tenant_tracks_automatic_mail(
    stack: LocalStack,
) -> None:
    tenant(stack, "help", "uma")
    deliver(stack, (corpus_mail("read_receipt"), "uma"))

    assert tracked(stack, "<mdn-7c1e@mail.client.example>") is None
    assert_outcome("<mdn-7c1e@mail.client.example>", "filtered", reason="read receipt")

    _empty_router_state(stack)
    tenant(stack, "help", "uma", auto_generated={"track": True})
    reset_runtime()
    deliver(stack, (corpus_mail("read_receipt"), "uma"))

    email = the_email(stack, "<mdn-7c1e@mail.client.example>")
    assert email["subject"] == "Read: Your quote for the annual service plan"


# ==== 4. one email per message across mailboxes ================================================

WAREHOUSE = "<warehouse-boiler-1@client.example>"
VALVE = "<warehouse-valve-1@client.example>"


def test_same_message_to_two_mailboxes_in_one_batch_is_one_email(
    stack: LocalStack, delivery_log: list[dict[str, Any]]
) -> None:
    tenant(stack, "help", "sales")
    raw = corpus_mail("to_help_cc_sales")

    batches = deliver(stack, (raw, "help"), (raw, "sales"))

    assert batches == 1
    email = the_email(stack, WAREHOUSE)
    assert parties(email) == {
        (SENDER, CONTACT_ID, CARL),
        (TO, QUEUE_ID, HELP),
        (CC, None, "sales@acme.example"),
    }
    assert sorted(str(e["outcome"]) for e in delivery_log) == ["created", "duplicate"]
    assert_outcome(WAREHOUSE, "created")


def test_same_message_to_two_mailboxes_in_separate_batches_is_one_email(
    stack: LocalStack, delivery_log: list[dict[str, Any]]
) -> None:
    tenant(stack, "help", "sales")
    raw = corpus_mail("to_help_cc_sales")

    deliver(stack, (raw, "help"))
    deliver(stack, (raw, "sales"))

    email = the_email(stack, WAREHOUSE)
    assert parties(email) == {
        (SENDER, CONTACT_ID, CARL),
        (TO, QUEUE_ID, HELP),
        (CC, None, "sales@acme.example"),
    }
    assert [(e["mailbox_id"], str(e["outcome"])) for e in delivery_log] == [
        ("help", "created"),
        ("sales", "duplicate"),
    ]
    assert_outcome(WAREHOUSE, "created")


@pytest.mark.parametrize("order", ["same batch", "named mailbox first", "unnamed mailbox first"])
def test_mailbox_the_headers_do_not_name_becomes_a_bcc_party(
    stack: LocalStack, delivery_log: list[dict[str, Any]], order: str
) -> None:
    tenant(stack, "help", "support")
    raw = corpus_mail("to_help_only")  # To: help; support got it as a Bcc

    if order == "same batch":
        assert deliver(stack, (raw, "help"), (raw, "support")) == 1
    elif order == "named mailbox first":
        deliver(stack, (raw, "help"))
        deliver(stack, (raw, "support"))
    else:
        deliver(stack, (raw, "support"))
        deliver(stack, (raw, "help"))

    email = the_email(stack, VALVE)
    assert parties(email) == {
        (SENDER, CONTACT_ID, CARL),
        (TO, QUEUE_ID, HELP),
        (BCC, None, "support@acme.example"),
    }
    assert (email["statecode"], email["statuscode"]) == (1, 4)
    assert sorted(str(e["outcome"]) for e in delivery_log) == ["created", "duplicate"]
    assert_outcome(VALVE, "created")


def test_redelivered_sqs_message_never_creates_a_second_email(
    stack: LocalStack, delivery_log: list[dict[str, Any]]
) -> None:
    tenant(stack)
    enqueue_inbound(stack, corpus_mail("to_help_only"), source_ref="uidl-4711")
    runner = stack.runner
    assert runner is not None
    binding = next(b for b in runner.queues if b.function == DELIVER)
    sqs = aws.client("sqs")
    received = sqs.receive_message(QueueUrl=binding.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"])
    messages = received["Messages"]
    assert len(messages) == 1
    event = sqs_event(messages, binding.queue_arn, REGION)

    # SQS hands the same message over again (its visibility timeout ended before it was deleted).
    first = runner.invoke(DELIVER, event)
    second = runner.invoke(DELIVER, event)
    sqs.delete_message(QueueUrl=binding.queue_url, ReceiptHandle=messages[0]["ReceiptHandle"])

    assert first["batchItemFailures"] == [] and second["batchItemFailures"] == []
    assert [e["subject"] for e in incoming_emails(stack)] == ["Leaking valve in the warehouse"]
    assert [str(e["outcome"]) for e in delivery_log] == ["created", "duplicate"]
    assert_outcome(VALVE, "created")


# ==== 5. parties ================================================================================

SHARED_CONTACT_ID = "cccccccc-0000-0000-0000-0000000000aa"
SHARED_ACCOUNT_ID = "dddddddd-0000-0000-0000-0000000000aa"


@pytest.mark.parametrize("unresolve_ambiguous", [False, True])
def test_sender_address_of_a_contact_and_an_account(stack: LocalStack, unresolve_ambiguous: bool) -> None:
    stack.dataverse.seed(
        {
            "contacts": [
                {
                    "contactid": SHARED_CONTACT_ID,
                    "lastname": "Facilities",
                    "emailaddress1": "shared@client.example",
                    "statecode": 0,
                }
            ],
            "accounts": [
                {
                    "accountid": SHARED_ACCOUNT_ID,
                    "name": "Client Ltd Facilities",
                    "emailaddress1": "shared@client.example",
                    "statecode": 0,
                }
            ],
        }
    )
    tenant(stack, parties={"unresolve_ambiguous_sender": unresolve_ambiguous})

    deliver(stack, (corpus_mail("from_shared_address"), "help"))

    email = the_email(stack, "<badges-0901@client.example>")
    senders = {p for p in parties(email) if p[0] == SENDER}
    # CRM's order puts contacts before accounts; unresolved, the address alone is kept.
    expected = None if unresolve_ambiguous else SHARED_CONTACT_ID
    assert senders == {(SENDER, expected, "shared@client.example")}
    assert_outcome("<badges-0901@client.example>", "created")


def test_addresses_match_records_whatever_their_case(stack: LocalStack) -> None:
    tenant(stack)

    deliver(stack, (corpus_mail("mixed_case_addresses"), "help"))

    email = the_email(stack, "<keys-0001@client.example>")
    assert {(mask, party) for mask, party, _address in parties(email)} == {
        (SENDER, CONTACT_ID),  # Carl@CLIENT.Example
        (TO, QUEUE_ID),  # HELP@Acme.Example
        (CC, DORA_ID),  # stored as Dora.Diaz@Client.Example
    }


def test_unknown_sender_gets_one_contact_when_the_mailbox_creates_contacts(stack: LocalStack) -> None:
    add_tenant(stack, [mailbox("help", auto_create_contact=True)])
    first, second, third = (
        corpus_mail("from_unknown_person", n=str(n), subject=subject)
        for n, subject in (
            (1, "Maintenance contract for our new office"),
            (2, "Maintenance contract: floor plan"),
            (3, "Maintenance contract: start date"),
        )
    )

    deliver(stack, (first, "help"), (second, "help"))  # together: both find no contact yet
    deliver(stack, (third, "help"))  # later: finds the one created

    contacts = crm_get(
        stack,
        "contacts?$select=contactid,firstname,lastname&$filter=emailaddress1 eq 'nina.newcomer@newco.example'",
    )["value"]
    assert [(c["firstname"], c["lastname"]) for c in contacts] == [("Nina", "Newcomer")]
    contact_id = contacts[0]["contactid"]
    for n in (1, 2, 3):
        email = the_email(stack, f"<enquiry-{n}@newco.example>")
        assert {p for p in parties(email) if p[0] == SENDER} == {
            (SENDER, contact_id, "nina.newcomer@newco.example")
        }


# ==== 6. content ================================================================================

REPORT_PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
METER_JPG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(32) + b"\xff\xd9"


def test_winmail_dat_files_become_the_attachments(stack: LocalStack) -> None:
    tenant(stack)
    winmail = tnef_stream(
        message_header(),
        file_attachment(b"MAINTE~1.PDF", REPORT_PDF, long_name="Maintenance report November.pdf"),
        file_attachment(b"meter.jpg", METER_JPG),
    )
    raw = corpus_mail("winmail", winmail_dat=base64.encodebytes(winmail).decode("ascii"))

    deliver(stack, (raw, "help"))

    email = the_email(stack, "<A1B2C3D4E5F6@EX02.client.example>")
    assert attachments(email) == {
        ("Maintenance report November.pdf", "application/pdf", None),
        ("meter.jpg", "image/jpeg", None),
    }
    assert email["notifications"] == 0
    assert email["conversationindex"] == "AdtgYQ3mV0m1rAbCTkSp8cvlfxyMhA=="
    assert_outcome("<A1B2C3D4E5F6@EX02.client.example>", "created")


def test_subject_over_800_characters_is_cut_and_the_email_says_so(stack: LocalStack) -> None:
    tenant(stack)
    raw = corpus_mail("long_subject")
    subject = str(BytesParser(policy=policy.default).parsebytes(raw)["Subject"])
    assert len(subject) > 800

    deliver(stack, (raw, "help"))

    email = the_email(stack, "<erp-po-batch-20261127@erp.client.example>")
    assert email["subject"] == subject[:800]
    assert email["notifications"] == 2


def test_blocked_attachment_is_dropped_and_the_email_says_so(stack: LocalStack) -> None:
    tenant(stack)

    deliver(stack, (corpus_mail("blocked_attachment"), "help"))

    email = the_email(stack, "<tools-0001@client.example>")
    assert attachments(email) == {("invoice-INV-2211.pdf", "application/pdf", None)}  # not the .EXE
    assert email["notifications"] == 1


def test_inline_image_is_kept_with_its_content_id(stack: LocalStack) -> None:
    tenant(stack)

    deliver(stack, (corpus_mail("inline_image"), "help"))

    email = the_email(stack, "<logo-0001@client.example>")
    assert attachments(email) == {("client-logo.png", "image/png", "logo.7f3a@client.example")}
    assert email["notifications"] == 0


def test_message_over_the_tenant_limit_is_quarantined_with_its_raw_kept(stack: LocalStack) -> None:
    tenant(stack, max_message_bytes=2048)
    raw = corpus_mail("oversized")
    assert len(raw) > 2048

    deliver(stack, (raw, "help"))

    assert incoming_emails(stack) == []
    quarantined = assert_outcome("<ctl-log-20261127@client.example>", "quarantined", reason="2048")
    assert quarantined.raw_s3_key
    assert stack.endpoints is not None
    bucket = stack.endpoints.environment["RAW_MAIL_BUCKET"]
    kept = aws.client("s3").get_object(Bucket=bucket, Key=quarantined.raw_s3_key)["Body"].read()
    assert kept == raw


# ==== 7. mailbox approval ======================================================================

SERVICE_MAILBOX_ID = "ffffffff-0000-0000-0000-0000000000aa"


class OneMessagePop3(socketserver.ThreadingTCPServer):
    """A loopback POP3 maildrop with one message and no deletions; counts the sessions opened."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, message: bytes, user: str, password: str) -> None:
        super().__init__(("127.0.0.1", 0), _Pop3Session)
        self.message, self.user, self.password = message, user, password
        self.sessions = 0

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Pop3Session(socketserver.StreamRequestHandler):
    server: OneMessagePop3

    def handle(self) -> None:
        self.server.sessions += 1
        message = self.server.message
        self._send(b"+OK POP3 ready")
        authenticated = False
        while line := self.rfile.readline(1024):
            command, _, argument = line.strip().decode("ascii", "replace").partition(" ")
            match command.upper(), authenticated:
                case "USER", False:
                    self._send(b"+OK")
                case "PASS", False:
                    authenticated = argument == self.server.password
                    self._send(b"+OK logged in" if authenticated else b"-ERR [AUTH] invalid credentials")
                case "UIDL", True:
                    self._send(b"+OK\r\n1 inspection-cert\r\n.")
                case "LIST", True:
                    self._send(b"+OK\r\n1 %d\r\n." % len(message))
                case "RETR", True if argument == "1":
                    stuffed = b"\r\n".join(
                        b"." + x if x.startswith(b".") else x for x in message.split(b"\r\n")
                    )
                    self._send(b"+OK %d octets\r\n" % len(message) + stuffed.rstrip(b"\r\n") + b"\r\n.")
                case "NOOP", _:
                    self._send(b"+OK")
                case "QUIT", _:
                    self._send(b"+OK bye")
                    return
                case _:
                    self._send(b"-ERR unknown command")

    def _send(self, reply: bytes) -> None:
        self.wfile.write(reply + b"\r\n")


def test_mailbox_awaiting_approval_is_polled_only_once_approved(stack: LocalStack) -> None:
    import json

    assert stack.endpoints is not None and stack.runner is not None
    raw = corpus_mail("waiting_in_mailbox")
    server = OneMessagePop3(raw, "service", "s3rvice-Pass")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        secret = f"emailrouter/{TENANT}/service-pop3"
        with contextlib.suppress(aws.client("secretsmanager").exceptions.ResourceExistsException):
            aws.client("secretsmanager").create_secret(
                Name=secret, SecretString=json.dumps({"username": "service", "password": "s3rvice-Pass"})
            )
        add_tenant(
            stack,
            [
                {
                    **mailbox("service", require_approval=True),
                    "port": server.port,
                    "credential_secret": secret,
                }
            ],
        )
        stack.dataverse.seed(
            {
                "mailboxes": [
                    {
                        "mailboxid": SERVICE_MAILBOX_ID,
                        "name": "Acme Service",
                        "emailaddress": "service@acme.example",
                        "emailrouteraccessapproval": 2,  # Pending Approval
                    }
                ]
            }
        )
        tick = datetime.now(UTC).replace(second=0, microsecond=0)

        _dispatch_polls(stack, tick)

        assert server.sessions == 0
        health = TenantStore().get_health(TENANT, "service")
        assert health.state == "failing"
        assert "Pending Approval" in health.reason and "service@acme.example" in health.reason
        assert incoming_emails(stack) == []

        # An administrator approves the mailbox in the CRM; the next minute's poll fetches.
        requests.patch(
            f"{stack.endpoints.dataverse_url}/api/data/v9.2/mailboxes({SERVICE_MAILBOX_ID})",
            json={"emailrouteraccessapproval": 1},
            headers=_crm_headers(stack),
            timeout=10,
        ).raise_for_status()
        _dispatch_polls(stack, tick + timedelta(minutes=1))

        assert server.sessions >= 1
        assert TenantStore().get_health(TENANT, "service").state == "ok"
        email = the_email(stack, "<inspection-cert-2026@client.example>")
        assert (TO, None, "service@acme.example") in parties(email)
    finally:
        server.shutdown()
        server.server_close()


def _dispatch_polls(stack: LocalStack, tick: datetime) -> None:
    """The dispatch schedule fires at `tick`; its poll jobs and what they fetch are processed."""
    assert stack.runner is not None
    stack.runner.invoke("DispatchFunction", schedule_event("dispatch", REGION, iso(tick)))
    assert stack.runner.drain(30)
