"""Generated and mutated MIME through parse *and* routing, against the local stack: no exception
escapes the worker, every message ends with exactly one outcome in the ledger, and a quarantined
message always has its raw bytes kept, byte for byte, for replay."""

from __future__ import annotations

import base64
import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emailrouter.clock import iso
from emailrouter.ledger.models import Outcome
from emailrouter.ledger.store import Ledger
from emailrouter.local.stack import LocalStack
from emailrouter.queues.messages import InboundMessage
from emailrouter.routing.outcomes import DeliveryResult
from emailrouter.runtime import reset_runtime
from tests.helpers import TENANT, add_tenant, raw_mail, seed_org
from tests.unit.test_mime_properties import mime_messages, mutated

_sequence = itertools.count()


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with tempfile.TemporaryDirectory() as tmp:
        local = LocalStack(workdir=Path(tmp) / "local", time_scale=0.005, with_dovecot=False)
        local.start()
        seed_org(local)
        add_tenant(local, loop_protection={"enabled": False}, max_message_bytes=4096)
        yield local
        local.stop()


def _valid() -> st.SearchStrategy[bytes]:
    subjects = st.text(min_size=0, max_size=40)
    return st.builds(
        lambda subject, n: raw_mail(subject=subject, message_id=f"<prop-{n}@client.example>"),
        subjects,
        st.integers(0, 50),
    )


MESSAGES = st.one_of(
    mime_messages(), mutated(mime_messages()), mutated(_valid()), _valid(), st.binary(max_size=200)
)


@pytest.mark.timeout(900)
def test_no_exception_one_outcome_and_quarantine_keeps_raw(stack: LocalStack) -> None:
    runtime = reset_runtime()
    ledger = Ledger()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(MESSAGES, min_size=1, max_size=5))
    def run(batch: list[bytes]) -> None:
        items = [
            (
                InboundMessage(
                    tenant_id=TENANT,
                    mailbox_id="help",
                    source_ref=f"p{next(_sequence)}",
                    fetched_at=iso(),
                    size=len(raw),
                    raw_b64=base64.b64encode(raw).decode(),
                ),
                f"owner-{next(_sequence)}",
            )
            for raw in batch
        ]
        results = runtime.delivery.deliver_batch(items)
        assert len(results) == len(batch)
        for raw, result in zip(batch, results, strict=True):
            assert isinstance(result, DeliveryResult), f"{type(result).__name__}: {result}"
            record = ledger.get(TENANT, result.message_key)
            assert record is not None and record.status == "done" and record.outcome is not None
            if result.outcome is not Outcome.DUPLICATE:
                assert record.outcome is result.outcome
            if record.outcome is Outcome.QUARANTINED:
                assert record.raw_s3_key, record
                kept = runtime.raw_store.get(TENANT, record.raw_s3_key)
                if result.outcome is Outcome.QUARANTINED:
                    assert kept == raw
            if record.outcome in (Outcome.CREATED, Outcome.CORRELATED):
                assert record.crm_email_id

    run()
