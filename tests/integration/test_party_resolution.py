"""Party resolution against the Dataverse emulator with the shared cache in moto's DynamoDB:
how many Dataverse requests each layer saves, expiry, ambiguous senders, auto-created contacts."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest

from emailrouter.crm.auth import StaticTokenProvider
from emailrouter.crm.client import DataverseClient
from emailrouter.crm.connections import CrmConnections
from emailrouter.crm.contacts import contact_id_for, create_contact
from emailrouter.crm.errors import CrmRequestError
from emailrouter.crm.parties import KINDS, MATCHES_PER_ADDRESS, PartyMatch, PartyResolver, choose_sender
from emailrouter.crm.party_cache import PartyCache
from emailrouter.tenancy.models import CrmConfig, PartyConfig, TenantConfig
from emailrouter.tenancy.secrets import TenantSecrets
from emulators.dataverse import DataverseEmulator
from tests.fixtures.dataverse import TOKEN

TABLE = "party-cache"
TENANT = "contoso"
USER = "aaaaaaaa-0000-0000-0000-000000000001"
CONTACT = "cccccccc-0000-0000-0000-000000000001"
ACCOUNT = "dddddddd-0000-0000-0000-000000000001"
LEAD = "bbbbbbbb-0000-0000-0000-000000000001"
QUEUE = "eeeeeeee-0000-0000-0000-000000000001"
LOOKUPS_PER_CHUNK = len(KINDS)  # one query per record type for up to a hundred addresses


class Clock:
    """Epoch seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ddb(aws: boto3.Session) -> Any:
    client = aws.client("dynamodb")
    client.create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk")],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.update_time_to_live(
        TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )
    return client


@pytest.fixture
def cache(ddb: Any) -> PartyCache:
    return PartyCache(TABLE, ddb)


@pytest.fixture
def crm(dataverse: DataverseEmulator) -> DataverseEmulator:
    """The emulator holding one record of each kind, plus inactive ones that must never match."""
    dataverse.seed(
        {
            "systemusers": [
                {"systemuserid": USER, "fullname": "Alice", "internalemailaddress": "alice@acme.example"},
                {
                    "systemuserid": "aaaaaaaa-0000-0000-0000-000000000002",
                    "fullname": "Gone",
                    "internalemailaddress": "carl@client.example",
                    "isdisabled": True,
                },
            ],
            "contacts": [
                {"contactid": CONTACT, "fullname": "Carl", "emailaddress2": "Carl@Client.Example"},
                {
                    "contactid": "cccccccc-0000-0000-0000-000000000002",
                    "fullname": "Old Carl",
                    "emailaddress1": "carl@client.example",
                    "statecode": 1,
                },
            ],
            "accounts": [
                {"accountid": ACCOUNT, "name": "Client Ltd", "emailaddress1": "info@client.example"},
                {
                    "accountid": "dddddddd-0000-0000-0000-000000000002",
                    "name": "Closed Ltd",
                    "emailaddress3": "carl@client.example",
                    "statecode": 1,
                },
            ],
            "leads": [{"leadid": LEAD, "fullname": "Lee", "emailaddress1": "lee@prospect.example"}],
            "queues": [
                {"queueid": QUEUE, "name": "Help", "emailaddress": "help@acme.example"},
                {
                    "queueid": "eeeeeeee-0000-0000-0000-000000000002",
                    "name": "Old help",
                    "emailaddress": "carl@client.example",
                    "statecode": 1,
                },
            ],
        }
    )
    return dataverse


def _client(emulator: DataverseEmulator, org_url: str | None = None) -> DataverseClient:
    return DataverseClient(org_url or emulator.url, StaticTokenProvider(TOKEN))


def _requests(emulator: DataverseEmulator) -> int:
    return int(emulator.stats()["total_requests"])


def _ids(matches: tuple[PartyMatch, ...]) -> list[tuple[str, str]]:
    return [(m.logical_name, m.record_id) for m in matches]


ADDRESSES = ["alice@acme.example", "carl@client.example", "help@acme.example", "nobody@else.example"]


# ---- layers of the cache ------------------------------------------------------------------


def test_cold_lookup_asks_dataverse_once_per_record_type_and_a_warm_one_not_at_all(
    crm: DataverseEmulator, cache: PartyCache
) -> None:
    resolver = PartyResolver(_client(crm), ttl=900, tenant_id=TENANT, shared=cache)

    cold = resolver.resolve(ADDRESSES)
    after_cold = _requests(crm)
    warm = resolver.resolve(ADDRESSES)

    assert after_cold == LOOKUPS_PER_CHUNK
    assert _requests(crm) == after_cold
    assert warm == cold
    assert _ids(cold["alice@acme.example"]) == [("systemuser", USER)]
    assert cold["nobody@else.example"] == ()


