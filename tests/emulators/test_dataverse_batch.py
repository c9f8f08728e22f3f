"""``$batch`` on the Dataverse emulator, with request bodies framed by hand as in Microsoft's
examples (fact sheet §10): change sets, Content-ID references, atomic rollback, stop-on-error
vs ``odata.continue-on-error``, and server-chosen response boundaries."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

import requests

from emulators.dataverse import DataverseEmulator
from tests.fixtures.dataverse import HEADERS

CRLF = "\r\n"


@dataclass
class Part:
    status: int
    headers: dict[str, str]
    body: str
    content_id: str | None


def send(
    dv: DataverseEmulator, body: str, boundary: str = "batch_AAA", prefer: str | None = None
) -> requests.Response:
    headers = {**HEADERS, "Content-Type": f'multipart/mixed; boundary="{boundary}"', "If-None-Match": "null"}
    if prefer:
        headers["Prefer"] = prefer
    return requests.post(
        dv.api_url + "$batch", data=body.replace("\n", CRLF).encode(), headers=headers, timeout=10
    )


def response_parts(response: requests.Response) -> list[Part]:
    """Flatten the multipart response (change-set parts included) into operation results."""
    match = re.search(r"boundary=([^;\s]+)", response.headers["Content-Type"])
    assert match
    return _parts(response.text, match.group(1))


def _parts(text: str, boundary: str) -> list[Part]:
    parts: list[Part] = []
    for chunk in text.split(f"--{boundary}")[1:]:
        if chunk.startswith("--"):
            break
        head, _, rest = chunk.lstrip("\r\n").partition("\r\n\r\n")
        mime = dict(line.split(": ", 1) for line in head.split("\r\n") if ": " in line)
        if mime["Content-Type"].startswith("multipart/mixed"):
            inner = re.search(r"boundary=([^;\s]+)", mime["Content-Type"])
            assert inner
            parts.extend(_parts(rest, inner.group(1)))
            continue
        http_head, _, body = rest.partition("\r\n\r\n")
        lines = http_head.split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        parts.append(Part(status, headers, body.strip(), mime.get("Content-ID")))
    return parts


def test_batch_without_change_set_runs_each_request_and_returns_its_result(
    dataverse: DataverseEmulator,
) -> None:
    body = """--batch_AAA
Content-Type: application/http
Content-Transfer-Encoding: binary

POST /api/data/v9.2/contacts HTTP/1.1
Content-Type: application/json; type=entry

{"lastname": "One"}
--batch_AAA
Content-Type: application/http
Content-Transfer-Encoding: binary

GET /api/data/v9.2/WhoAmI HTTP/1.1
Accept: application/json


--batch_AAA--
"""
    response = send(dataverse, body)
    parts = response_parts(response)

    assert response.status_code == 200
    assert response.headers["OData-Version"] == "4.0"
    assert re.match(
        r"multipart/mixed; boundary=batchresponse_[0-9a-f-]{36}$", response.headers["Content-Type"]
    )
    assert [p.status for p in parts] == [204, 200]
    assert parts[0].headers["OData-EntityId"].startswith(dataverse.api_url + "contacts(")
    assert parts[0].headers["Location"] == parts[0].headers["OData-EntityId"]
    assert parts[1].headers["Content-Type"].startswith("application/json; odata.metadata=minimal")
    assert json.loads(parts[1].body)["UserId"] == dataverse.identity.user_id


def test_change_set_with_content_id_references_in_body_and_url(dataverse: DataverseEmulator) -> None:
    body = """--batch_AAA
Content-Type: multipart/mixed; boundary=changeset_BBB

--changeset_BBB
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 1

POST /api/data/v9.2/emails HTTP/1.1
Content-Type: application/json; type=entry

{"subject": "with attachment"}
--changeset_BBB
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 2

POST /api/data/v9.2/activitymimeattachments HTTP/1.1
Content-Type: application/json; type=entry

{"objectid_email@odata.bind": "$1", "objecttypecode": "email", "filename": "a.txt", "mimetype": "text/plain", "body": "aGk="}
--changeset_BBB
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 3

PATCH $1 HTTP/1.1
Content-Type: application/json

{"statecode": 1, "statuscode": 4}
--changeset_BBB--
--batch_AAA--
"""
    response = send(dataverse, body)
    parts = response_parts(response)
    email = dataverse.rows("emails")[0]
    attachment = dataverse.rows("activitymimeattachments")[0]

    assert response.status_code == 200
    assert "changesetresponse_" in response.text
    assert "changeset_BBB" not in response.text
    assert [(p.content_id, p.status) for p in parts] == [("1", 204), ("2", 204), ("3", 204)]
    assert attachment["_objectid_value"] == email["activityid"]
    assert (email["statecode"], email["statuscode"]) == (1, 4)


def test_failing_change_set_rolls_back_every_operation(dataverse: DataverseEmulator) -> None:
    missing = uuid.uuid4()
    body = f"""--batch_AAA
Content-Type: multipart/mixed; boundary=changeset_BBB

--changeset_BBB
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 1

POST /api/data/v9.2/emails HTTP/1.1
Content-Type: application/json

{{"subject": "rolled back"}}
--changeset_BBB
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 2

POST /api/data/v9.2/contacts HTTP/1.1
Content-Type: application/json

