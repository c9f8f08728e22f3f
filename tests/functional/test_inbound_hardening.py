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
from tests.functional.test_inbound_tracking import (
    deliver,
    incoming_emails,
    module_stack,
    stack,
    tenant,
)
from tests.helpers import TENANT

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
