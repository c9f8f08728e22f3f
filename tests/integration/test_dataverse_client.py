"""Our Web API client against the emulator over HTTP: retries, Retry-After (held for every
thread of the client), the deadline, error classes, and party resolution with its cache."""

from __future__ import annotations

import http.server
import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict

import pytest

from emailrouter.crm.auth import StaticTokenProvider
from emailrouter.crm.client import DataverseClient
from emailrouter.crm.emails import find_by_message_ids, find_by_tracking_token
from emailrouter.crm.errors import (
    CrmAuthError,
    CrmEndpointError,
    CrmNotFoundError,
    CrmRequestError,
    CrmTransientError,
)
from emailrouter.crm.parties import PartyResolver
from emailrouter.crm.transport import vetted_session
from emailrouter.egress import IPAddress
from emulators.dataverse import DataverseEmulator
from tests.fixtures.dataverse import TOKEN
from tests.helpers import retry_after_violations

CONTACT = "cccccccc-0000-0000-0000-000000000001"


def _client(emulator: DataverseEmulator, **kwargs: object) -> DataverseClient:
    return DataverseClient(emulator.url, StaticTokenProvider(TOKEN), **kwargs)  # type: ignore[arg-type]


def test_throttled_request_waits_its_retry_after_then_succeeds(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "429", "count": 2, "retry_after": 1}])
    try:
        body = _client(dataverse).get("WhoAmI")
    finally:
        dataverse.clear_faults()

    assert "UserId" in body
    stats = dataverse.stats()
    assert stats["by_status"] == {"429": 2, "200": 1}
    times = [r["time"] for r in stats["requests"]]
    for (throttled_at, retry_after), next_request in zip(stats["throttles"], times[1:], strict=True):
        assert next_request - throttled_at >= retry_after


def test_service_unavailable_is_retried_with_backoff(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "503", "count": 2, "retry_after": 0}])
    try:
        assert "UserId" in _client(dataverse).get("WhoAmI")
    finally:
        dataverse.clear_faults()
    assert dataverse.stats()["by_status"] == {"503": 2, "200": 1}


def test_retries_stop_at_the_deadline_with_a_transient_error(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "429", "count": 10, "retry_after": 30}])
    started = time.monotonic()
    try:
        with pytest.raises(CrmTransientError, match="429"):
            _client(dataverse, deadline=lambda: started + 5).get("WhoAmI")
    finally:
        dataverse.clear_faults()
    assert time.monotonic() - started < 5  # it did not sleep 30 s past the deadline
    assert dataverse.stats()["total_requests"] == 1


def test_a_429_holds_every_thread_of_the_client_until_its_retry_after(
    dataverse: DataverseEmulator,
) -> None:
    dataverse.set_faults([{"kind": "429", "count": 1, "retry_after": 1}])
    first_is_waiting = threading.Event()

    def sleep(seconds: float) -> None:
        first_is_waiting.set()
        time.sleep(seconds)

    client = _client(dataverse, sleep=sleep)
    outcome: list[object] = []
    first = threading.Thread(target=lambda: outcome.append(client.get("WhoAmI")))
    try:
        first.start()
        assert first_is_waiting.wait(5)  # the first thread got its 429 and waits it out
        started = time.monotonic()
        second = client.get("contacts?$select=fullname")  # this thread never saw a 429
        waited = time.monotonic() - started
        first.join(5)
    finally:
        dataverse.clear_faults()

    entries = dataverse.journal_entries()
    assert [e.status for e in entries] == [429, 200, 200]
    throttle = entries[0]
    assert all(e.arrived >= throttle.arrived + 1 for e in entries[1:])
    assert retry_after_violations([asdict(e) for e in entries]) == []
    assert waited > 0.5  # it waited on the other thread's Retry-After
    assert "value" in second and outcome and "UserId" in outcome[0]  # type: ignore[operator]


