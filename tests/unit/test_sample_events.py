"""The sample events in events/ are what each function's parser accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from emailrouter.outbound.events import parse_ses_event
from emailrouter.queues.messages import (
    InboundMessage,
    InboundRecord,
    OutboundJob,
    OutboundRecord,
    PollJob,
    PollJobRecord,
)

EVENTS = Path(__file__).resolve().parents[2] / "events"


def _body(name: str) -> str:
    return str(json.loads((EVENTS / name).read_text())["Records"][0]["body"])


def test_every_function_has_a_sample_event() -> None:
    functions = {p.name for p in (EVENTS.parent / "functions").iterdir() if (p / "app.py").exists()}
    samples = {p.stem for p in EVENTS.glob("*.json")}
    assert functions == samples


def _record(name: str) -> dict[str, object]:
    return dict(json.loads((EVENTS / name).read_text())["Records"][0])


def test_queue_samples_parse_into_the_records_the_handlers_take() -> None:
    job = PollJobRecord.model_validate(_record("poll_mailbox.json")).body
    assert isinstance(job, PollJob) and job.mailbox_id == "support"
    inbound = InboundRecord.model_validate(_record("deliver_inbound.json")).body
    assert isinstance(inbound, InboundMessage) and inbound.raw_b64 and inbound.size > 0
    outbound = OutboundRecord.model_validate(_record("send_outbound.json")).body
    assert isinstance(outbound, OutboundJob) and outbound.tenant_id == "demo"


def test_a_queue_body_that_is_not_our_message_is_refused() -> None:
    record = _record("deliver_inbound.json")
    record["body"] = json.dumps({"tenant_id": "demo"})
    with pytest.raises(ValidationError):
        InboundRecord.model_validate(record)


def test_ses_bounce_sample_names_tenant_email_and_permanence() -> None:
    event = parse_ses_event(_body("ses_events.json"))
    assert (event.event_type, event.tenant_id, event.permanent_failure) == ("Bounce", "demo", True)
    assert event.email_id == "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
    assert "550 5.1.1" in event.detail
