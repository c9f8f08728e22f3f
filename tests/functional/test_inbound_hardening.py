"""Hostile and broken mail through the real pipeline: pathological subjects, reused Message-IDs,
messages of countless parts, input that is not mail, broken header blocks and From lines.

Each message goes onto the inbound queue (moto), through the real deliver_inbound handler (the
local runner) and into the Dataverse emulator; outcomes are read in the organization and in the
ledger. The stack and its per-test reset are those of test_inbound_tracking.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from emailrouter.ledger.store import Ledger
from emailrouter.local.stack import LocalStack
from emailrouter.mime.parse import parse_message
from tests.functional.test_inbound_tracking import (
    deliver,
    incoming_emails,
    module_stack,
    stack,
    tenant,
)
from tests.helpers import CONTACT_ID, TENANT

pytestmark = pytest.mark.timeout(300)

__all__ = ["module_stack", "stack"]  # the fixtures, shared with test_inbound_tracking


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