def test_a_throttled_part_of_a_batch_holds_the_client_like_a_429(dataverse: DataverseEmulator) -> None:
    from emailrouter.crm import batch

    dataverse.set_faults([{"kind": "429", "count": 1, "retry_after": 1, "scope": "operation"}])
    client = _client(dataverse)
    try:
        answers = batch.execute(client, [batch.Operation("GET", "WhoAmI"), batch.Operation("GET", "WhoAmI")])
        client.get("WhoAmI")
    finally:
        dataverse.clear_faults()

    assert isinstance(answers[0], CrmTransientError) and answers[0].status == 429
    assert not isinstance(answers[1], Exception)
    batch_entry, after = dataverse.journal_entries()
    assert batch_entry.operation_statuses == [429, 200]
    assert after.arrived >= batch_entry.arrived + 1
    assert retry_after_violations([asdict(e) for e in dataverse.journal_entries()]) == []


def test_a_retry_after_past_the_deadline_refuses_every_later_request_at_once(
    dataverse: DataverseEmulator,
) -> None:
    dataverse.set_faults([{"kind": "429", "count": 1, "retry_after": 30}])
    started = time.monotonic()
    client = _client(dataverse, deadline=lambda: started + 5)
    try:
        with pytest.raises(CrmTransientError, match="429"):
            client.get("WhoAmI")
        with pytest.raises(CrmTransientError, match="throttled") as refused:
            client.get("contacts")  # another call, same client: the gate is closed for 30 s
    finally:
        dataverse.clear_faults()

    assert refused.value.status == 429
    assert time.monotonic() - started < 1  # refused, not slept
    assert [e.status for e in dataverse.journal_entries()] == [429]  # nothing else was sent


def test_past_the_deadline_a_request_is_tried_once_and_never_retried(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "503", "count": 1}])
    client = _client(dataverse, deadline=lambda: time.monotonic() - 0.001)
    try:
        with pytest.raises(CrmTransientError, match="503"):
            client.get("WhoAmI")
        after = client.get("WhoAmI")  # a stale deadline does not stop work that needs no wait
    finally:
        dataverse.clear_faults()

    assert "UserId" in after
    assert [e.status for e in dataverse.journal_entries()] == [503, 200]


def test_without_a_deadline_retries_are_not_capped_by_a_count(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "503", "count": 8, "retry_after": 0}])
    try:
        body = _client(dataverse, sleep=lambda _s: None).get("WhoAmI")
    finally:
        dataverse.clear_faults()

    assert "UserId" in body
    assert [e.status for e in dataverse.journal_entries()] == [503] * 8 + [200]


def test_back_off_for_5xx_never_sleeps_past_the_deadline(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "503", "retry_after": 0}])
    started = time.monotonic()
    try:
        with pytest.raises(CrmTransientError, match="503"):
            _client(dataverse, max_attempts=100, deadline=lambda: started + 0.3).get("WhoAmI")
    finally:
        dataverse.clear_faults()

    assert time.monotonic() - started < 0.5
    assert len(dataverse.journal_entries()) >= 1


def test_a_slow_response_is_cut_off_at_the_deadline(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "latency", "delay_ms": 1500}])
    started = time.monotonic()
    try:
        with pytest.raises(CrmTransientError, match="Timeout"):
            _client(dataverse, deadline=lambda: started + 0.4).get("WhoAmI")
        elapsed = time.monotonic() - started
    finally:
        dataverse.clear_faults()
        # The server still answers the abandoned request; let it finish before the next test.
        while not dataverse.journal_entries() and time.monotonic() - started < 5:
            time.sleep(0.05)

    assert elapsed < 1.0  # not the 20 s HTTP timeout, nor the 1.5 s the server took


def test_dropped_connection_is_transient(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "drop", "count": 10}])
    try:
        with pytest.raises(CrmTransientError):
            _client(dataverse, max_attempts=2, sleep=lambda _s: None).get("WhoAmI")
    finally:
        dataverse.clear_faults()


def test_error_classes_follow_the_status(dataverse: DataverseEmulator) -> None:
    client = _client(dataverse)
    with pytest.raises(CrmNotFoundError) as missing:
        client.get("contacts(00000000-0000-0000-0000-000000000009)")
    assert missing.value.code == "0x80040217"
    with pytest.raises(CrmRequestError):
        client.get("contacts?$filter=nosuchcolumn eq 1")
    with pytest.raises(CrmAuthError):
        DataverseClient(dataverse.url, StaticTokenProvider("wrong")).get("WhoAmI")