{{"lastname": "x", "parentcustomerid_account@odata.bind": "/accounts({missing})"}}
--changeset_BBB--
--batch_AAA--
"""
    response = send(dataverse, body)
    parts = response_parts(response)

    assert response.status_code == 404
    assert len(parts) == 1
    assert parts[0].status == 404
    assert json.loads(parts[0].body)["error"]["code"] == "0x80040217"
    assert dataverse.rows("emails") == []
    assert dataverse.rows("contacts") == []


def test_without_continue_on_error_processing_stops_at_first_failure(dataverse: DataverseEmulator) -> None:
    body = """--batch_AAA
Content-Type: application/http
Content-Transfer-Encoding: binary

POST /api/data/v9.2/emails HTTP/1.1
Content-Type: application/json; type=entry

{"subject": "%s"}
--batch_AAA
Content-Type: application/http
Content-Transfer-Encoding: binary

POST /api/data/v9.2/emails HTTP/1.1
Content-Type: application/json; type=entry

{"subject": "second"}
--batch_AAA--
""" % ("x" * 900)
    response = send(dataverse, body)
    parts = response_parts(response)

    assert response.status_code == 400
    assert len(parts) == 1
    assert parts[0].status == 400
    assert json.loads(parts[0].body)["error"]["code"] == "0x80044331"
    assert dataverse.rows("emails") == []


def test_continue_on_error_returns_200_and_every_part(dataverse: DataverseEmulator) -> None:
    body = """--batch_AAA
Content-Type: application/http
Content-Transfer-Encoding: binary

POST /api/data/v9.2/emails HTTP/1.1
Content-Type: application/json; type=entry

{"subject": "%s"}
--batch_AAA
Content-Type: application/http
Content-Transfer-Encoding: binary

POST /api/data/v9.2/emails HTTP/1.1
Content-Type: application/json; type=entry

{"subject": "second"}
--batch_AAA--
""" % ("x" * 900)
    response = send(dataverse, body, prefer="odata.continue-on-error")
    parts = response_parts(response)

    assert response.status_code == 200
    assert [p.status for p in parts] == [400, 204]
    assert [e["subject"] for e in dataverse.rows("emails")] == ["second"]


def test_get_inside_change_set_is_rejected(dataverse: DataverseEmulator) -> None:
    body = """--batch_AAA
Content-Type: multipart/mixed; boundary=changeset_BBB

--changeset_BBB
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 1

POST /api/data/v9.2/contacts HTTP/1.1
Content-Type: application/json

{"lastname": "x"}
--changeset_BBB
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 2

GET /api/data/v9.2/contacts HTTP/1.1


--changeset_BBB--
--batch_AAA--
"""
    response = send(dataverse, body)

    assert response.status_code == 400
    assert dataverse.rows("contacts") == []


def test_unknown_content_id_reference_is_400(dataverse: DataverseEmulator) -> None:
    body = """--batch_AAA
Content-Type: multipart/mixed; boundary=changeset_BBB

--changeset_BBB
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 2

POST /api/data/v9.2/activitymimeattachments HTTP/1.1
Content-Type: application/json;type=entry

{"objectid_email@odata.bind": "$1", "filename": "a.txt"}
--changeset_BBB--
--batch_AAA--
"""
    response = send(dataverse, body)
    parts = response_parts(response)

    assert response.status_code == 400
    assert json.loads(parts[0].body)["error"]["message"] == (
        "Content-ID Reference: '$1' does not exist in the batch context."
    )


def test_absolute_urls_and_unquoted_boundary_are_accepted(dataverse: DataverseEmulator) -> None:
    body = f"""--batch_x1
Content-Type: application/http
Content-Transfer-Encoding: binary

POST {dataverse.api_url}contacts HTTP/1.1
Content-Type: application/json

{{"lastname": "abs"}}
--batch_x1--
"""
    headers = {**HEADERS, "Content-Type": "multipart/mixed;boundary=batch_x1"}
    response = requests.post(
        dataverse.api_url + "$batch", data=body.replace("\n", CRLF), headers=headers, timeout=5
    )

    assert response.status_code == 200
    assert [c["lastname"] for c in dataverse.rows("contacts")] == ["abs"]


def test_more_than_1000_operations_is_rejected(dataverse: DataverseEmulator) -> None:
    part = """--batch_AAA
Content-Type: application/http
Content-Transfer-Encoding: binary

GET /api/data/v9.2/WhoAmI HTTP/1.1

"""
    response = send(dataverse, part * 1001 + "--batch_AAA--\n")

    assert response.status_code == 400
    assert "1000" in response.json()["error"]["message"]


def test_each_inner_operation_counts_as_a_request(dataverse: DataverseEmulator) -> None:
    body = """--batch_AAA
Content-Type: application/http
Content-Transfer-Encoding: binary

GET /api/data/v9.2/WhoAmI HTTP/1.1

--batch_AAA
Content-Type: multipart/mixed; boundary=changeset_BBB

--changeset_BBB
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 1

POST /api/data/v9.2/emails HTTP/1.1
Content-Type: application/json

{"subject": "a"}
--changeset_BBB
Content-Type: application/http
Content-Transfer-Encoding: binary
Content-ID: 2

POST /api/data/v9.2/emails HTTP/1.1
Content-Type: application/json

{"subject": "b"}
--changeset_BBB--
--batch_AAA--
"""
    send(dataverse, body)
    stats = dataverse.stats()

    assert stats["http_requests"] == 1
    assert stats["batch_requests"] == 1
    assert stats["batch_operations"] == 3
    assert stats["total_requests"] == 3
    assert stats["by_set"]["emails"] == 2
    assert stats["by_method"] == {"GET": 1, "POST": 2}
