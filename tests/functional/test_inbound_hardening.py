"""Hostile and broken mail through the real pipeline: pathological subjects, reused Message-IDs,
messages of countless parts, input that is not mail, broken header blocks and From lines.

Each message goes onto the inbound queue (moto), through the real deliver_inbound handler (the
local runner) and into the Dataverse emulator; outcomes are read in the organization and in the
ledger. The stack and its per-test reset are those of test_inbound_tracking.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emailrouter.clock import iso
from emailrouter.ledger.models import Outcome
from emailrouter.ledger.store import Ledger
from emailrouter.local.stack import LocalStack
from emailrouter.mime.parse import parse_message
from emailrouter.queues.messages import InboundMessage
from emailrouter.queues.rawstore import RawMailStore
from emailrouter.queues.sender import QueueSender, inbound_message
from emailrouter.routing.outcomes import DeliveryResult
from emailrouter.runtime import reset_runtime
from tests.functional.test_inbound_tracking import (
    deliver,
    delivery_log,
    incoming_emails,
    mailbox,
    module_stack,
    stack,
    tenant,
)
from tests.helpers import CONTACT_ID, TENANT, USER_ID, add_tenant, crm_get
from tests.unit.test_header_block_properties import SIGNATURES, damaged

pytestmark = pytest.mark.timeout(300)

__all__ = ["delivery_log", "module_stack", "stack"]  # the fixtures, shared with test_inbound_tracking


def message(
    subject: str = "Quarterly figures",
    *,
    message_id: str | None = "<q1@client.example>",
    sender: str = "Carl Contact <carl@client.example>",
    body: str = "Hello,\r\nthe figures are attached.\r\n",
    extra_headers: str = "",
) -> bytes:
    head = f"From: {sender}\r\nTo: help@acme.example\r\nSubject: {subject}\r\n"
    if message_id:
        head += f"Message-ID: {message_id}\r\n"
    head += "Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n" + extra_headers
    return (head + "\r\n" + body).encode("utf-8")


def emails_by_subject(stack: LocalStack) -> dict[str, dict[str, Any]]:
    return {e["subject"]: e for e in incoming_emails(stack)}


def party_set(email: dict[str, Any]) -> set[tuple[int, str | None, str | None]]:
    """(participationtypemask, bound record id, addressused) of the email's parties."""
    return {
        (p["participationtypemask"], p.get("_partyid_value"), p.get("addressused"))
        for p in email["email_activity_parties"]
    }


def records() -> list[Any]:
    return list(Ledger().list_messages(TENANT))


# ==== pathological subjects ===================================================================


@pytest.mark.parametrize("space", ["\u00a0", "\u2003", "\u3000", " \t"])
def test_pathological_subject_costs_no_more_than_ordinary_mail(stack: LocalStack, space: str) -> None:
    """A subject of a forward prefix and tens of thousands of (Unicode) spaces once cost seconds
    of CPU per expression; it must cost about what an ordinary message of the same size does."""
    tenant(stack, correlation={"smart_matching": True})
    filler = space * 60_000
    started = time.process_time()
    deliver(stack, (message(body="x" * len(filler.encode()), message_id="<base@client.example>"), "help"))
    baseline = time.process_time() - started

    started = time.process_time()
    deliver(
        stack, (message("Fw" + filler + "x Re" + filler + ":", message_id="<slow@client.example>"), "help")
    )
    hostile = time.process_time() - started

    assert hostile < 3 * baseline + 0.5, (hostile, baseline)
    subjects = [e["subject"] for e in incoming_emails(stack)]
    hostile_subject = next(s for s in subjects if s.startswith("Fw"))
    assert "  " not in hostile_subject and hostile_subject.isascii()  # each run is one space now
    assert len(hostile_subject) <= 800


# ==== input that is not mail, broken header blocks and From lines ============================


def ledger_outcome(message_id: str | None = None) -> tuple[str, str]:
    """(outcome, reason) of the only ledger record, or of the one for `message_id`."""
    found = [r for r in records() if message_id is None or r.message_id == message_id]
    assert len(found) == 1, found
    return str(found[0].outcome), found[0].reason


PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00\x00\x00\x01\x00\x08\x06\x00\x00\x00\x5c\x72\xa8"
    b"\n\x9c\xed\xdd\x01\n\rName: value\r\n\xff\xd8\x00\x11\x22" + bytes(range(256)) * 40
)