def test_party_resolution_is_case_insensitive_active_only_and_cached(dataverse: DataverseEmulator) -> None:
    dataverse.seed(
        {
            "contacts": [
                {
                    "contactid": CONTACT,
                    "fullname": "Carl",
                    "emailaddress2": "Carl@Client.example",
                    "statecode": 0,
                },
                {
                    "contactid": "cccccccc-0000-0000-0000-000000000002",
                    "fullname": "Old Carl",
                    "emailaddress1": "carl@client.example",
                    "statecode": 1,
                },
            ],
            "queues": [
                {
                    "queueid": "eeeeeeee-0000-0000-0000-000000000001",
                    "name": "Help",
                    "emailaddress": "help@acme.example",
                    "statecode": 0,
                }
            ],
        }
    )
    resolver = PartyResolver(_client(dataverse))

    first = resolver.resolve(["CARL@client.example", "help@acme.example", "nobody@else.example"])
    requests_after_first = dataverse.stats()["total_requests"]
    second = resolver.resolve(["carl@client.example", "help@acme.example", "nobody@else.example"])

    assert [(m.logical_name, m.record_id) for m in first["carl@client.example"]] == [("contact", CONTACT)]
    assert [m.logical_name for m in first["help@acme.example"]] == ["queue"]
    assert first["nobody@else.example"] == ()
    assert second == first
    assert dataverse.stats()["total_requests"] == requests_after_first  # served from the cache


MESSAGE_IDS = [
    "<CAF+x=y@mail.gmail.com>",
    "<a&b#c@client.example>",
    "<100%25/o'k?@client.example>",
    "<jörg.1@bücher.example>",
]


def test_message_ids_with_query_string_characters_find_their_own_email(dataverse: DataverseEmulator) -> None:
    ids = dataverse.seed(
        {
            "emails": [
                *({"subject": f"E{i}", "messageid": m} for i, m in enumerate(MESSAGE_IDS)),
                {"subject": "Decoy", "messageid": "<CAF x=y@mail.gmail.com>"},
            ]
        }
    )["emails"]

    rows = find_by_message_ids(_client(dataverse), MESSAGE_IDS)
    each = [[r["activityid"] for r in find_by_message_ids(_client(dataverse), [m])] for m in MESSAGE_IDS]

    assert sorted(r["activityid"] for r in rows) == sorted(ids[: len(MESSAGE_IDS)])
    assert each == [[i] for i in ids[: len(MESSAGE_IDS)]]


def test_a_tracking_token_is_matched_as_one_literal(dataverse: DataverseEmulator) -> None:
    ids = dataverse.seed(
        {
            "emails": [
                {"subject": "A", "trackingtoken": "CRM:0001+"},
                {"subject": "B", "trackingtoken": "CRM:0001 "},
            ]
        }
    )["emails"]

    rows = find_by_tracking_token(_client(dataverse), "CRM:0001+")

    assert [r["activityid"] for r in rows] == [ids[0]]


# ---- the client talks to the organization's URL only ------------------------------------------


@pytest.fixture
def foreign() -> Iterator[DataverseEmulator]:
    """Another server on loopback that would accept our token: it must never hear from us."""
    with DataverseEmulator(tokens=(TOKEN,)) as other:
        yield other


def test_a_redirect_is_an_error_and_is_not_followed(
    dataverse: DataverseEmulator, foreign: DataverseEmulator
) -> None:
    dataverse.set_faults([{"kind": "redirect", "location": foreign.api_url + "contacts"}])

    with pytest.raises(CrmAuthError) as refused:
        _client(dataverse).get("contacts")

    assert refused.value.status == 307
    assert "redirect" in str(refused.value) and f"127.0.0.1:{foreign.port}" in str(refused.value)
    assert foreign.journal_entries() == []
    assert len(dataverse.journal_entries()) == 1  # not retried either