def test_a_new_container_reuses_the_answers_stored_in_dynamodb(
    crm: DataverseEmulator, ddb: Any, cache: PartyCache
) -> None:
    first = PartyResolver(_client(crm), ttl=900, tenant_id=TENANT, shared=cache)
    answers = first.resolve(ADDRESSES)
    before = _requests(crm)

    fresh_container = PartyResolver(_client(crm), ttl=900, tenant_id=TENANT, shared=PartyCache(TABLE, ddb))
    again = fresh_container.resolve([a.upper() for a in ADDRESSES])

    assert _requests(crm) == before
    assert again == answers  # no-match answers included


def test_only_the_addresses_missing_from_every_cache_go_to_dataverse(
    crm: DataverseEmulator, cache: PartyCache
) -> None:
    PartyResolver(_client(crm), ttl=900, tenant_id=TENANT, shared=cache).resolve(ADDRESSES[:2])
    # Alice leaves: only a lookup in Dataverse would notice before her cached answer expires.
    crm.seed(
        {
            "systemusers": [
                {"systemuserid": USER, "internalemailaddress": "alice@acme.example", "isdisabled": True}
            ]
        }
    )
    client = _client(crm)
    resolver = PartyResolver(client, ttl=900, tenant_id=TENANT, shared=cache)

    resolved = resolver.resolve(ADDRESSES)

    assert client.requests_sent == LOOKUPS_PER_CHUNK
    assert _ids(resolved["alice@acme.example"]) == [("systemuser", USER)]  # from DynamoDB
    assert _ids(resolved["help@acme.example"]) == [("queue", QUEUE)]  # from Dataverse


def test_answers_belong_to_their_tenant(crm: DataverseEmulator, cache: PartyCache) -> None:
    PartyResolver(_client(crm), tenant_id="alpha", shared=cache).resolve(ADDRESSES)
    client = _client(crm)

    PartyResolver(client, tenant_id="beta", shared=cache).resolve(ADDRESSES)

    assert client.requests_sent == LOOKUPS_PER_CHUNK


def test_answers_from_another_organization_are_not_reused(crm: DataverseEmulator, cache: PartyCache) -> None:
    PartyResolver(_client(crm), tenant_id=TENANT, shared=cache).resolve(ADDRESSES)
    moved = _client(crm, crm.url.replace("127.0.0.1", "localhost"))  # same server, another org URL

    PartyResolver(moved, tenant_id=TENANT, shared=cache).resolve(ADDRESSES)

    assert moved.requests_sent == LOOKUPS_PER_CHUNK


# ---- expiry -------------------------------------------------------------------------------


def test_an_answer_past_its_ttl_is_looked_up_again_in_memory_and_in_dynamodb(
    crm: DataverseEmulator, cache: PartyCache
) -> None:
    clock = Clock()
    resolver = PartyResolver(_client(crm), ttl=60, clock=clock, tenant_id=TENANT, shared=cache)
    assert resolver.resolve(["new@client.example"]) == {"new@client.example": ()}
    crm.seed({"contacts": [{"contactid": CONTACT[:-1] + "9", "emailaddress1": "new@client.example"}]})
    before = _requests(crm)

    clock.now += 59
    within_ttl = resolver.resolve(["new@client.example"])
    requests_within_ttl = _requests(crm) - before
    clock.now += 2
    after_ttl = resolver.resolve(["new@client.example"])
    second_container = PartyResolver(_client(crm), ttl=60, clock=clock, tenant_id=TENANT, shared=cache)

    assert within_ttl == {"new@client.example": ()}
    assert requests_within_ttl == 0
    assert _ids(after_ttl["new@client.example"]) == [("contact", CONTACT[:-1] + "9")]
    assert _requests(crm) - before == LOOKUPS_PER_CHUNK
    assert second_container.resolve(["new@client.example"]) == after_ttl  # the refreshed item


