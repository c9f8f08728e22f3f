"""Ids that prefix one another (`acme`, `acme-eu`; mailboxes `help`, `help-eu`) never reach each
other's data: every key or name a tenant's data is found under ends its id with a separator,
and the checks compare whole components, not string prefixes. Against moto in server mode."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest

from emailrouter.crm.parties import PartyMatch
from emailrouter.crm.party_cache import PartyCache
from emailrouter.ledger.models import Outcome
from emailrouter.ledger.store import Ledger
from emailrouter.queues.rawstore import RawMailStore
from emailrouter.tenancy.errors import SecretAccessError
from emailrouter.tenancy.secrets import TenantSecrets

SHORT, LONG = "acme", "acme-eu"


def _table(ddb: Any, name: str, gsi: bool = False) -> None:
    names = ("pk", "sk", "gsi1pk", "gsi1sk") if gsi else ("pk", "sk")
    extra: dict[str, Any] = {}
    if gsi:
        extra["GlobalSecondaryIndexes"] = [
            {
                "IndexName": "by_outcome",
                "KeySchema": [
                    {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                    {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ]
    ddb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in names],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
        **extra,
    )


@pytest.mark.parametrize(("reader", "owner"), [(SHORT, LONG), (LONG, SHORT)])
def test_a_tenant_never_reads_the_secrets_of_a_tenant_its_id_prefixes(
    aws: boto3.Session, reader: str, owner: str
) -> None:
    sm = aws.client("secretsmanager")
    for tenant in (SHORT, LONG):
        sm.create_secret(
            Name=f"emailrouter/{tenant}/crm", SecretString=json.dumps({"token": f"{tenant}-token"})
        )
    secrets = TenantSecrets(sm)

    assert secrets.get(reader, f"emailrouter/{reader}/crm") == {"token": f"{reader}-token"}
    with pytest.raises(SecretAccessError) as refused:
        secrets.get(reader, f"emailrouter/{owner}/crm")
    assert f"{owner}-token" not in str(refused.value)
    # A name that only starts like the tenant's prefix is not under it either.
    with pytest.raises(SecretAccessError):
        secrets.get(SHORT, f"emailrouter/{SHORT}-eu/crm")


@pytest.mark.parametrize(("reader", "owner"), [(SHORT, LONG), (LONG, SHORT)])
def test_raw_mail_of_a_tenant_whose_id_prefixes_another_stays_its_own(
    aws: boto3.Session, reader: str, owner: str
) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="raw", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    store = RawMailStore("raw", s3)
    theirs = store.put(owner, "help", f"From: a@b\r\n\r\nmail of {owner}\r\n".encode())
    quarantined = store.keep(owner, theirs, "quarantine")
    mine = store.put(reader, "help", f"From: a@b\r\n\r\nmail of {reader}\r\n".encode())

    assert store.get(reader, mine).endswith(f"mail of {reader}\r\n".encode())
    for key in (theirs, quarantined):
        for attempt in (
            lambda k: store.get(reader, k),
            lambda k: store.size(reader, k),
            lambda k: store.get_head(reader, k, 10),
            lambda k: store.keep(reader, k, "quarantine"),
            lambda k: store.delete(reader, k),
        ):
            with pytest.raises(PermissionError):
                attempt(key)
    assert store.get(owner, theirs).endswith(f"mail of {owner}\r\n".encode())  # still there


def test_the_ledger_keeps_the_same_message_apart_for_tenants_whose_ids_prefix_each_other(
    aws: boto3.Session,
) -> None:
    ddb = aws.client("dynamodb")
    _table(ddb, "ledger", gsi=True)
    ledger = Ledger("ledger", ddb)
    for tenant in (SHORT, LONG):
        claimed, finished = ledger.claim(tenant, "mid-1", f"w-{tenant}", 60, {"mailbox_id": "help"})
        assert claimed is not None and finished is None  # not a duplicate of the other tenant's
        ledger.complete(tenant, "mid-1", f"w-{tenant}", Outcome.CREATED, crm_email_id=f"email-{tenant}")
        ledger.record_source(tenant, "help", "ref-1", "mid-1", ack_needed=True)

    for tenant in (SHORT, LONG):
        (record,) = ledger.list_messages(tenant)
        assert (record.tenant_id, record.crm_email_id) == (tenant, f"email-{tenant}")
        (by_outcome,) = ledger.list_messages(tenant, Outcome.CREATED)
        assert by_outcome.crm_email_id == f"email-{tenant}"
        assert ledger.pending_acks(tenant, "help") == ["ref-1"]
    many = ledger.get_many([(SHORT, "MSG#mid-1"), (LONG, "MSG#mid-1")])
    assert {t: item["crm_email_id"] for (t, _), item in many.items()} == {
        SHORT: f"email-{SHORT}",
        LONG: f"email-{LONG}",
    }


def test_the_ledger_keeps_apart_the_source_refs_of_mailboxes_whose_ids_prefix_each_other(
    aws: boto3.Session,
) -> None:
    ddb = aws.client("dynamodb")
    _table(ddb, "ledger", gsi=True)
    ledger = Ledger("ledger", ddb)
    ledger.record_source(SHORT, "help", "1", "mid-help", ack_needed=True)
    ledger.record_source(SHORT, "help-eu", "2", "mid-help-eu", ack_needed=True)

    assert ledger.pending_acks(SHORT, "help") == ["1"]
    assert ledger.pending_acks(SHORT, "help-eu") == ["2"]
    assert [p.source_ref for p in ledger.pending_deletions(SHORT, "help")] == ["1"]


@pytest.mark.parametrize(("reader", "owner"), [(SHORT, LONG), (LONG, SHORT)])
def test_the_party_cache_answers_a_tenant_only_from_its_own_entries(
    aws: boto3.Session, reader: str, owner: str
) -> None:
    ddb = aws.client("dynamodb")
    _table(ddb, "party-cache")
    cache = PartyCache("party-cache", ddb)
    now = time.time()
    contact = PartyMatch("contact", "contacts", "cccccccc-0000-0000-0000-00000000000e")
    # The same organization and address: only the owner has an answer cached.
    cache.put(owner, "https://org.example", {"carl@client.example": (contact,)}, now + 60)

    assert cache.get(reader, "https://org.example", ["carl@client.example"], now) == {}
    assert cache.get(owner, "https://org.example", ["carl@client.example"], now)[
        "carl@client.example"
    ].matches == (contact,)
    cache.delete(reader, ["carl@client.example"])  # the reader forgetting its answer leaves the owner's
    assert cache.get(owner, "https://org.example", ["carl@client.example"], now) != {}