@pytest.mark.parametrize(
    "raw",
    [
        PNG,
        # A header-looking first line, then binary: the header block is not text.
        b"Name: value\r\n\x00\x01\x02\x03\x04\x05\x06\x07\x0e\x0f\x10" + bytes(range(256)) * 4 + b"\r\n\r\n",
        # Text garbage, then a header block: the header block does not start the message.
        b"%PDF-1.7\r\n%\xe2\xe3\xcf\xd3\r\nSubject: hello\r\nFrom: a@x.example\r\n\r\nbody",
    ],
    ids=["png-with-a-name-value-line", "binary-after-a-header-line", "garbage-before-headers"],
)
def test_input_without_a_text_header_block_at_its_start_is_quarantined_as_not_mail(
    stack: LocalStack, raw: bytes
) -> None:
    tenant(stack)
    deliver(stack, (raw, "help"))
    assert incoming_emails(stack) == []
    outcome, reason = ledger_outcome()
    assert outcome == "quarantined" and "not parseable as mail" in reason, reason


def test_mbox_envelope_and_blank_lines_before_the_header_block_are_mail(stack: LocalStack) -> None:
    tenant(stack)
    raw = b"\r\n\r\nFrom carl@client.example Fri Nov 27 10:00:00 2026\r\n" + message()
    deliver(stack, (raw, "help"))
    assert list(emails_by_subject(stack)) == ["Quarterly figures"]


def test_a_line_without_a_colon_is_skipped_and_the_headers_after_it_are_read(stack: LocalStack) -> None:
    tenant(stack)
    raw = (
        b"Received: from mx.client.example by mx.acme.example; Fri, 27 Nov 2026 10:00:01 +0000\r\n"
        b"quite Delivered-To: help@acme.example\r\n"
        b"From: Carl Contact <carl@client.example>\r\nTo: help@acme.example\r\n"
        b"Subject: After the broken line\r\nMessage-ID: <after@client.example>\r\n"
        b"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n\r\nHello\r\n"
    )
    deliver(stack, (raw, "help"))
    email = emails_by_subject(stack)["After the broken line"]
    assert email["messageid"] == "<after@client.example>"
    assert (1, CONTACT_ID, "carl@client.example") in party_set(email)
    assert "header-line-malformed" in parse_message(raw).defects


def test_obsolete_whitespace_before_the_colon_is_read(stack: LocalStack) -> None:
    tenant(stack)
    raw = (
        b"From  : Carl Contact <carl@client.example>\r\nTo\t: help@acme.example\r\n"
        b"Subject : Old syntax\r\nMessage-ID : <old@client.example>\r\n\r\nHello\r\n"
    )
    deliver(stack, (raw, "help"))
    email = emails_by_subject(stack)["Old syntax"]
    assert email["messageid"] == "<old@client.example>"
    assert (1, CONTACT_ID, "carl@client.example") in party_set(email)
    assert "header-obsolete-syntax:From" in parse_message(raw).defects


@pytest.mark.parametrize(
    ("from_line", "extra", "expected"),
    [
        ("carl@client.example dora@client.example", "", "carl@client.example"),
        ("Carl Contact carl@client.example", "", "carl@client.example"),
        ("Carl Contact", "Sender: carl@client.example\r\n", "carl@client.example"),
        ("Carl Contact", "Return-Path: <carl@client.example>\r\n", "carl@client.example"),
    ],
    ids=["two-bare-addresses", "name-without-brackets", "sender-fallback", "return-path-fallback"],
)
def test_a_malformed_from_is_repaired_to_the_plausible_sender(
    stack: LocalStack, from_line: str, extra: str, expected: str
) -> None:
    tenant(stack)
    raw = message(sender=from_line, extra_headers=extra)
    deliver(stack, (raw, "help"))
    email = emails_by_subject(stack)["Quarterly figures"]
    senders = [p for p in email["email_activity_parties"] if p["participationtypemask"] == 1]
    assert [(p.get("_partyid_value"), p.get("addressused")) for p in senders] == [(CONTACT_ID, expected)]
    assert any(
        d.startswith("from-repaired") or d.startswith("from-replaced-by") for d in parse_message(raw).defects
    )


# ==== messages of countless parts ==============================================================


def deliver_via_s3(stack: LocalStack, raw: bytes, mailbox_id: str = "help") -> None:
    """Queue `raw` as a poll does with large mail (raw bytes in S3, the key on the queue) and
    run deliver_inbound until the queue is empty."""
    assert stack.runner is not None and stack.endpoints is not None
    message_ = inbound_message(TENANT, mailbox_id, "big-1", raw, RawMailStore(), 192 * 1024)
    QueueSender().send(stack.endpoints.environment["INBOUND_QUEUE_URL"], TENANT, [message_])
    assert stack.runner.drain(120)