def test_a_dynamodb_item_past_expires_at_is_ignored_and_replaced(
    crm: DataverseEmulator, ddb: Any, cache: PartyCache
) -> None:
    expired = int(time.time()) - 5  # TTL has not deleted it yet
    ddb.put_item(
        TableName=TABLE,
        Item={
            "pk": {"S": f"TENANT#{TENANT}"},
            "sk": {"S": "ADDR#carl@client.example"},
            "org_url": {"S": crm.url},
            "matches": {
                "L": [
                    {
                        "M": {
                            "logical_name": {"S": "lead"},
                            "entity_set": {"S": "leads"},
                            "record_id": {"S": LEAD},
                        }
                    }
                ]
            },
            "expires_at": {"N": str(expired)},
        },
    )
    client = _client(crm)

    resolved = PartyResolver(client, ttl=900, tenant_id=TENANT, shared=cache).resolve(["carl@client.example"])

    assert client.requests_sent == LOOKUPS_PER_CHUNK
    assert _ids(resolved["carl@client.example"]) == [("contact", CONTACT)]
    item = ddb.get_item(
        TableName=TABLE, Key={"pk": {"S": f"TENANT#{TENANT}"}, "sk": {"S": "ADDR#carl@client.example"}}
    )["Item"]
    assert int(item["expires_at"]["N"]) >= int(time.time()) + 890
    assert item["matches"]["L"][0]["M"]["logical_name"]["S"] == "contact"


def test_ttl_zero_asks_dataverse_every_time_and_stores_nothing(
    crm: DataverseEmulator, ddb: Any, cache: PartyCache
) -> None:
    client = _client(crm)
    resolver = PartyResolver(client, ttl=0, tenant_id=TENANT, shared=cache)

    resolver.resolve(ADDRESSES)
    resolver.resolve(ADDRESSES)

    assert client.requests_sent == 2 * LOOKUPS_PER_CHUNK
    assert ddb.scan(TableName=TABLE)["Count"] == 0


def test_invalidated_address_is_looked_up_again_by_every_new_container(
    crm: DataverseEmulator, cache: PartyCache
) -> None:
    resolver = PartyResolver(_client(crm), tenant_id=TENANT, shared=cache)
    resolver.resolve(ADDRESSES)

    resolver.invalidate(["Nobody@Else.example"])
    client = _client(crm)
    PartyResolver(client, tenant_id=TENANT, shared=cache).resolve(ADDRESSES)
    before = _requests(crm)
    resolver.resolve(ADDRESSES)  # the new container stored the answer again

    assert client.requests_sent == LOOKUPS_PER_CHUNK
    assert _requests(crm) == before


# ---- matching -----------------------------------------------------------------------------


def test_matching_ignores_case_and_inactive_or_disabled_records(crm: DataverseEmulator) -> None:
    resolved = PartyResolver(_client(crm)).resolve(["CARL@client.EXAMPLE", " Lee@Prospect.example "])

    assert set(resolved) == {"carl@client.example", "lee@prospect.example"}
    assert _ids(resolved["carl@client.example"]) == [("contact", CONTACT)]
    assert _ids(resolved["lee@prospect.example"]) == [("lead", LEAD)]


def test_a_hundred_addresses_take_one_request_per_record_type(
    crm: DataverseEmulator, cache: PartyCache
) -> None:
    client = _client(crm)
    addresses = [f"person{n}@else.example" for n in range(97)] + ["alice@acme.example", "carl@client.example"]

    resolved = PartyResolver(client, tenant_id=TENANT, shared=cache).resolve(addresses)

    assert client.requests_sent == LOOKUPS_PER_CHUNK
    assert len(resolved) == 99
    assert _ids(resolved["alice@acme.example"]) == [("systemuser", USER)]
    assert _ids(resolved["carl@client.example"]) == [("contact", CONTACT)]


def test_more_addresses_than_one_request_holds_are_looked_up_in_chunks(
    crm: DataverseEmulator, cache: PartyCache
) -> None:
    client = _client(crm)
    addresses = [f"person{n}@else.example" for n in range(150)] + ["alice@acme.example"]

    resolved = PartyResolver(client, tenant_id=TENANT, shared=cache).resolve(addresses)

    assert client.requests_sent == 2 * LOOKUPS_PER_CHUNK
    assert len(resolved) == 151
    assert _ids(resolved["alice@acme.example"]) == [("systemuser", USER)]


def test_long_non_ascii_addresses_are_split_so_every_url_stays_in_bounds(
    dataverse: DataverseEmulator,
) -> None:
    addresses = [f"{'ü' * 80}{n:03d}@bücher.example" for n in range(100)]
    ids = dataverse.seed({"contacts": [{"lastname": "Last", "emailaddress3": addresses[-1]}]})["contacts"]
    client = _client(dataverse)

    resolved = PartyResolver(client, ttl=0).resolve(addresses)

    assert _ids(resolved[addresses[-1]]) == [("contact", ids[0])]
    assert client.requests_sent > LOOKUPS_PER_CHUNK  # split: 100 of them encoded pass the URL limit
    assert all(resolved[a] == () for a in addresses[:-1])


