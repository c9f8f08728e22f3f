"""Misbehaviour on demand, service protection, request accounting and the control surface of the
Dataverse emulator (fact sheet §9.3; DESIGN "make it able to misbehave on demand")."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from emulators.dataverse import DataverseEmulator
from tests.fixtures.dataverse import HEADERS

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


def test_clear_faults_restores_normal_service(dataverse: DataverseEmulator) -> None:
    dataverse.set_faults([{"kind": "500"}])
    assert who_am_i(dataverse).status_code == 500

    dataverse.clear_faults()

    assert who_am_i(dataverse).status_code == 200


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