def many_parts(count: int, *, attachments: bool) -> bytes:
    part = (
        b'--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename="f.bin"\r\n\r\nx\r\n'
        if attachments
        else b"--b\r\n\r\nx\r\n"
    )
    head = (
        b"From: Carl Contact <carl@client.example>\r\nTo: help@acme.example\r\nSubject: Parts\r\n"
        b"Message-ID: <parts@client.example>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    )
    return head + part * count + b"--b--\r\n"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (many_parts(1_500, attachments=False), "more than 1000 MIME parts"),
        (many_parts(600, attachments=True), "more than 500 attachments"),
    ],
    ids=["parts", "attachments"],
)
def test_mail_over_the_part_or_attachment_caps_is_quarantined_with_the_reason(
    stack: LocalStack, raw: bytes, reason: str
) -> None:
    tenant(stack)
    deliver(stack, (raw, "help"))
    assert incoming_emails(stack) == []
    outcome, found = ledger_outcome("<parts@client.example>")
    assert outcome == "quarantined" and reason in found, found


def test_two_hundred_thousand_tiny_parts_are_refused_without_parsing_them(stack: LocalStack) -> None:
    tenant(stack)
    ordinary = message(body="x" * 2_400_000, message_id="<ordinary@client.example>")
    started = time.process_time()
    deliver_via_s3(stack, ordinary)
    baseline = time.process_time() - started
    raw = many_parts(200_000, attachments=False)
    started = time.process_time()
    deliver_via_s3(stack, raw)
    cost = time.process_time() - started
    assert cost < 3 * baseline + 0.5, (cost, baseline)
    outcome, reason = ledger_outcome("<parts@client.example>")
    assert outcome == "quarantined" and "MIME parts" in reason, reason


# ==== identity: Message-ID and content ========================================================


def with_attachment(name: str, content: bytes, *, message_id: str | None) -> bytes:
    head = (
        "From: Carl Contact <carl@client.example>\r\nTo: help@acme.example\r\nSubject: The report\r\n"
        "Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n'
    )
    if message_id:
        head += f"Message-ID: {message_id}\r\n"
    body = (
        "--b\r\nContent-Type: text/plain\r\n\r\nThe report is attached.\r\n"
        f'--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename="{name}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(content).decode().replace("\n", "\r\n")
    )
    return (head + "\r\n" + body + "--b--\r\n").encode()


def redelivered(raw: bytes) -> bytes:
    """The same message as another MTA hands it over: LF line ends, transport headers added."""
    transport = (
        b"Return-Path: <carl@client.example>\r\nDelivered-To: help@acme.example\r\n"
        b"Received: from relay.client.example by mx2.acme.example; Fri, 27 Nov 2026 10:00:05 +0000\r\n"
        b"X-Spam-Score: 0.1\r\n"
    )
    return (transport + raw).replace(b"\r\n", b"\n")


def attachment_names(stack: LocalStack) -> list[list[str]]:
    return sorted(
        sorted(a["filename"] for a in e["email_activity_mime_attachment"]) for e in incoming_emails(stack)
    )


def test_messages_without_message_id_that_differ_only_in_attachments_are_two_emails(
    stack: LocalStack,
) -> None:
    tenant(stack)
    first = with_attachment("march.pdf", b"%PDF-1.4 march figures", message_id=None)
    second = with_attachment("april.pdf", b"%PDF-1.4 april figures", message_id=None)
    deliver(stack, (first, "help"))
    deliver(stack, (second, "help"))
    deliver(stack, (redelivered(first), "help"))  # the same bytes again, as another MTA hands them over
    assert attachment_names(stack) == [["april.pdf"], ["march.pdf"]]
    assert sorted(str(r.outcome) for r in records()) == ["created", "created"]  # the third a duplicate


def test_a_different_message_reusing_a_message_id_is_tracked_not_dropped_as_a_duplicate(
    stack: LocalStack, delivery_log: list[dict[str, Any]]
) -> None:
    tenant(stack)
    first = with_attachment("march.pdf", b"%PDF-1.4 march figures", message_id="<reused@client.example>")
    second = with_attachment("april.pdf", b"%PDF-1.4 april figures", message_id="<reused@client.example>")
    deliver(stack, (first, "help"))
    deliver(stack, (second, "help"))
    deliver(stack, (redelivered(first), "help"), (second, "help"))  # each again: duplicates now
    assert attachment_names(stack) == [["april.pdf"], ["march.pdf"]]
    outcomes = [entry["outcome"] for entry in delivery_log]
    assert outcomes[:2] == ["created", "created"] and sorted(outcomes[2:]) == ["duplicate", "duplicate"]
    reused = [r for r in records() if "reused" in r.reason]
    assert len(reused) == 1 and reused[0].message_id == "<reused@client.example>", records()


