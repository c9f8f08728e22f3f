"""A POP3 mailbox's seen set in the tenants table, split so it scales past one item's 400 KB.

The digests (`uidl_digest`, 8 bytes each) are spread over up to 256 bucket items by their first
byte, each item a sorted run of packed digests:
  TENANT#<id> / CURSOR#<mailbox>#SEEN#<xx>   digests (binary) whose first byte is xx
100,000 UIDLs make about 256 items of 3 KB; one item holds 50,000 digests, so the layout holds
about 12 million before any item nears the limit. A save rewrites only the buckets whose content
changed (a poll that hands off ten messages touches at most ten), and deletes emptied ones.
Buckets are written before the cursor item that counts them, so a crash in between leaves at
worst digests of messages already handed off.
"""

from __future__ import annotations

from typing import Any

DIGEST_BYTES = 8
BATCH_WRITE = 25


def bucket_prefix(mailbox_id: str) -> str:
    return f"CURSOR#{mailbox_id}#SEEN#"


def pack(digests: set[str]) -> dict[str, bytes]:
    """Bucket name (two hex digits) → packed sorted digests; empty buckets are left out."""
    buckets: dict[str, list[bytes]] = {}
    for digest in digests:
        buckets.setdefault(digest[:2], []).append(bytes.fromhex(digest))
    return {name: b"".join(sorted(values)) for name, values in buckets.items()}


def unpack(buckets: dict[str, bytes]) -> set[str]:
    return {
        data[start : start + DIGEST_BYTES].hex()
        for data in buckets.values()
        for start in range(0, len(data), DIGEST_BYTES)
    }


class SeenSetItems:
    """Reads and writes one mailbox's buckets through a DynamoDB client."""

    def __init__(self, client: Any, table: str) -> None:
        self._ddb = client
        self._table = table

    def read(self, pk: str, mailbox_id: str) -> dict[str, bytes]:
        prefix = bucket_prefix(mailbox_id)
        buckets: dict[str, bytes] = {}
        for page in self._ddb.get_paginator("query").paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
            ExpressionAttributeValues={":pk": {"S": pk}, ":p": {"S": prefix}},
            ConsistentRead=True,
        ):
            for item in page.get("Items", []):
                buckets[item["sk"]["S"].removeprefix(prefix)] = bytes(item["digests"]["B"])
        return buckets

    def write(
        self, pk: str, tenant_id: str, mailbox_id: str, new: dict[str, bytes], old: dict[str, bytes]
    ) -> None:
        """Bring the stored buckets from `old` to `new`, touching only those that differ."""
        prefix = bucket_prefix(mailbox_id)
        requests: list[dict[str, Any]] = [
            {
                "PutRequest": {
                    "Item": {
                        "pk": {"S": pk},
                        "sk": {"S": prefix + name},
                        "tenant_id": {"S": tenant_id},
                        "digests": {"B": data},
                    }
                }
            }
            for name, data in sorted(new.items())
            if old.get(name) != data
        ]
        requests += [
            {"DeleteRequest": {"Key": {"pk": {"S": pk}, "sk": {"S": prefix + name}}}}
            for name in sorted(old)
            if name not in new
        ]
        for start in range(0, len(requests), BATCH_WRITE):
            pending: dict[str, Any] = {self._table: requests[start : start + BATCH_WRITE]}
            for _attempt in range(8):
                response = self._ddb.batch_write_item(RequestItems=pending)
                pending = response.get("UnprocessedItems") or {}
                if not pending:
                    break
            else:
                raise RuntimeError("the tenants table left seen-set items unwritten after repeated attempts")
