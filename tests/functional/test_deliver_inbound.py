"""deliver_inbound through the local runner: moto queues from template.yaml, the Dataverse
emulator over HTTP, the real handler. Expectations come from the Web API's documented values
(participationtypemask 1 = sender, 2 = to; statecode 1 / statuscode 4 = Completed/Received)."""

from __future__ import annotations

import base64

from emailrouter.clock import iso
from emailrouter.ledger.models import Outcome
from emailrouter.ledger.store import Ledger
from emailrouter.local.stack import LocalStack
from emailrouter.queues.messages import InboundMessage
from emailrouter.routing.faults import FaultPoints
from emailrouter.runtime import reset_runtime
from tests.helpers import (
    CONTACT_ID,
    QUEUE_ID,
    TENANT,
    add_tenant,
    dataverse_journal,
    enqueue_inbound,
    incoming_emails,
    raw_mail,
    seed_org,
)


def _ledger_outcomes() -> dict[str, str]:
    return {
        r.message_key: (r.outcome.value if r.outcome else r.status) for r in Ledger().list_messages(TENANT)
    }


def test_message_becomes_received_email_with_resolved_parties(local_stack: LocalStack) -> None:
    seed_org(local_stack)
    add_tenant(local_stack)
    enqueue_inbound(
        local_stack,
        raw_mail(
            subject="Broken widget",
            to="help@acme.example, nobody@else.example",
            message_id="<w-1@client.example>",
        ),
    )

    assert local_stack.runner is not None and local_stack.runner.drain(30)

    emails = incoming_emails(local_stack)
    assert len(emails) == 1
    email = emails[0]
    assert email["subject"] == "Broken widget"
    assert email["messageid"] == "<w-1@client.example>"
    assert (email["statecode"], email["statuscode"]) == (1, 4)
    parties = {
        (p["participationtypemask"], p.get("_partyid_value"), p.get("addressused"))
        for p in email["email_activity_parties"]
    }
    assert (1, CONTACT_ID, "carl@client.example") in parties
    assert (2, QUEUE_ID, "help@acme.example") in parties
    assert (2, None, "nobody@else.example") in parties
    assert list(_ledger_outcomes().values()) == ["created"]


def test_unparseable_message_is_quarantined_with_raw_kept(local_stack: LocalStack) -> None:
    from emailrouter import aws

    add_tenant(local_stack)
    garbage = b"\x00\x01\x02 this is not mail \xff\xfe" * 10
    enqueue_inbound(local_stack, garbage)

    assert local_stack.runner is not None and local_stack.runner.drain(30)

    records = list(Ledger().list_messages(TENANT))
    assert [r.outcome for r in records] == [Outcome.QUARANTINED]
    assert records[0].raw_s3_key and records[0].reason
    bucket = local_stack.endpoints.environment["RAW_MAIL_BUCKET"]  # type: ignore[union-attr]
    kept = aws.client("s3").get_object(Bucket=bucket, Key=records[0].raw_s3_key)["Body"].read()
    assert kept == garbage
    assert incoming_emails(local_stack) == []
    assert local_stack.runner.stats.crashed_invocations == 0


def test_crash_at_crm_write_loses_nothing_and_duplicates_nothing(local_stack: LocalStack) -> None:
    seed_org(local_stack)
    add_tenant(local_stack)
    faults = FaultPoints()
    faults.arm("after_crm_write")
    reset_runtime(faults)
    enqueue_inbound(local_stack, raw_mail(subject="Crash me", message_id="<crash-1@client.example>"))

    assert local_stack.runner is not None and local_stack.runner.drain(60)

    assert local_stack.runner.stats.crashed_invocations == 1  # the injected crash happened
    emails = incoming_emails(local_stack)
    assert [e["subject"] for e in emails] == ["Crash me"]
    assert list(_ledger_outcomes().values()) == ["created"]


def test_same_message_twice_is_one_email_and_a_duplicate(local_stack: LocalStack) -> None:
    seed_org(local_stack)
    add_tenant(local_stack)
    raw = raw_mail(subject="Twice", message_id="<twice@client.example>")
    enqueue_inbound(local_stack, raw, source_ref="a")
    assert local_stack.runner is not None and local_stack.runner.drain(30)
    (email,) = incoming_emails(local_stack)

    # The second arrival's own outcome, as the handler reports it.
    again = InboundMessage(
        tenant_id=TENANT,
        mailbox_id="help",
        source_ref="b",
        fetched_at=iso(),
        size=len(raw),
        raw_b64=base64.b64encode(raw).decode(),
    )
    result = reset_runtime().delivery.deliver(again, "second-arrival")

    assert (result.outcome, result.crm_email_id) == (Outcome.DUPLICATE, email["activityid"])
    assert [e["subject"] for e in incoming_emails(local_stack)] == ["Twice"]
    (record,) = Ledger().list_messages(TENANT)
    assert (record.outcome, record.source_ref) == (Outcome.CREATED, "a")  # the first arrival's