def test_an_address_longer_than_any_email_column_matches_nothing_without_a_request(
    dataverse: DataverseEmulator,
) -> None:
    client = _client(dataverse)
    long_address = "x" * 120 + "@client.example"

    assert PartyResolver(client, ttl=0).resolve([long_address]) == {long_address: ()}
    assert client.requests_sent == 0


def test_answers_of_finished_chunks_are_kept_when_a_later_chunk_fails(
    crm: DataverseEmulator, cache: PartyCache
) -> None:
    addresses = [f"person{n:03d}@else.example" for n in range(150)]
    resolver = PartyResolver(_client(crm), tenant_id=TENANT, shared=cache)
    crm.set_faults([{"kind": "400", "path_contains": "person149"}])
    with pytest.raises(CrmRequestError):
        resolver.resolve(addresses)
    crm.clear_faults()
    client = _client(crm)

    PartyResolver(client, tenant_id=TENANT, shared=cache).resolve(addresses)

    assert client.requests_sent == LOOKUPS_PER_CHUNK  # only the chunk that failed


def test_an_address_many_records_carry_is_read_in_one_capped_request(dataverse: DataverseEmulator) -> None:
    dataverse.seed(
        {"contacts": [{"lastname": f"C{i}", "emailaddress1": "shared@client.example"} for i in range(600)]}
    )
    client = _client(dataverse)

    resolved = PartyResolver(client, ttl=0).resolve(["shared@client.example"])

    assert client.requests_sent == LOOKUPS_PER_CHUNK  # no paging through every copy
    assert 1 <= len(resolved["shared@client.example"]) <= MATCHES_PER_ADDRESS


# ---- ambiguous sender ---------------------------------------------------------------------


@pytest.fixture
def shared_address(crm: DataverseEmulator) -> tuple[PartyMatch, ...]:
    """One address carried by a queue, a lead, an account, a contact and a user (seeded in that order)."""
    crm.seed(
        {
            "queues": [{"queueid": QUEUE[:-1] + "5", "name": "Sales", "emailaddress": "sales@acme.example"}],
            "leads": [{"leadid": LEAD[:-1] + "5", "emailaddress2": "sales@acme.example"}],
            "accounts": [
                {"accountid": ACCOUNT[:-1] + "5", "name": "A", "emailaddress1": "sales@acme.example"}
            ],
            "contacts": [{"contactid": CONTACT[:-1] + "5", "emailaddress3": "sales@acme.example"}],
            "systemusers": [{"systemuserid": USER[:-1] + "5", "internalemailaddress": "sales@acme.example"}],
        }
    )
    return PartyResolver(_client(crm)).resolve(["sales@acme.example"])["sales@acme.example"]


def test_resolution_lists_matches_in_crm_order(shared_address: tuple[PartyMatch, ...]) -> None:
    assert [m.logical_name for m in shared_address] == ["systemuser", "contact", "account", "lead", "queue"]


def test_ambiguous_sender_is_the_first_match_in_crm_order_by_default(
    shared_address: tuple[PartyMatch, ...],
) -> None:
    chosen = choose_sender(tuple(reversed(shared_address)), unresolve_ambiguous=False)

    assert chosen is not None and (chosen.logical_name, chosen.record_id) == ("systemuser", USER[:-1] + "5")
    without_user = choose_sender(shared_address[1:], unresolve_ambiguous=False)
    assert without_user is not None and without_user.logical_name == "contact"


def test_ambiguous_sender_stays_unresolved_when_the_tenant_asks(
    shared_address: tuple[PartyMatch, ...],
) -> None:
    assert choose_sender(shared_address, unresolve_ambiguous=True) is None
    assert choose_sender(shared_address[-1:], unresolve_ambiguous=True) == shared_address[-1]
    assert choose_sender((), unresolve_ambiguous=False) is None


# ---- auto-created contacts ----------------------------------------------------------------


def _contacts_with(emulator: DataverseEmulator, address: str) -> list[dict[str, Any]]:
    return [r for r in emulator.rows("contacts") if str(r.get("emailaddress1") or "").lower() == address]


