"""A message over the tenant's limit that came through S3 is never read whole by the worker."""

from __future__ import annotations

from typing import Any

from emailrouter import aws
from emailrouter.clock import iso
from emailrouter.crm.connections import CrmConnections
from emailrouter.ledger.store import Ledger
from emailrouter.local.stack import LocalStack
from emailrouter.queues.messages import InboundMessage
from emailrouter.queues.rawstore import RawMailStore
from emailrouter.routing.deliver import InboundDelivery, TenantCache
from emailrouter.tenancy.secrets import TenantSecrets
from emailrouter.tenancy.store import TenantStore
from tests.helpers import TENANT, add_tenant, incoming_emails, raw_mail

LIMIT = 64 * 1024


def _counting_s3() -> tuple[Any, list[dict[str, Any]]]:
    """An S3 client that records every GetObject request's headers (the Range, when any)."""
    s3 = aws.client("s3")
    gets: list[dict[str, Any]] = []
    s3.meta.events.register(
        "before-call.s3.GetObject", lambda params, **_: gets.append(dict(params["headers"]))
    )
    return s3, gets


def test_oversized_message_in_s3_is_quarantined_from_its_size_without_reading_it(
    local_stack: LocalStack,
) -> None:
    add_tenant(local_stack, max_message_bytes=LIMIT)
    raw = raw_mail(subject="Huge log", message_id="<huge-1@client.example>", body="x" * 2_000_000)
    s3, gets = _counting_s3()
    bucket = local_stack.endpoints.environment["RAW_MAIL_BUCKET"]  # type: ignore[union-attr]
    store = RawMailStore(bucket, client=s3)
    key = store.put(TENANT, "help", raw)
    message = InboundMessage(
        tenant_id=TENANT, mailbox_id="help", source_ref="r-1", fetched_at=iso(), size=len(raw), raw_s3_key=key
    )
    delivery = InboundDelivery(
        TenantCache(TenantStore()), Ledger(), store, CrmConnections(TenantSecrets(), allow_private=True)
    )

    result = delivery.deliver(message, owner="test")

    assert result.outcome.value == "quarantined" and str(LIMIT) in result.reason
    assert incoming_emails(local_stack) == []
    # Only the header block was fetched, with a byte range far below the message's size.
    assert gets and all("Range" in headers for headers in gets), gets
    fetched = [int(h["Range"].split("-")[1]) + 1 for h in gets]
    assert sum(fetched) <= 256 * 1024 < len(raw)
    record = Ledger().get(TENANT, result.message_key)
    assert record is not None and record.subject == "Huge log" and record.raw_s3_key
    kept = aws.client("s3").get_object(Bucket=bucket, Key=record.raw_s3_key)["Body"].read()
    assert kept == raw