def test_auto_reply_is_filtered_not_tracked(local_stack: LocalStack) -> None:
    seed_org(local_stack)
    add_tenant(local_stack)
    enqueue_inbound(
        local_stack, raw_mail(subject="Out of office", extra_headers="Auto-Submitted: auto-replied")
    )

    assert local_stack.runner is not None and local_stack.runner.drain(30)

    assert incoming_emails(local_stack) == []
    records = list(Ledger().list_messages(TENANT))
    assert [r.outcome for r in records] == [Outcome.FILTERED]
    assert "Auto-Submitted" in records[0].reason


def test_reply_to_tracked_email_takes_its_regarding_record(local_stack: LocalStack) -> None:
    import requests

    from tests.helpers import ACCOUNT_ID, crm_get

    seed_org(local_stack)
    add_tenant(local_stack)
    endpoints = local_stack.endpoints
    assert endpoints is not None
    # An email sent from the CRM earlier, regarding the account.
    requests.post(
        f"{endpoints.dataverse_url}/api/data/v9.2/emails",
        json={
            "subject": "Order confirmation",
            "directioncode": True,
            "messageid": "<order-1@acme.example>",
            "regardingobjectid_account_email@odata.bind": f"/accounts({ACCOUNT_ID})",
        },
        headers={"Authorization": f"Bearer {endpoints.dataverse_token}", "Content-Type": "application/json"},
        timeout=10,
    ).raise_for_status()

    reply = raw_mail(
        subject="Re: Order confirmation",
        message_id="<order-2@client.example>",
        extra_headers="In-Reply-To: <order-1@acme.example>\r\nReferences: <order-1@acme.example>",
    )
    enqueue_inbound(local_stack, reply)
    assert local_stack.runner is not None and local_stack.runner.drain(30)

    body = crm_get(
        local_stack, "emails?$filter=messageid eq '<order-2@client.example>'&$select=_regardingobjectid_value"
    )
    assert body["value"][0]["_regardingobjectid_value"] == ACCOUNT_ID
    assert list(_ledger_outcomes().values()) == ["correlated"]


def test_blocked_attachment_is_dropped_and_the_email_says_so(local_stack: LocalStack) -> None:
    seed_org(local_stack)
    add_tenant(local_stack)
    raw = (
        b"From: carl@client.example\r\nTo: help@acme.example\r\nSubject: Files\r\n"
        b"Message-ID: <files@client.example>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nTwo files.\r\n"
        b'--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="report.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n"
        b'--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="tool.exe"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--b--\r\n"
    )
    enqueue_inbound(local_stack, raw)

    assert local_stack.runner is not None and local_stack.runner.drain(30)

    (email,) = incoming_emails(local_stack)
    assert [a["filename"] for a in email["email_activity_mime_attachment"]] == ["report.pdf"]
    assert email["notifications"] == 1  # "not every attachment was saved"


def test_reply_with_the_organizations_tracking_token_correlates_without_headers(
    local_stack: LocalStack,
) -> None:
    import requests

    from tests.helpers import ACCOUNT_ID, crm_get

    seed_org(local_stack)
    add_tenant(local_stack, tracking_token={"enabled": True, "prefix": "CRM", "base": 1})
    endpoints = local_stack.endpoints
    assert endpoints is not None
    requests.post(
        f"{endpoints.dataverse_url}/api/data/v9.2/emails",
        json={
            "subject": "Quote CRM:1001005",
            "directioncode": True,
            "trackingtoken": "CRM:1001005",
            "regardingobjectid_account_email@odata.bind": f"/accounts({ACCOUNT_ID})",
        },
        headers={"Authorization": f"Bearer {endpoints.dataverse_token}", "Content-Type": "application/json"},
        timeout=10,
    ).raise_for_status()
    enqueue_inbound(
        local_stack,
        raw_mail(subject="RE: Quote CRM:1001005", message_id="<tok-1@client.example>"),
        source_ref="1",
    )
    # Another deployment's token (base 0) does not match this organization's.
    enqueue_inbound(
        local_stack,
        raw_mail(subject="RE: Quote CRM:0001005", message_id="<tok-2@client.example>"),
        source_ref="2",
    )

    assert local_stack.runner is not None and local_stack.runner.drain(30)

    ours = crm_get(
        local_stack, "emails?$filter=messageid eq '<tok-1@client.example>'&$select=_regardingobjectid_value"
    )
    theirs = crm_get(
        local_stack, "emails?$filter=messageid eq '<tok-2@client.example>'&$select=_regardingobjectid_value"
    )
    assert ours["value"][0]["_regardingobjectid_value"] == ACCOUNT_ID
    assert theirs["value"][0]["_regardingobjectid_value"] is None
    records = {r.message_id: r for r in Ledger().list_messages(TENANT)}
    assert records["<tok-1@client.example>"].correlation == "tracking-token"
    assert records["<tok-2@client.example>"].outcome is Outcome.CREATED