def test_creating_a_contact_twice_leaves_one_contact_that_resolves_afterwards(
    crm: DataverseEmulator, cache: PartyCache
) -> None:
    resolver = PartyResolver(_client(crm), tenant_id=TENANT, shared=cache)
    assert resolver.resolve(["ann.lee@new.example"]) == {"ann.lee@new.example": ()}

    first = create_contact(_client(crm), TENANT, "ann.lee@new.example", "Ann van der Berg")
    retry = create_contact(_client(crm), TENANT, "Ann.Lee@New.example", "Ann van der Berg")
    resolver.invalidate(["ann.lee@new.example"])
    resolved = resolver.resolve(["ann.lee@new.example"])
    other_container = PartyResolver(_client(crm), tenant_id=TENANT, shared=cache)

    assert first == retry == PartyMatch("contact", "contacts", contact_id_for(TENANT, "ann.lee@new.example"))
    contacts = _contacts_with(crm, "ann.lee@new.example")
    assert len(contacts) == 1
    assert (contacts[0]["firstname"], contacts[0]["lastname"]) == ("Ann", "van der Berg")
    assert contacts[0]["statecode"] == 0
    assert resolved["ann.lee@new.example"] == (first,)
    assert other_container.resolve(["ann.lee@new.example"])["ann.lee@new.example"] == (first,)


@pytest.mark.parametrize(
    ("display_name", "address", "names"),
    [
        ("", "ann.lee@new.example", ("ann", "lee")),
        ("ann.lee@new.example", "ann.lee@new.example", ("ann", "lee")),
        ("Lee, Ann", "x@new.example", ("Ann", "Lee")),
        ('"Prince"', "x@new.example", (None, "Prince")),
        ("", "postmaster@new.example", (None, "postmaster")),
    ],
)
def test_contact_names_come_from_the_display_name_else_the_local_part(
    crm: DataverseEmulator, display_name: str, address: str, names: tuple[str | None, str]
) -> None:
    create_contact(_client(crm), TENANT, address, display_name)

    (contact,) = _contacts_with(crm, address)
    assert (contact.get("firstname"), contact["lastname"]) == names


def test_the_same_address_in_another_tenant_gets_its_own_contact_id() -> None:
    assert contact_id_for("alpha", "ann@new.example") != contact_id_for("beta", "ann@new.example")
    assert contact_id_for("alpha", "ann@new.example") == contact_id_for("alpha", " ANN@new.example")


# ---- the batch calls and failures of the shared cache -------------------------------------


class CallCounter:
    """Counts the DynamoDB API calls a real (moto-backed) client makes."""

    def __init__(self, client: Any) -> None:
        self.calls: list[str] = []
        client.meta.events.register("before-call.dynamodb.*", self._record)

    def _record(self, model: Any, **_: Any) -> None:
        self.calls.append(model.name)


def _answers(count: int) -> dict[str, tuple[PartyMatch, ...]]:
    return {
        f"p{n}@else.example": (PartyMatch("contact", "contacts", f"{n:08d}-0000-0000-0000-000000000000"),)
        if n % 2
        else ()
        for n in range(count)
    }


def test_the_cache_reads_100_and_writes_25_keys_per_call(ddb: Any, cache: PartyCache) -> None:
    answers = _answers(230)
    counter = CallCounter(ddb)
    now = time.time()

    cache.put(TENANT, "https://org.example", answers, now + 60)
    found = cache.get(TENANT, "https://org.example", [*answers, "absent@else.example"], now)

    assert counter.calls.count("BatchWriteItem") == 10
    assert counter.calls.count("BatchGetItem") == 3
    assert {a: answer.matches for a, answer in found.items()} == answers


class Unprocessing:
    """A moto-backed client that, like DynamoDB under load, processes only part of each batch call
    the first `rounds` times and hands the rest back as unprocessed."""

    def __init__(self, client: Any, rounds: int) -> None:
        self._client = client
        self._rounds = rounds

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        (table, request), *_ = RequestItems.items()
        if self._rounds <= 0 or len(request["Keys"]) < 2:
            return dict(self._client.batch_get_item(RequestItems=RequestItems))
        self._rounds -= 1
        half = len(request["Keys"]) // 2
        response = self._client.batch_get_item(
            RequestItems={table: {**request, "Keys": request["Keys"][:half]}}
        )
        return {**response, "UnprocessedKeys": {table: {**request, "Keys": request["Keys"][half:]}}}

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        (table, requests), *_ = RequestItems.items()
        if self._rounds <= 0 or len(requests) < 2:
            return dict(self._client.batch_write_item(RequestItems=RequestItems))
        self._rounds -= 1
        half = len(requests) // 2
        response = self._client.batch_write_item(RequestItems={table: requests[:half]})
        return {**response, "UnprocessedItems": {table: requests[half:]}}


