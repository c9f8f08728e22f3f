"""The sample events in events/ are what each function's parser accepts."""

from __future__ import annotations

import json
from pathlib import Path

from emailrouter.outbound.events import parse_ses_event
from emailrouter.queues.messages import InboundMessage, OutboundJob, PollJob

EVENTS = Path(__file__).resolve().parents[2] / "events"


def _body(name: str) -> str:
    return str(json.loads((EVENTS / name).read_text())["Records"][0]["body"])


def test_every_function_has_a_sample_event() -> None:
    functions = {p.name for p in (EVENTS.parent / "functions").iterdir() if (p / "app.py").exists()}
    samples = {p.stem for p in EVENTS.glob("*.json")}
    assert functions == samples


def test_queue_samples_parse_into_their_models() -> None:
    assert PollJob.model_validate_json(_body("poll_mailbox.json")).mailbox_id == "support"
    inbound = InboundMessage.model_validate_json(_body("deliver_inbound.json"))
    assert inbound.raw_b64 and inbound.size > 0
    assert OutboundJob.model_validate_json(_body("send_outbound.json")).tenant_id == "demo"


def test_ses_bounce_sample_names_tenant_email_and_permanence() -> None:
    event = parse_ses_event(_body("ses_events.json"))
    assert (event.event_type, event.tenant_id, event.permanent_failure) == ("Bounce", "demo", True)
    assert event.email_id == "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
    assert "550 5.1.1" in event.detail