def test_loop_protection_stops_tracking_a_flooding_sender_but_not_an_allowed_one(
    local_stack: LocalStack,
) -> None:
    seed_org(local_stack)
    add_tenant(
        local_stack,
        loop_protection={"max_messages": 3, "window_minutes": 120, "allow": ["office@client.example"]},
    )
    for index in range(5):
        enqueue_inbound(
            local_stack,
            raw_mail(subject=f"Auto {index}", message_id=f"<loop-{index}@client.example>"),
            source_ref=f"l{index}",
        )
        enqueue_inbound(
            local_stack,
            raw_mail(
                subject=f"Allowed {index}",
                sender="office@client.example",
                message_id=f"<ok-{index}@client.example>",
            ),
            source_ref=f"o{index}",
        )
        assert local_stack.runner is not None and local_stack.runner.drain(30)

    records = list(Ledger().list_messages(TENANT))
    from_carl = sorted(
        r.outcome.value for r in records if r.message_id and r.message_id.startswith("<loop-") and r.outcome
    )
    assert from_carl == ["created", "created", "created", "filtered", "filtered"]
    assert all(
        "loop protection" in r.reason and "limit 3" in r.reason
        for r in records
        if r.outcome is Outcome.FILTERED
    )
    allowed = [r for r in records if r.message_id and r.message_id.startswith("<ok-")]
    assert [r.outcome for r in allowed] == [Outcome.CREATED] * 5
    assert len(incoming_emails(local_stack)) == 8


def test_addresses_and_message_ids_with_query_string_characters_are_delivered(
    local_stack: LocalStack,
) -> None:
    seed_org(local_stack)
    add_tenant(local_stack)
    senders = ["a&b#c@client.example", "ann+crm@client.example", "k=v?x/y%25@client.example"]
    for number, sender in enumerate(senders):
        enqueue_inbound(
            local_stack,
            raw_mail(subject=f"Odd {number}", sender=sender, message_id=f"<CAF+{number}=y#&@mail.gmail.com>"),
            source_ref=f"odd-{number}",
        )

    assert local_stack.runner is not None and local_stack.runner.drain(30)

    emails = incoming_emails(local_stack)
    by_subject = {e["subject"]: e for e in emails}
    assert sorted(by_subject) == ["Odd 0", "Odd 1", "Odd 2"]
    for number, sender in enumerate(senders):
        email = by_subject[f"Odd {number}"]
        assert email["messageid"] == f"<CAF+{number}=y#&@mail.gmail.com>"
        assert [
            p["addressused"] for p in email["email_activity_parties"] if p["participationtypemask"] == 1
        ] == [sender]
    assert sorted(_ledger_outcomes().values()) == ["created"] * 3


def test_a_crm_400_caused_by_one_message_quarantines_that_message_only(local_stack: LocalStack) -> None:
    seed_org(local_stack)
    add_tenant(local_stack)
    local_stack.dataverse.set_faults([{"kind": "400", "method": "GET", "path_contains": "mallory"}])
    for number, sender in enumerate(["ann@client.example", "mallory@client.example", "bob@client.example"]):
        enqueue_inbound(
            local_stack,
            raw_mail(subject=f"Batch {number}", sender=sender, message_id=f"<batch-{number}@client.example>"),
            source_ref=f"batch-{number}",
        )

    assert local_stack.runner is not None and local_stack.runner.drain(30)

    assert sorted(e["subject"] for e in incoming_emails(local_stack)) == ["Batch 0", "Batch 2"]
    records = {r.message_key: r for r in Ledger().list_messages(TENANT)}
    outcomes = sorted((r.outcome.value if r.outcome else r.status) for r in records.values())
    assert outcomes == ["created", "created", "quarantined"]
    quarantined = [r for r in records.values() if r.outcome == Outcome.QUARANTINED]
    assert quarantined[0].raw_s3_key
    assert "0x80060888" in quarantined[0].reason


