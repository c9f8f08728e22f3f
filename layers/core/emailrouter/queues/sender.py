"""Putting messages on our queues: batched, grouped by tenant, and checked for partial failure."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from emailrouter import aws
from emailrouter.clock import iso
from emailrouter.queues.messages import InboundMessage

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from pydantic import BaseModel

    from emailrouter.queues.rawstore import RawMailStore

SQS_BATCH = 10
# SQS limits the sum of a batch's message bodies, like one message, to 1 MiB (bytes, not characters).
SQS_BATCH_BYTES = 1024 * 1024


class QueueSendError(Exception):
    """Some messages could not be enqueued; the caller must not advance past them."""


class QueueSender:
    def __init__(self, client: Any | None = None) -> None:
        self._sqs = client or aws.client("sqs")

    def send(self, queue_url: str, tenant_id: str, bodies: Sequence[BaseModel]) -> None:
        """Send in batches of ten with MessageGroupId = tenant (SQS fair queues)."""
        self.send_grouped(queue_url, [(tenant_id, body) for body in bodies])

    def send_grouped(self, queue_url: str, messages: Sequence[tuple[str, BaseModel]]) -> None:
        """Send (tenant, body) pairs in the given order, up to ten and 1 MiB per request, each with
        its own MessageGroupId: an interleaved order across tenants costs no extra requests."""
        for chunk in _batches([(tenant_id, body.model_dump_json()) for tenant_id, body in messages]):
            entries = [
                {"Id": str(index), "MessageBody": text, "MessageGroupId": tenant_id}
                for index, (tenant_id, text) in enumerate(chunk)
            ]
            response = self._sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            failed = response.get("Failed", [])
            if failed:
                reasons = ", ".join(f"{f.get('Code')}: {f.get('Message', '')}" for f in failed)
                raise QueueSendError(f"{len(failed)} of {len(chunk)} messages not enqueued ({reasons})")


def _batches(messages: list[tuple[str, str]]) -> Iterator[list[tuple[str, str]]]:
    """Consecutive runs of at most SQS_BATCH messages whose bodies total at most SQS_BATCH_BYTES.

    A body over the limit goes alone (SQS refuses that request), so it never takes others with it.
    """
    chunk: list[tuple[str, str]] = []
    size = 0
    for tenant_id, text in messages:
        length = len(text.encode("utf-8"))
        if chunk and (len(chunk) == SQS_BATCH or size + length > SQS_BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append((tenant_id, text))
        size += length
    if chunk:
        yield chunk


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