# ==== senders whose domain's DMARC fails =======================================================

DMARC_FAIL = (
    "Authentication-Results: mx.acme.example; spf=fail smtp.mailfrom=acme.example;"
    " dkim=none; dmarc=fail (p=reject) header.from=acme.example\r\n"
)
DMARC_PASS = (
    "Authentication-Results: mx.acme.example; spf=pass; dkim=pass; dmarc=pass header.from=acme.example\r\n"
)


@pytest.mark.parametrize(
    ("results", "bound"),
    [(DMARC_FAIL, None), (DMARC_PASS + DMARC_FAIL, USER_ID), ("", USER_ID)],
    ids=["receiving-server-says-fail", "only-a-lower-header-says-fail", "no-results"],
)
def test_a_sender_failing_dmarc_is_not_resolved_to_a_crm_user(
    stack: LocalStack, results: str, bound: str | None
) -> None:
    """Only the topmost Authentication-Results is the receiving server's; a sender whose DMARC
    fails there claims a user's address without proof, and stays an unresolved party."""
    tenant(stack)
    deliver(stack, (message(sender="Uma User <uma@acme.example>", extra_headers=results), "help"))
    email = emails_by_subject(stack)["Quarterly figures"]
    assert {p for p in party_set(email) if p[0] == 1} == {(1, bound, "uma@acme.example")}


def test_no_contact_is_created_for_a_sender_failing_dmarc(stack: LocalStack) -> None:
    add_tenant(stack, [mailbox("help", auto_create_contact=True)])
    forged = message(sender="Nina Newcomer <nina@newco.example>", extra_headers=DMARC_FAIL)
    genuine = message("Second", sender="Nina Newcomer <nina@newco.example>", message_id="<q2@client.example>")
    deliver(stack, (forged, "help"))
    assert crm_get(stack, "contacts?$filter=emailaddress1 eq 'nina@newco.example'")["value"] == []
    deliver(stack, (genuine, "help"))
    assert len(crm_get(stack, "contacts?$filter=emailaddress1 eq 'nina@newco.example'")["value"]) == 1


# ==== the header-block properties, through the pipeline =======================================


def _deliver_batch(stack: LocalStack, raws: list[bytes]) -> list[Any]:
    runtime = reset_runtime()
    items = [
        (
            InboundMessage(
                tenant_id=TENANT,
                mailbox_id="help",
                source_ref=f"prop-{uuid.uuid4()}",
                fetched_at=iso(),
                size=len(raw),
                raw_b64=base64.b64encode(raw).decode(),
            ),
            f"owner-{uuid.uuid4()}",
        )
        for raw in raws
    ]
    results = runtime.delivery.deliver_batch(items)
    assert all(isinstance(r, DeliveryResult) for r in results), results
    return [Ledger().get(TENANT, r.message_key) for r in results]


def test_binary_files_and_damaged_header_blocks_through_the_pipeline(stack: LocalStack) -> None:
    """Input that does not start with a text header block is quarantined as not mail, never an
    email; a real message with a damaged header block keeps its headers (the ledger names it by
    the undamaged message's Message-ID and subject) and is never quarantined as not mail."""
    tenant(stack)
    subjects: set[str] = set()

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(SIGNATURES), st.binary(max_size=200), damaged())
    def run(signature: bytes, noise: bytes, pair: tuple[bytes, bytes]) -> None:
        original, broken = pair
        binary = signature + b"\x00" + noise + b"\r\n" + original
        not_mail, repaired = _deliver_batch(stack, [binary, broken])
        assert not_mail.outcome is Outcome.QUARANTINED and "not parseable as mail" in not_mail.reason
        expected = parse_message(original)
        subjects.add(expected.subject)
        assert repaired.outcome is not Outcome.QUARANTINED, repaired.reason
        assert (repaired.message_id, repaired.subject) == (expected.message_id, expected.subject[:200])

    run()
    # None from a binary file: every email the organization holds is one of the real messages
    # (a corpus template may leave its Message-ID unfilled, so the subject tells them apart).
    assert {e["subject"] for e in incoming_emails(stack)} <= subjects
