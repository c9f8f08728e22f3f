"""Our Web API client against the emulator over HTTP: retries, Retry-After, error classes,
and party resolution with its cache."""

from __future__ import annotations

import time

import pytest

from emailrouter.crm.auth import StaticTokenProvider
from emailrouter.crm.client import DataverseClient
from emailrouter.crm.errors import CrmAuthError, CrmNotFoundError, CrmRequestError, CrmTransientError
from emailrouter.crm.parties import PartyResolver
from emulators.dataverse import DataverseEmulator
from tests.fixtures.dataverse import TOKEN

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
