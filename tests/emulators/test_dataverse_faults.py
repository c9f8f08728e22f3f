"""Misbehaviour on demand, service protection, request accounting, the request journal and the
control surface of the Dataverse emulator (fact sheet §9.3; DESIGN "make it able to misbehave on demand")."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from emulators.dataverse import DataverseEmulator
from emulators.dataverse.journal import caller_of
from tests.fixtures.dataverse import HEADERS, TOKEN

ROOT = Path(__file__).resolve().parents[2]


def who_am_i(dv: DataverseEmulator) -> requests.Response:
    return requests.get(dv.api_url + "WhoAmI", headers=HEADERS, timeout=5)


# ------------------------------------------------------------------ service protection


def test_request_limit_returns_429_with_integer_retry_after(dataverse: DataverseEmulator) -> None:
    dataverse.set_rate_limit((3, 1.0))

    statuses = [who_am_i(dataverse).status_code for _ in range(3)]
    throttled = who_am_i(dataverse)

    assert statuses == [200, 200, 200]
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"].isdigit()
    assert int(throttled.headers["Retry-After"]) >= 1
    assert throttled.json()["error"]["code"] == "0x80072322"
    assert "Number of requests exceeded the limit of 3" in throttled.json()["error"]["message"]


def test_window_slides_and_requests_succeed_after_retry_after(dataverse: DataverseEmulator) -> None:
    dataverse.set_rate_limit((2, 1.0))
    who_am_i(dataverse)
    who_am_i(dataverse)
    throttled = who_am_i(dataverse)

    time.sleep(int(throttled.headers["Retry-After"]))
    retried = who_am_i(dataverse)

    assert throttled.status_code == 429
    assert retried.status_code == 200


def test_limit_is_per_token() -> None:
    with DataverseEmulator(tokens=("a", "b"), rate_limit=(1, 60)) as dv:
        first_a = requests.get(dv.api_url + "WhoAmI", headers={"Authorization": "Bearer a"}, timeout=5)
        second_a = requests.get(dv.api_url + "WhoAmI", headers={"Authorization": "Bearer a"}, timeout=5)
        first_b = requests.get(dv.api_url + "WhoAmI", headers={"Authorization": "Bearer b"}, timeout=5)

    assert (first_a.status_code, second_a.status_code, first_b.status_code) == (200, 429, 200)


def test_batch_operations_count_against_the_limit(dataverse: DataverseEmulator) -> None:
    dataverse.set_rate_limit((2, 60.0))
    part = "--b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nGET /api/data/v9.2/WhoAmI HTTP/1.1\r\n\r\n"
    body = part * 3 + "--b--\r\n"

    response = requests.post(
        dataverse.api_url + "$batch",
        data=body,
        headers={**HEADERS, "Content-Type": "multipart/mixed; boundary=b"},
        timeout=5,
    )

    assert response.status_code == 429
    assert dataverse.stats()["throttles"][0][1] == int(response.headers["Retry-After"])


def test_stats_show_a_client_waited_out_retry_after(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "429", "count": 1, "retry_after": 1}])

    response = who_am_i(dataverse)
    while response.status_code == 429:  # a well-behaved client
        time.sleep(int(response.headers["Retry-After"]))
        response = who_am_i(dataverse)
    stats = dataverse.stats()

    assert response.status_code == 200
    assert stats["throttled"] == 1
    (throttled_at, retry_after) = stats["throttles"][0]
    later = [t for t in stats["request_times"] if t > throttled_at]
    assert later and min(later) >= throttled_at + retry_after


# ------------------------------------------------------------------ injected faults


def test_fault_429_first_n_then_normal(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "429", "count": 2, "retry_after": 7}])

    responses = [who_am_i(dataverse) for _ in range(3)]

    assert [r.status_code for r in responses] == [429, 429, 200]
    assert responses[0].headers["Retry-After"] == "7"
    assert responses[0].json()["error"]["code"] == "0x80072322"


def test_fault_503_and_500_return_error_json(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "503", "count": 1, "retry_after": 2}, {"kind": "500", "count": 1}])

    unavailable = who_am_i(dataverse)
    failed = who_am_i(dataverse)

    assert unavailable.status_code == 503
    assert unavailable.headers["Retry-After"] == "2"
    assert failed.status_code == 500
    assert failed.json()["error"]["code"].startswith("0x")
    assert who_am_i(dataverse).status_code == 200


def test_fault_drop_closes_the_connection_without_a_response(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "drop", "count": 1}])

    with pytest.raises(requests.exceptions.ConnectionError):
        who_am_i(dataverse)
    assert who_am_i(dataverse).status_code == 200


def test_fault_latency_delays_but_answers(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "latency", "delay_ms": 250}])

    started = time.monotonic()
    response = who_am_i(dataverse)

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.25


def test_fault_filters_by_method_and_path(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "503", "method": "POST", "path_contains": "emails"}])

    get_emails = requests.get(dataverse.api_url + "emails", headers=HEADERS, timeout=5)
    post_contact = requests.post(
        dataverse.api_url + "contacts", json={"lastname": "x"}, headers=HEADERS, timeout=5
    )
    post_email = requests.post(
        dataverse.api_url + "emails", json={"subject": "x"}, headers=HEADERS, timeout=5
    )

    assert (get_emails.status_code, post_contact.status_code, post_email.status_code) == (200, 204, 503)
    assert dataverse.rows("emails") == []


def test_probabilistic_faults_repeat_with_the_same_seed(dataverse: DataverseEmulator) -> None:
    def run() -> list[int]:
        dataverse.set_faults([{"kind": "429", "probability": 0.5}], seed=42)
        return [who_am_i(dataverse).status_code for _ in range(20)]

    first, second = run(), run()

    assert first == second
    assert {200, 429} <= set(first)


def test_probabilistic_429_and_503_answer_their_own_fractions(dataverse: DataverseEmulator) -> None:
    # One draw per request, one slice per rule: 503 at 0.25 is a quarter of all requests, not a
    # quarter of those the 429 rule spared (which would be 12.5 %).
    dataverse.set_faults(
        [
            {"kind": "429", "probability": 0.5, "retry_after": 2},
            {"kind": "503", "probability": 0.25, "retry_after": 1},
        ],
        seed=7,
    )
    with requests.Session() as http:
        responses = [http.get(dataverse.api_url + "WhoAmI", headers=HEADERS, timeout=5) for _ in range(1000)]

    statuses = [r.status_code for r in responses]
    throttled = [r for r in responses if r.status_code == 429]
    unavailable = [r for r in responses if r.status_code == 503]
    assert set(statuses) == {200, 429, 503}
    assert 0.46 <= statuses.count(429) / 1000 <= 0.54
    assert 0.21 <= statuses.count(503) / 1000 <= 0.29
    assert {r.headers["Retry-After"] for r in throttled} == {"2"}
    assert {r.json()["error"]["code"] for r in throttled} == {"0x80072322"}
    assert {r.json()["error"]["code"] for r in unavailable} == {"0x80040216"}
    assert {r.headers["Retry-After"] for r in unavailable} == {"1"}


def test_probabilistic_faults_over_http_with_a_seed_repeat(dataverse: DataverseEmulator) -> None:
    rules = {
        "rules": [{"kind": "429", "probability": 0.3}, {"kind": "503", "probability": 0.05}],
        "seed": 11,
    }

    def run() -> list[int]:
        requests.post(dataverse.url + "/_emulator/faults", json=rules, timeout=5).raise_for_status()
        return [who_am_i(dataverse).status_code for _ in range(60)]

    first, second = run(), run()

    assert first == second
    assert {200, 429} <= set(first)


def test_fault_redirect_answers_307_with_its_location_and_400_a_query_error(
    dataverse: DataverseEmulator,
) -> None:
    dataverse.set_faults(
        [
            {"kind": "redirect", "location": "http://localhost:1/elsewhere", "path_contains": "WhoAmI"},
            {"kind": "400", "path_contains": "contacts"},
        ]
    )

    moved = requests.get(dataverse.api_url + "WhoAmI", headers=HEADERS, timeout=5, allow_redirects=False)
    refused = requests.get(dataverse.api_url + "contacts", headers=HEADERS, timeout=5)

    assert (moved.status_code, moved.headers["Location"]) == (307, "http://localhost:1/elsewhere")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "0x80060888"
    assert [e.status for e in dataverse.journal_entries()] == [307, 400]


def test_next_link_root_points_paging_elsewhere_until_reset(dataverse: DataverseEmulator) -> None:
    dataverse.seed({"contacts": [{"lastname": f"C{i}"} for i in range(3)]})
    dataverse.set_next_link_root("http://localhost:1/api/data/v9.2/")

    moved = requests.get(
        dataverse.api_url + "contacts", headers={**HEADERS, "Prefer": "odata.maxpagesize=2"}, timeout=5
    )
    dataverse.reset()
    dataverse.seed({"contacts": [{"lastname": f"C{i}"} for i in range(3)]})
    own = requests.get(
        dataverse.api_url + "contacts", headers={**HEADERS, "Prefer": "odata.maxpagesize=2"}, timeout=5
    )

    assert moved.json()["@odata.nextLink"].startswith("http://localhost:1/api/data/v9.2/contacts?")
    assert own.json()["@odata.nextLink"].startswith(dataverse.api_url + "contacts?")


@pytest.mark.parametrize(
    "rule",
    [
        {"kind": "429", "probability": 1.5},
        {"kind": "429", "retry_after": -1},
        {"kind": "429", "scope": "everything"},
        {"kind": "drop", "scope": "operation"},
        {"kind": "redirect"},
        {"kind": "redirect", "location": "http://localhost:1/", "scope": "operation"},
    ],
)
def test_fault_rule_out_of_range_is_refused(dataverse: DataverseEmulator, rule: dict[str, object]) -> None:
    response = requests.post(dataverse.url + "/_emulator/faults", json={"rules": [rule]}, timeout=5)

    assert response.status_code == 400
    assert dataverse.faults.rules() == []


def _who_am_i_batch(dv: DataverseEmulator, count: int, continue_on_error: bool) -> requests.Response:
    part = "--b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nGET /api/data/v9.2/WhoAmI HTTP/1.1\r\n\r\n"
    prefer = {"Prefer": "odata.continue-on-error"} if continue_on_error else {}
    return requests.post(
        dv.api_url + "$batch",
        data=part * count + "--b--\r\n",
        headers={**HEADERS, **prefer, "Content-Type": "multipart/mixed; boundary=b"},
        timeout=5,
    )


def test_operation_scope_throttles_one_part_of_a_batch(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "429", "count": 1, "retry_after": 2, "scope": "operation"}])

    response = _who_am_i_batch(dataverse, 3, continue_on_error=True)
    (entry,) = dataverse.journal_entries()

    assert response.status_code == 200
    statuses = re.findall(r"^HTTP/1\.1 (\d{3})", response.text, re.MULTILINE)
    assert statuses == ["429", "200", "200"]
    assert "Retry-After: 2" in response.text and "0x80072322" in response.text
    assert (entry.status, entry.operation_statuses, entry.retry_after) == (200, [429, 200, 200], 2)
    assert entry.throttled and entry.fault is None  # the request itself was not faulted
    assert who_am_i(dataverse).status_code == 200  # plain requests are out of the rule's scope


def test_batch_stopping_at_a_throttled_part_is_a_429_with_its_retry_after(
    dataverse: DataverseEmulator,
) -> None:
    dataverse.set_faults([{"kind": "429", "count": 1, "retry_after": 3, "scope": "operation"}])

    response = _who_am_i_batch(dataverse, 2, continue_on_error=False)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert dataverse.journal_entries()[0].operation_statuses == [429]


def test_request_scope_throttles_the_whole_batch(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "429", "count": 1, "retry_after": 2}])

    response = _who_am_i_batch(dataverse, 2, continue_on_error=True)
    (entry,) = dataverse.journal_entries()

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "0x80072322"
    assert (entry.fault, entry.retry_after, entry.operation_statuses) == ("429", 2, None)


def test_clear_faults_restores_normal_service(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "500"}])
    assert who_am_i(dataverse).status_code == 500

    dataverse.clear_faults()

    assert who_am_i(dataverse).status_code == 200


# ------------------------------------------------------------------ request journal


def test_journal_records_arrival_caller_status_and_retry_after() -> None:
    with DataverseEmulator(tokens=("token-a", "token-b")) as dv:
        dv.set_faults([{"kind": "429", "count": 1, "retry_after": 3}])
        before = time.monotonic()
        throttled = requests.get(
            dv.api_url + "WhoAmI", headers={"Authorization": "Bearer token-a"}, timeout=5
        )
        served = requests.get(dv.api_url + "WhoAmI", headers={"Authorization": "Bearer token-b"}, timeout=5)
        refused = requests.get(dv.api_url + "WhoAmI", headers={"Authorization": "Bearer nope"}, timeout=5)
        after = time.monotonic()
        over_http = requests.get(dv.url + "/_emulator/journal", timeout=5).json()

    entries = over_http["entries"]
    assert (throttled.status_code, served.status_code, refused.status_code) == (429, 200, 401)
    assert [e["status"] for e in entries] == [429, 200, 401]
    assert [e["retry_after"] for e in entries] == [3, None, None]
    assert [e["fault"] for e in entries] == ["429", None, None]
    assert [e["caller"] for e in entries] == [caller_of("token-a"), caller_of("token-b"), None]
    assert caller_of("token-a") != caller_of("token-b")
    assert all("token-a" not in str(e) for e in entries)  # a fingerprint, never the token
    arrivals = [e["arrived"] for e in entries]
    assert before <= arrivals[0] <= arrivals[1] <= arrivals[2] <= after  # server-side monotonic
    assert all(e["arrived"] <= e["answered"] <= after for e in entries)
    assert over_http["now"] >= after
    assert entries[0]["method"] == "GET" and entries[0]["path"] == "/api/data/v9.2/WhoAmI"


def test_journal_tells_a_patient_client_from_an_impatient_one(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "429", "count": 2, "retry_after": 1}])

    impatient = [who_am_i(dataverse).status_code, who_am_i(dataverse).status_code]
    patient = who_am_i(dataverse)
    time.sleep(1)
    entries = dataverse.journal_entries()
    patient_retry = who_am_i(dataverse)
    after = dataverse.journal_entries()

    assert impatient == [429, 429] and patient.status_code == 200 and patient_retry.status_code == 200
    first_429, second_429, early = entries
    assert second_429.arrived - first_429.arrived < first_429.retry_after  # did not wait
    assert early.arrived - second_429.arrived < 1
    assert after[-1].arrived - second_429.arrived >= 1  # waited out the second one


def test_journal_records_dropped_connections_and_batch_operations(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "drop", "count": 1}])
    with pytest.raises(requests.exceptions.ConnectionError):
        who_am_i(dataverse)
    part = "--b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nGET /api/data/v9.2/WhoAmI HTTP/1.1\r\n\r\n"
    requests.post(
        dataverse.api_url + "$batch",
        data=part * 2 + "--b--\r\n",
        headers={**HEADERS, "Content-Type": "multipart/mixed; boundary=b"},
        timeout=5,
    ).raise_for_status()

    dropped, batch = dataverse.journal_entries()

    assert (dropped.status, dropped.fault, dropped.caller) == (0, "drop", caller_of(TOKEN))
    assert (batch.status, batch.operations, batch.path) == (200, 2, "/api/data/v9.2/$batch")


def test_journal_is_emptied_by_reset_and_by_delete(dataverse: DataverseEmulator) -> None:
    who_am_i(dataverse)
    deleted = requests.delete(dataverse.url + "/_emulator/journal", timeout=5)
    emptied_by_delete = dataverse.journal_entries()
    who_am_i(dataverse)
    requests.post(dataverse.url + "/_emulator/reset", timeout=5).raise_for_status()

    assert deleted.status_code == 204
    assert emptied_by_delete == []
    assert dataverse.journal_entries() == []


# ------------------------------------------------------------------ control endpoints over HTTP


def test_control_endpoints_seed_dump_faults_stats_reset(dataverse: DataverseEmulator) -> None:
    control = dataverse.url + "/_emulator/"
    account = "3b0a2c3d-0000-4000-8000-000000000001"

    seeded = requests.post(
        control + "seed",
        json={
            "accounts": [{"accountid": account, "name": "Contoso"}],
            "contacts": [
                {"lastname": "Lee", "emailaddress1": "l@example.com", "_parentcustomerid_value": account}
            ],
        },
        timeout=5,
    )
    dump = requests.get(control + "dump/contacts", timeout=5).json()["value"]
    faults = requests.post(control + "faults", json={"rules": [{"kind": "503"}], "seed": 1}, timeout=5)
    during = who_am_i(dataverse)
    cleared = requests.delete(control + "faults", timeout=5)
    stats = requests.get(control + "stats", timeout=5).json()
    reset = requests.post(control + "reset", timeout=5)

    assert seeded.status_code == 200
    assert seeded.json()["ids"]["accounts"] == [account]
    assert dump[0]["_parentcustomerid_value"] == account
    assert dump[0]["_parentcustomerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "account"
    assert (faults.status_code, during.status_code, cleared.status_code) == (204, 503, 204)
    assert stats["total_requests"] == 1
    assert stats["by_status"] == {"503": 1}
    assert reset.status_code == 204
    assert dataverse.rows("contacts") == []
    assert dataverse.stats()["total_requests"] == 0


def test_control_endpoints_need_no_auth_but_api_does(dataverse: DataverseEmulator) -> None:
    assert requests.get(dataverse.url + "/_emulator/health", timeout=5).status_code == 200
    assert requests.get(dataverse.api_url + "contacts", timeout=5).status_code == 401


def test_invalid_fault_rule_is_rejected(dataverse: DataverseEmulator) -> None:
    response = requests.post(
        dataverse.url + "/_emulator/faults", json={"rules": [{"kind": "teapot"}]}, timeout=5
    )

    assert response.status_code == 400


def test_emulator_refuses_non_loopback_host() -> None:
    with pytest.raises(ValueError, match="loopback"):
        DataverseEmulator(host="0.0.0.0")


# ------------------------------------------------------------------ running as a program


def test_module_runs_in_foreground_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "emulators.dataverse", "--port", "0", "--token", "cli-token"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        endpoints = json.loads(process.stdout.readline())
        response = requests.get(
            endpoints["api_url"] + "WhoAmI", headers={"Authorization": "Bearer cli-token"}, timeout=5
        )
        assert endpoints["url"].startswith("http://127.0.0.1:")
        assert response.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=10)

    assert code == 0