PARTY_SETS = {"systemusers", "contacts", "accounts", "leads", "queues"}


def test_a_message_to_many_recipients_resolves_only_the_tenants_cap_of_them(local_stack: LocalStack) -> None:
    seed_org(local_stack)
    recipients = [f"r{n:03d}@client.example" for n in range(300)]
    ids = local_stack.dataverse.seed(
        {"contacts": [{"lastname": f"R{n}", "emailaddress1": a} for n, a in enumerate(recipients)]}
    )["contacts"]
    add_tenant(local_stack, parties={"max_resolved_per_message": 40})
    # Bcc is only the tracked mailbox: it is resolved whatever the cap.
    enqueue_inbound(local_stack, raw_mail(subject="To everyone", to=", ".join(reversed(recipients))))
    before = dataverse_journal(local_stack)

    assert local_stack.runner is not None and local_stack.runner.drain(30)

    lookups = [e for e in dataverse_journal(local_stack)[len(before) :] if e["method"] == "GET"]
    assert len([e for e in lookups if e["path"].rsplit("/", 1)[-1] in PARTY_SETS]) == len(PARTY_SETS)
    (email,) = incoming_emails(local_stack)
    to = {
        p["addressused"]: p.get("_partyid_value")
        for p in email["email_activity_parties"]
        if p["participationtypemask"] == 2
    }
    assert set(to) == set(recipients)  # every recipient is listed
    first_forty = list(reversed(recipients))[:40]  # in header order
    assert {a: to[a] for a in first_forty} == {a: ids[recipients.index(a)] for a in first_forty}
    assert [a for a in recipients if to[a] is not None and a not in first_forty] == []
    sender = [p for p in email["email_activity_parties"] if p["participationtypemask"] == 1]
    assert sender[0]["_partyid_value"] == CONTACT_ID


def test_a_second_tracked_mailbox_adds_its_party_without_looking_up_the_others_again(
    local_stack: LocalStack,
) -> None:
    seed_org(local_stack)
    blind = [f"b{n:03d}@client.example" for n in range(120)]
    local_stack.dataverse.seed(
        {"contacts": [{"lastname": f"B{n}", "emailaddress1": a} for n, a in enumerate(blind)]}
    )
    mailbox = {
        "protocol": "pop3",
        "host": "127.0.0.1",
        "port": 1,
        "security": "none",
        "credential_secret": f"emailrouter/{TENANT}/help",
        "tracking": "all",
    }
    add_tenant(
        local_stack,
        mailboxes=[
            {"mailbox_id": "help", "address": "help@acme.example", **mailbox},
            {"mailbox_id": "sales", "address": "sales@acme.example", **mailbox},
        ],
        parties={"max_resolved_per_message": 10},
    )
    raw = raw_mail(
        subject="Blind", extra_headers="Bcc: " + ", ".join(blind), message_id="<blind@client.example>"
    )
    enqueue_inbound(local_stack, raw, mailbox_id="help", source_ref="help-1")
    assert local_stack.runner is not None and local_stack.runner.drain(30)
    (first,) = incoming_emails(local_stack)
    resolved_before = {p["addressused"]: p.get("_partyid_value") for p in first["email_activity_parties"]}
    before = dataverse_journal(local_stack)

    enqueue_inbound(local_stack, raw, mailbox_id="sales", source_ref="sales-1")
    assert local_stack.runner.drain(30)

    lookups = [e for e in dataverse_journal(local_stack)[len(before) :] if e["method"] == "GET"]
    assert len([e for e in lookups if e["path"].rsplit("/", 1)[-1] in PARTY_SETS]) <= len(PARTY_SETS)
    (email,) = incoming_emails(local_stack)
    after = {p["addressused"]: p.get("_partyid_value") for p in email["email_activity_parties"]}
    assert "sales@acme.example" in after
    assert {a: after[a] for a in blind} == {a: resolved_before[a] for a in blind}
    assert sum(1 for a in blind if after[a] is not None) == 10 - 1  # To: help@ is one of the ten