def test_a_next_link_to_another_port_is_refused_before_any_request(
    dataverse: DataverseEmulator, foreign: DataverseEmulator
) -> None:
    dataverse.seed({"contacts": [{"lastname": f"C{i}"} for i in range(3)]})
    foreign.seed({"contacts": [{"lastname": f"F{i}"} for i in range(3)]})
    dataverse.set_next_link_root(foreign.api_url)

    with pytest.raises(CrmAuthError) as refused:
        _client(dataverse).get_all("contacts?$select=lastname", page_size=2)

    assert "not followed" in str(refused.value)
    assert foreign.journal_entries() == []


@pytest.mark.parametrize(
    "root", ["http://localhost:{port}/api/data/v9.2/", "https://127.0.0.1:{port}/api/data/v9.2/"]
)
def test_a_next_link_to_another_host_or_scheme_is_refused(dataverse: DataverseEmulator, root: str) -> None:
    dataverse.seed({"contacts": [{"lastname": f"C{i}"} for i in range(3)]})
    dataverse.set_next_link_root(root.format(port=dataverse.port))

    with pytest.raises(CrmAuthError):
        _client(dataverse, max_attempts=1).get_all("contacts?$select=lastname", page_size=2)

    assert len(dataverse.journal_entries()) == 1  # the first page only


def test_a_next_link_on_the_organizations_own_url_is_followed(dataverse: DataverseEmulator) -> None:
    dataverse.seed({"contacts": [{"lastname": f"C{i}"} for i in range(5)]})

    rows = _client(dataverse).get_all("contacts?$select=lastname", page_size=2)

    assert sorted(r["lastname"] for r in rows) == [f"C{i}" for i in range(5)]
    assert len(dataverse.journal_entries()) == 3


def _resolver(answers: list[str]) -> Callable[[str], list[IPAddress]]:
    """DNS for `org.crm.test` (which no real resolver knows): each lookup takes the next answer."""
    given = iter(answers)

    def resolve(name: str) -> list[IPAddress]:
        assert name == "org.crm.test"
        return [ipaddress.ip_address(next(given))]

    return resolve


def test_a_vetted_session_connects_to_the_address_it_resolved(dataverse: DataverseEmulator) -> None:
    session = vetted_session(allow_private=True, resolver=_resolver(["127.0.0.1"]))
    client = DataverseClient(
        f"http://org.crm.test:{dataverse.port}", StaticTokenProvider(TOKEN), session=session
    )

    assert client.get("WhoAmI")["UserId"] == dataverse.identity.user_id
    assert len(dataverse.journal_entries()) == 1


class _HostRecorder(http.server.BaseHTTPRequestHandler):
    hosts: list[str] = []

    def do_GET(self) -> None:
        type(self).hosts.append(self.headers.get("Host", ""))
        body = b'{"value": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_vetted_session_still_names_the_host_in_its_requests() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _HostRecorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        session = vetted_session(allow_private=True, resolver=_resolver(["127.0.0.1"]))
        DataverseClient(f"http://org.crm.test:{port}", StaticTokenProvider(TOKEN), session=session).get(
            "contacts"
        )
    finally:
        server.shutdown()
        server.server_close()

    assert _HostRecorder.hosts == [f"org.crm.test:{port}"]


def test_a_name_that_resolves_to_a_forbidden_address_when_connecting_is_never_contacted(
    dataverse: DataverseEmulator,
) -> None:
    session = vetted_session(allow_private=False, resolver=_resolver(["127.0.0.1"]))
    client = DataverseClient(
        f"http://org.crm.test:{dataverse.port}", StaticTokenProvider(TOKEN), session=session
    )

    with pytest.raises(CrmEndpointError) as refused:
        client.get("WhoAmI")

    assert "loopback" in str(refused.value)
    assert dataverse.journal_entries() == []


def test_many_long_non_ascii_message_ids_are_looked_up_within_the_url_limit(
    dataverse: DataverseEmulator,
) -> None:
    message_ids = [f"<{'ü' * 300}.{n:02d}@bücher.example>" for n in range(20)]
    ids = dataverse.seed({"emails": [{"subject": "Found", "messageid": message_ids[-1]}]})["emails"]
    too_long = "<" + "x" * 400 + "@client.example>"  # longer than the column: never stored

    rows = find_by_message_ids(_client(dataverse), [*message_ids, too_long])

    assert [r["activityid"] for r in rows] == ids
    assert all(e.status == 200 for e in dataverse.journal_entries())
