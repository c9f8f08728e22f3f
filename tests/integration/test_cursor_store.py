"""Mailbox cursors in the tenants table (moto): a POP3 seen set of 100,000+ UIDLs.

POP3 has no "new" marker, so the cursor remembers every UIDL left on the server (delete after
processing is off by default). One DynamoDB item holds at most 400 KB: a seen set stored in one
item stops the mailbox at about 20,000 messages. These tests store far more and read it back.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import boto3
import pytest

from emailrouter.sources.base import MailboxCursor, uidl_digest
from emailrouter.tenancy.store import TenantStore

ITEM_LIMIT = 400 * 1024
UIDVALIDITY = 1796685571


@pytest.fixture
def ddb(aws: boto3.Session) -> Any:
    client = aws.client("dynamodb")
    client.create_table(
        TableName="tenants",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return client


def _uidls(start: int, count: int) -> list[str]:
    """UIDLs as Dovecot makes them (pop3_uidl_format = %08Xu%08Xv)."""
    return [f"{uid:08X}{UIDVALIDITY:08X}" for uid in range(start, start + count)]


def _item_sizes(ddb: Any) -> list[int]:
    """Approximate DynamoDB item sizes: attribute names plus values, as AWS counts them."""
    sizes = []
    for page in ddb.get_paginator("scan").paginate(TableName="tenants"):
        for item in page["Items"]:
            size = 0
            for name, value in item.items():
                ((_kind, data),) = value.items()
                size += len(name) + len(data if isinstance(data, bytes) else str(data).encode())
            sizes.append(size)
    return sizes


def test_a_seen_set_of_120000_uidls_is_stored_in_items_under_the_limit_and_read_back(ddb: Any) -> None:
    uidls = _uidls(1, 120_000)
    cursor = MailboxCursor(seen_uidls=uidls)  # as a cursor written before the seen set was split

    TenantStore("tenants", ddb).save_cursor("t", "m", cursor)
    loaded = TenantStore("tenants", ddb).get_cursor("t", "m")

    assert loaded.seen() == {uidl_digest(uidl) for uidl in uidls}
    assert max(_item_sizes(ddb)) < ITEM_LIMIT
    # Nothing of another mailbox is touched.
    assert TenantStore("tenants", ddb).get_cursor("t", "other").seen() == set()


def test_ten_new_uidls_rewrite_only_the_items_they_fall_in(ddb: Any) -> None:
    store = TenantStore("tenants", ddb)
    store.save_cursor("t", "m", MailboxCursor(seen_digests={uidl_digest(u) for u in _uidls(1, 100_000)}))
    written: Counter[str] = Counter()

    def count(params: dict[str, Any], **_: Any) -> None:
        for requests in params.get("RequestItems", {}).values():
            written["items"] += len(requests)

    ddb.meta.events.register("provide-client-params.dynamodb.BatchWriteItem", count)
    cursor = store.get_cursor("t", "m")
    grown = cursor.model_copy(
        update={"seen_digests": cursor.seen() | {uidl_digest(u) for u in _uidls(100_001, 10)}}
    )
    store.save_cursor("t", "m", grown)

    assert 1 <= written["items"] <= 10
    assert TenantStore("tenants", ddb).get_cursor("t", "m").seen() == grown.seen()


def test_a_shrinking_seen_set_removes_the_items_it_no_longer_needs(ddb: Any) -> None:
    store = TenantStore("tenants", ddb)
    store.save_cursor("t", "m", MailboxCursor(seen_uidls=_uidls(1, 5_000)))
    store.save_cursor("t", "m", MailboxCursor(seen_uidls=_uidls(1, 3)))

    assert TenantStore("tenants", ddb).get_cursor("t", "m").seen() == {uidl_digest(u) for u in _uidls(1, 3)}
    assert len(_item_sizes(ddb)) <= 4  # the cursor and at most three buckets
