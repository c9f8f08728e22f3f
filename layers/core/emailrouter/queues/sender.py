"""Putting messages on our queues: batched, grouped by tenant, and checked for partial failure."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from emailrouter import aws
from emailrouter.clock import iso
from emailrouter.queues.messages import InboundMessage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pydantic import BaseModel

    from emailrouter.queues.rawstore import RawMailStore

SQS_BATCH = 10


class QueueSendError(Exception):
    """Some messages could not be enqueued; the caller must not advance past them."""


class QueueSender:
    def __init__(self, client: Any | None = None) -> None:
        self._sqs = client or aws.client("sqs")

    def send(self, queue_url: str, tenant_id: str, bodies: Sequence[BaseModel]) -> None:
        """Send in batches of ten with MessageGroupId = tenant (SQS fair queues)."""
        self.send_grouped(queue_url, [(tenant_id, body) for body in bodies])

    def send_grouped(self, queue_url: str, messages: Sequence[tuple[str, BaseModel]]) -> None:
        """Send (tenant, body) pairs in the given order, ten per request, each with its own
        MessageGroupId: an interleaved order across tenants costs no extra requests."""
        for start in range(0, len(messages), SQS_BATCH):
            chunk = messages[start : start + SQS_BATCH]
            entries = [
                {"Id": str(index), "MessageBody": body.model_dump_json(), "MessageGroupId": tenant_id}
                for index, (tenant_id, body) in enumerate(chunk)
            ]
            response = self._sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            failed = response.get("Failed", [])
            if failed:
                reasons = ", ".join(f"{f.get('Code')}: {f.get('Message', '')}" for f in failed)
                raise QueueSendError(f"{len(failed)} of {len(chunk)} messages not enqueued ({reasons})")


def inbound_message(
    tenant_id: str,
    mailbox_id: str,
    source_ref: str,
    raw: bytes,
    raw_store: RawMailStore,
    inline_max_bytes: int,
    source_identity: str | None = None,
) -> InboundMessage:
    """Inline the raw bytes when small; otherwise store them in S3 first (claim check)."""
    common: dict[str, object] = {
        "tenant_id": tenant_id,
        "mailbox_id": mailbox_id,
        "source_ref": source_ref,
        "fetched_at": iso(),
        "size": len(raw),
        "source_identity": source_identity,
    }
    if len(raw) <= inline_max_bytes:
        return InboundMessage.model_validate({**common, "raw_b64": base64.b64encode(raw).decode("ascii")})
    return InboundMessage.model_validate({**common, "raw_s3_key": raw_store.put(tenant_id, mailbox_id, raw)})


def raw_bytes(message: InboundMessage, raw_store: RawMailStore) -> bytes:
    if message.raw_b64 is not None:
        return base64.b64decode(message.raw_b64)
    if message.raw_s3_key is None:
        raise ValueError("inbound message has neither inline raw bytes nor an S3 key")
    return raw_store.get(message.tenant_id, message.raw_s3_key)