def test_unprocessed_keys_and_items_are_sent_again(ddb: Any) -> None:
    answers = _answers(40)
    now = time.time()
    waits: list[float] = []

    PartyCache(TABLE, Unprocessing(ddb, rounds=3), sleep=waits.append).put(TENANT, "org", answers, now + 60)
    stored = ddb.scan(TableName=TABLE)["Count"]
    found = PartyCache(TABLE, Unprocessing(ddb, rounds=3), sleep=waits.append).get(
        TENANT, "org", answers, now
    )

    assert stored == 40
    assert {a: answer.matches for a, answer in found.items()} == answers
    assert len(waits) == 6 and all(w > 0 for w in waits)


def test_a_failing_cache_table_falls_back_to_dataverse(crm: DataverseEmulator, aws: boto3.Session) -> None:
    missing_table = PartyCache("no-such-table", aws.client("dynamodb"))
    client = _client(crm)
    resolver = PartyResolver(client, tenant_id=TENANT, shared=missing_table)

    first = resolver.resolve(ADDRESSES)
    resolver.resolve(ADDRESSES)
    resolver.invalidate(ADDRESSES)

    assert _ids(first["carl@client.example"]) == [("contact", CONTACT)]
    assert client.requests_sent == LOOKUPS_PER_CHUNK  # memory still serves the second call


# ---- wiring -------------------------------------------------------------------------------


def test_connections_give_each_tenant_a_resolver_with_its_ttl_and_the_shared_cache(
    crm: DataverseEmulator, aws: boto3.Session, ddb: Any, cache: PartyCache
) -> None:
    sm = aws.client("secretsmanager")
    sm.create_secret(Name=f"emailrouter/{TENANT}/crm", SecretString=json.dumps({"token": TOKEN}))
    tenant = TenantConfig(
        tenant_id=TENANT,
        crm=CrmConfig(url=crm.url, credential_secret=f"emailrouter/{TENANT}/crm"),
        parties=PartyConfig(cache_ttl_seconds=120),
    )
    connections = CrmConnections(TenantSecrets(sm), allow_private=True, party_cache=cache)

    first = connections.for_tenant(tenant)
    first.parties.resolve(["alice@acme.example"])
    same = connections.for_tenant(tenant)
    longer = connections.for_tenant(tenant.model_copy(update={"parties": PartyConfig(cache_ttl_seconds=600)}))

    item = ddb.get_item(
        TableName=TABLE, Key={"pk": {"S": f"TENANT#{TENANT}"}, "sk": {"S": "ADDR#alice@acme.example"}}
    )["Item"]
    assert time.time() + 100 < int(item["expires_at"]["N"]) <= time.time() + 120
    assert same is first and longer is not first


# ---- addresses that mean something in a query string ------------------------------------------

AWKWARD = [
    "ann+crm@client.example",
    "a&b@client.example",
    "hash#tag@client.example",
    "100%25@client.example",
    "o'neil@client.example",
    "k=v?x/y@client.example",
    "jörg@bücher.example",
]


def test_addresses_with_query_string_characters_resolve_to_their_own_record(
    dataverse: DataverseEmulator,
) -> None:
    ids = dataverse.seed(
        {
            "contacts": [
                *({"lastname": f"C{i}", "emailaddress1": a} for i, a in enumerate(AWKWARD)),
                {"lastname": "Decoy", "emailaddress1": "ann crm@client.example"},
            ]
        }
    )["contacts"]

    resolved = PartyResolver(_client(dataverse), ttl=0).resolve(AWKWARD)

    assert {a: _ids(m) for a, m in resolved.items()} == {
        a: [("contact", ids[i])] for i, a in enumerate(AWKWARD)
    }


def test_an_address_written_as_a_filter_reads_no_other_rows(dataverse: DataverseEmulator) -> None:
    dataverse.seed(
        {"contacts": [{"lastname": f"C{i}", "emailaddress1": f"c{i}@client.example"} for i in range(501)]}
    )
    evil = "x%27%29%20or%20true#@evil.example"

    resolved = PartyResolver(_client(dataverse), ttl=0).resolve([evil])

    assert resolved == {evil: ()}
    assert _requests(dataverse) == LOOKUPS_PER_CHUNK  # one answer per record type, no paging
