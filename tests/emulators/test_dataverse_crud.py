"""Create, retrieve, update, delete and lookups on the Dataverse emulator, pinned to the documented
Web API v9.2 wire format (fact sheet shared/reference/dataverse-webapi.md §3, §5, §9, §12)."""

from __future__ import annotations

import re
import uuid

import requests

from emulators.dataverse import DataverseEmulator
from tests.fixtures.dataverse import HEADERS

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
JSON_TYPE = "application/json; odata.metadata=minimal"


def entity_id(response: requests.Response) -> str:
    match = re.search(r"\(([^)]+)\)$", response.headers["OData-EntityId"])
    assert match, response.headers
    return match.group(1)


def create(dv: DataverseEmulator, set_name: str, body: dict[str, object]) -> str:
    response = requests.post(dv.api_url + set_name, json=body, headers=HEADERS, timeout=5)
    assert response.status_code == 204, response.text
    return entity_id(response)


def seed_contact(dv: DataverseEmulator, **columns: object) -> str:
    row = {"firstname": "Ann", "lastname": "Lee", "emailaddress1": "ann@example.com", **columns}
    return dv.seed({"contacts": [row]})["contacts"][0]


# ------------------------------------------------------------------ create


def test_create_returns_204_with_odata_entityid_and_no_body(dataverse: DataverseEmulator) -> None:
    response = requests.post(
        dataverse.api_url + "emails", json={"subject": "Hello"}, headers=HEADERS, timeout=5
    )

    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["OData-Version"] == "4.0"
    assert re.fullmatch(
        re.escape(dataverse.api_url) + r"emails\([0-9a-f-]{36}\)", response.headers["OData-EntityId"]
    )
    assert GUID.match(entity_id(response))


def test_create_with_return_representation_is_201_with_body_and_no_entityid(
    dataverse: DataverseEmulator,
) -> None:
    headers = {**HEADERS, "Prefer": "return=representation"}
    response = requests.post(
        dataverse.api_url + "emails?$select=subject", json={"subject": "Hello"}, headers=headers, timeout=5
    )

    assert response.status_code == 201
    assert "OData-EntityId" not in response.headers
    assert response.headers["Content-Type"] == JSON_TYPE
    assert response.headers["Preference-Applied"] == "return=representation"
    body = response.json()
    assert body["@odata.context"] == dataverse.api_url + "$metadata#emails(subject)/$entity"
    assert re.fullmatch(r'W/"\d+"', body["@odata.etag"])
    assert body["subject"] == "Hello"
    assert GUID.match(body["activityid"])


def test_create_honours_client_supplied_key_and_rejects_duplicates(dataverse: DataverseEmulator) -> None:
    key = str(uuid.uuid4())

    first = requests.post(dataverse.api_url + "contacts", json={"contactid": key}, headers=HEADERS, timeout=5)
    second = requests.post(
        dataverse.api_url + "contacts", json={"contactid": key}, headers=HEADERS, timeout=5
    )

    assert entity_id(first) == key
    assert second.status_code == 412
    assert second.json()["error"]["code"] == "0x80040237"


def test_new_email_defaults_to_open_draft_outgoing_with_timestamps_and_version(
    dataverse: DataverseEmulator,
) -> None:
    email_id = create(dataverse, "emails", {"subject": "Defaults"})

    row = requests.get(dataverse.api_url + f"emails({email_id})", headers=HEADERS, timeout=5).json()

    assert (row["statecode"], row["statuscode"], row["directioncode"]) == (0, 1, True)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["createdon"])
    assert row["modifiedon"] == row["createdon"]
    assert row["@odata.etag"] == f'W/"{row["versionnumber"]}"'


def test_unknown_entity_set_is_404_resource_not_found(dataverse: DataverseEmulator) -> None:
    response = requests.get(dataverse.api_url + "tasksx", headers=HEADERS, timeout=5)

    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": "0x80060888", "message": "Resource not found for the segment 'tasksx'."}
    }


def test_activityparties_cannot_be_created_directly(dataverse: DataverseEmulator) -> None:
    response = requests.post(
        dataverse.api_url + "activityparties", json={"participationtypemask": 1}, headers=HEADERS, timeout=5
    )

    assert response.status_code == 405
    assert response.json()["error"]["code"].startswith("0x")


def test_undeclared_column_in_body_is_rejected(dataverse: DataverseEmulator) -> None:
    response = requests.post(
        dataverse.api_url + "emails", json={"subjct": "typo"}, headers=HEADERS, timeout=5
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "0x80048d19"


def test_string_longer_than_column_maximum_is_a_validation_error(dataverse: DataverseEmulator) -> None:
    response = requests.post(
        dataverse.api_url + "emails", json={"subject": "x" * 801}, headers=HEADERS, timeout=5
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "0x80044331"


# ------------------------------------------------------------------ lookups


def test_bind_is_stored_and_read_back_as_underscore_value(dataverse: DataverseEmulator) -> None:
    contact_id = seed_contact(dataverse)
    email_id = create(
        dataverse,
        "emails",
        {"subject": "x", "regardingobjectid_contact_email@odata.bind": f"/contacts({contact_id})"},
    )

    row = requests.get(
        dataverse.api_url + f"emails({email_id})?$select=_regardingobjectid_value", headers=HEADERS, timeout=5
    ).json()

    assert row["_regardingobjectid_value"] == contact_id
    assert not any("@Microsoft.Dynamics.CRM" in key for key in row)


def test_bind_without_leading_slash_is_accepted(dataverse: DataverseEmulator) -> None:
    account_id = dataverse.seed({"accounts": [{"name": "Contoso"}]})["accounts"][0]
    contact_id = create(
        dataverse,
        "contacts",
        {"lastname": "B", "parentcustomerid_account@odata.bind": f"accounts({account_id})"},
    )

    row = dataverse.rows("contacts")
    stored = next(r for r in row if r["contactid"] == contact_id)

    assert stored["_parentcustomerid_value"] == account_id


def test_lookup_annotations_only_when_include_annotations_is_preferred(dataverse: DataverseEmulator) -> None:
    contact_id = seed_contact(dataverse)
    email_id = create(
        dataverse,
        "emails",
        {"subject": "x", "regardingobjectid_contact_email@odata.bind": f"/contacts({contact_id})"},
    )
    url = dataverse.api_url + f"emails({email_id})?$select=_regardingobjectid_value,statuscode"
    prefer = {**HEADERS, "Prefer": 'odata.include-annotations="*"'}

    plain = requests.get(url, headers=HEADERS, timeout=5)
    annotated = requests.get(url, headers=prefer, timeout=5)

    assert "_regardingobjectid_value@Microsoft.Dynamics.CRM.lookuplogicalname" not in plain.json()
    body = annotated.json()
    assert body["_regardingobjectid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "contact"
    assert body["_regardingobjectid_value@Microsoft.Dynamics.CRM.associatednavigationproperty"] == (
        "regardingobjectid_contact_email"
    )
    assert body["_regardingobjectid_value@OData.Community.Display.V1.FormattedValue"] == "Ann Lee"
    assert body["statuscode@OData.Community.Display.V1.FormattedValue"] == "Draft"
    assert annotated.headers["Preference-Applied"] == 'odata.include-annotations="*"'


def test_specific_annotation_list_limits_what_is_returned(dataverse: DataverseEmulator) -> None:
    contact_id = seed_contact(dataverse)
    email_id = create(
        dataverse,
        "emails",
        {"subject": "x", "regardingobjectid_contact_email@odata.bind": f"/contacts({contact_id})"},
    )
    prefer = {**HEADERS, "Prefer": 'odata.include-annotations="Microsoft.Dynamics.CRM.lookuplogicalname"'}

    body = requests.get(dataverse.api_url + f"emails({email_id})", headers=prefer, timeout=5).json()

    assert body["_regardingobjectid_value@Microsoft.Dynamics.CRM.lookuplogicalname"] == "contact"
    assert "_regardingobjectid_value@OData.Community.Display.V1.FormattedValue" not in body


def test_bind_to_missing_row_is_404_does_not_exist(dataverse: DataverseEmulator) -> None:
    missing = str(uuid.uuid4())

    response = requests.post(
        dataverse.api_url + "emails",
        json={"subject": "x", "regardingobjectid_contact_email@odata.bind": f"/contacts({missing})"},
        headers=HEADERS,
        timeout=5,
    )

    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "0x80040217",
        "message": f"contact With Id = {missing} Does Not Exist",
    }
    assert dataverse.rows("emails") == []


def test_unknown_navigation_property_is_400_payload_error(dataverse: DataverseEmulator) -> None:
    contact_id = seed_contact(dataverse)

    response = requests.post(
        dataverse.api_url + "emails",
        json={"subject": "x", "regardingobjectid_contact@odata.bind": f"/contacts({contact_id})"},
        headers=HEADERS,
        timeout=5,
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "0x80048d19"


def test_mailbox_regarding_and_email_sender_mailbox_binds(dataverse: DataverseEmulator) -> None:
    queue_id = dataverse.seed({"queues": [{"name": "Support", "emailaddress": "support@example.com"}]})[
        "queues"
    ][0]
    mailbox_id = create(
        dataverse,
        "mailboxes",
        {"name": "Support", "regardingobjectid_queue@odata.bind": f"/queues({queue_id})"},
    )
    email_id = create(
        dataverse, "emails", {"subject": "x", "sendermailboxid@odata.bind": f"/mailboxes({mailbox_id})"}
    )

    mailbox = requests.get(
        dataverse.api_url + f"mailboxes?$filter=_regardingobjectid_value eq {queue_id}",
        headers=HEADERS,
        timeout=5,
    ).json()["value"]
    email = requests.get(dataverse.api_url + f"emails({email_id})", headers=HEADERS, timeout=5).json()

    assert [m["mailboxid"] for m in mailbox] == [mailbox_id]
    assert email["_sendermailboxid_value"] == mailbox_id


# ------------------------------------------------------------------ deep insert


def test_email_deep_insert_creates_parties_and_attachments(dataverse: DataverseEmulator) -> None:
    contact_id = seed_contact(dataverse)
    queue_id = dataverse.seed({"queues": [{"name": "Support", "emailaddress": "support@example.com"}]})[
        "queues"
    ][0]
    email_id = create(
        dataverse,
        "emails",
        {
            "subject": "Re: order 42",
            "directioncode": False,
            "email_activity_parties": [
                {"participationtypemask": 1, "partyid_contact@odata.bind": f"/contacts({contact_id})"},
                {"participationtypemask": 2, "partyid_queue@odata.bind": f"/queues({queue_id})"},
                {"participationtypemask": 3, "addressused": "someone@unknown.example"},
            ],
            "email_activity_mime_attachment": [
                {"filename": "a.txt", "mimetype": "text/plain", "body": "aGVsbG8=", "objecttypecode": "email"}
            ],
        },
    )

    parties = requests.get(
        dataverse.api_url
        + f"activityparties?$filter=_activityid_value eq {email_id}&$orderby=participationtypemask",
        headers=HEADERS,
        timeout=5,
    ).json()["value"]
    attachments = requests.get(
        dataverse.api_url + f"activitymimeattachments?$filter=_objectid_value eq {email_id}",
        headers=HEADERS,
        timeout=5,
    ).json()["value"]

    assert [(p["participationtypemask"], p["_partyid_value"]) for p in parties] == [
        (1, contact_id),
        (2, queue_id),
        (3, None),
    ]
    assert parties[2]["addressused"] == "someone@unknown.example"
    assert [(a["filename"], a["filesize"], a["body"]) for a in attachments] == [("a.txt", 5, "aGVsbG8=")]


def test_deep_insert_is_one_transaction(dataverse: DataverseEmulator) -> None:
    response = requests.post(
        dataverse.api_url + "emails",
        json={
            "subject": "x",
            "email_activity_parties": [
                {"participationtypemask": 1, "addressused": "a@example.com"},
                {"participationtypemask": 2, "partyid_contact@odata.bind": f"/contacts({uuid.uuid4()})"},
            ],
        },
        headers=HEADERS,
        timeout=5,
    )

    assert response.status_code == 404
    assert dataverse.rows("emails") == []
    assert dataverse.rows("activityparties") == []


def test_attachment_body_value_is_base64_text(dataverse: DataverseEmulator) -> None:
    email_id = create(dataverse, "emails", {"subject": "x"})
    attachment_id = create(
        dataverse,
        "activitymimeattachments",
        {
            "objectid_email@odata.bind": f"/emails({email_id})",
            "objecttypecode": "email",
            "filename": "a.txt",
            "body": "aGk=",
        },
    )

    response = requests.get(
        dataverse.api_url + f"activitymimeattachments({attachment_id})/body/$value",
        headers=HEADERS,
        timeout=5,
    )

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == "aGk="


# ------------------------------------------------------------------ retrieve


def test_missing_row_is_404_does_not_exist(dataverse: DataverseEmulator) -> None:
    missing = str(uuid.uuid4())

    response = requests.get(dataverse.api_url + f"emails({missing})", headers=HEADERS, timeout=5)

    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "0x80040217",
        "message": f"email With Id = {missing} Does Not Exist",
    }


def test_select_returns_selected_columns_plus_key(dataverse: DataverseEmulator) -> None:
    email_id = create(dataverse, "emails", {"subject": "x", "messageid": "<a@b>"})

    body = requests.get(
        dataverse.api_url + f"emails({email_id})?$select=subject", headers=HEADERS, timeout=5
    ).json()

    assert set(body) == {"@odata.context", "@odata.etag", "subject", "activityid"}


def test_who_am_i_reports_user_business_unit_and_organization(dataverse: DataverseEmulator) -> None:
    body = requests.get(dataverse.api_url + "WhoAmI", headers=HEADERS, timeout=5).json()

    assert body["@odata.context"] == dataverse.api_url + "$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse"
    assert body["UserId"] == dataverse.identity.user_id
    assert body["OrganizationId"] == dataverse.rows("organizations")[0]["organizationid"]
    assert GUID.match(body["BusinessUnitId"])


# ------------------------------------------------------------------ update / upsert / delete


def test_patch_is_204_and_bumps_version_and_etag(dataverse: DataverseEmulator) -> None:
    email_id = create(dataverse, "emails", {"subject": "x"})
    before = requests.get(dataverse.api_url + f"emails({email_id})", headers=HEADERS, timeout=5).json()

    response = requests.patch(
        dataverse.api_url + f"emails({email_id})", json={"subject": "y"}, headers=HEADERS, timeout=5
    )
    after = requests.get(dataverse.api_url + f"emails({email_id})", headers=HEADERS, timeout=5).json()

    assert response.status_code == 204
    assert after["subject"] == "y"
    assert after["versionnumber"] > before["versionnumber"]
    assert after["@odata.etag"] != before["@odata.etag"]


def test_patch_with_return_representation_is_200_with_body(dataverse: DataverseEmulator) -> None:
    email_id = create(dataverse, "emails", {"subject": "x"})

    response = requests.patch(
        dataverse.api_url + f"emails({email_id})?$select=subject",
        json={"subject": "y"},
        headers={**HEADERS, "Prefer": "return=representation"},
        timeout=5,
    )

    assert response.status_code == 200
    assert response.json()["subject"] == "y"


def test_if_match_mismatch_is_412_version_mismatch(dataverse: DataverseEmulator) -> None:
    email_id = create(dataverse, "emails", {"subject": "x"})

    response = requests.patch(
        dataverse.api_url + f"emails({email_id})",
        json={"subject": "y"},
        headers={**HEADERS, "If-Match": 'W/"1"'},
        timeout=5,
    )

    assert response.status_code == 412
    assert response.json()["error"]["code"] == "0x80060882"


def test_if_match_current_etag_allows_update(dataverse: DataverseEmulator) -> None:
    email_id = create(dataverse, "emails", {"subject": "x"})
    current = requests.get(dataverse.api_url + f"emails({email_id})", headers=HEADERS, timeout=5).json()[
        "@odata.etag"
    ]

    response = requests.patch(
        dataverse.api_url + f"emails({email_id})",
        json={"subject": "y"},
        headers={**HEADERS, "If-Match": current},
        timeout=5,
    )

    assert response.status_code == 204


def test_patch_missing_row_upserts_unless_if_match_star(dataverse: DataverseEmulator) -> None:
    key = str(uuid.uuid4())
    other = str(uuid.uuid4())

    upsert = requests.patch(
        dataverse.api_url + f"contacts({key})", json={"lastname": "New"}, headers=HEADERS, timeout=5
    )
    update_only = requests.patch(
        dataverse.api_url + f"contacts({other})",
        json={"lastname": "No"},
        headers={**HEADERS, "If-Match": "*"},
        timeout=5,
    )

    assert upsert.status_code == 204
    assert [r["lastname"] for r in dataverse.rows("contacts")] == ["New"]
    assert update_only.status_code == 404
    assert update_only.json()["error"]["code"] == "0x80040217"


def test_if_none_match_star_blocks_update_of_existing_row(dataverse: DataverseEmulator) -> None:
    contact_id = seed_contact(dataverse)

    response = requests.patch(
        dataverse.api_url + f"contacts({contact_id})",
        json={"lastname": "Changed"},
        headers={**HEADERS, "If-None-Match": "*"},
        timeout=5,
    )

    assert response.status_code == 412
    assert response.json()["error"]["code"] == "0x80040237"


def test_completed_email_rejects_edits_but_allows_state_changes(dataverse: DataverseEmulator) -> None:
    email_id = create(dataverse, "emails", {"subject": "x"})
    url = dataverse.api_url + f"emails({email_id})"
    complete = requests.patch(url, json={"statecode": 1, "statuscode": 4}, headers=HEADERS, timeout=5)

    edit = requests.patch(url, json={"subject": "changed"}, headers=HEADERS, timeout=5)
    reopen = requests.patch(url, json={"statecode": 0, "statuscode": 1}, headers=HEADERS, timeout=5)
    edit_after_reopen = requests.patch(url, json={"subject": "changed"}, headers=HEADERS, timeout=5)

    assert complete.status_code == 204
    assert edit.status_code == 400
    assert edit.json()["error"]["code"] == "0x80040203"
    assert "read-only" in edit.json()["error"]["message"]
    assert reopen.status_code == 204
    assert edit_after_reopen.status_code == 204


def test_canceled_email_is_read_only_too(dataverse: DataverseEmulator) -> None:
    email_id = create(dataverse, "emails", {"subject": "x"})
    url = dataverse.api_url + f"emails({email_id})"
    requests.patch(url, json={"statecode": 2}, headers=HEADERS, timeout=5)

    edit = requests.patch(url, json={"description": "changed"}, headers=HEADERS, timeout=5)

    assert requests.get(url, headers=HEADERS, timeout=5).json()["statuscode"] == 5
    assert edit.status_code == 400


def test_invalid_state_status_pair_is_rejected(dataverse: DataverseEmulator) -> None:
    email_id = create(dataverse, "emails", {"subject": "x"})

    response = requests.patch(
        dataverse.api_url + f"emails({email_id})",
        json={"statecode": 0, "statuscode": 4},
        headers=HEADERS,
        timeout=5,
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"].startswith("0x8004")


def test_status_alone_implies_its_state(dataverse: DataverseEmulator) -> None:
    email_id = create(dataverse, "emails", {"subject": "x"})

    requests.patch(
        dataverse.api_url + f"emails({email_id})", json={"statuscode": 6}, headers=HEADERS, timeout=5
    )
    row = requests.get(dataverse.api_url + f"emails({email_id})", headers=HEADERS, timeout=5).json()

    assert (row["statecode"], row["statuscode"]) == (1, 6)


def test_delete_is_204_then_404_and_cascades_to_parties(dataverse: DataverseEmulator) -> None:
    email_id = create(
        dataverse,
        "emails",
        {"subject": "x", "email_activity_parties": [{"participationtypemask": 2, "addressused": "a@b.c"}]},
    )

    first = requests.delete(dataverse.api_url + f"emails({email_id})", headers=HEADERS, timeout=5)
    second = requests.delete(dataverse.api_url + f"emails({email_id})", headers=HEADERS, timeout=5)

    assert first.status_code == 204
    assert second.status_code == 404
    assert dataverse.rows("activityparties") == []


def test_single_property_put_get_and_lookup_ref_delete(dataverse: DataverseEmulator) -> None:
    contact_id = seed_contact(dataverse)
    email_id = create(
        dataverse,
        "emails",
        {"subject": "x", "regardingobjectid_contact_email@odata.bind": f"/contacts({contact_id})"},
    )
    url = dataverse.api_url + f"emails({email_id})"

    put = requests.put(url + "/subject", json={"value": "via PUT"}, headers=HEADERS, timeout=5)
    read = requests.get(url + "/subject", headers=HEADERS, timeout=5)
    unlink = requests.delete(url + "/regardingobjectid/$ref", headers=HEADERS, timeout=5)
    row = requests.get(url, headers=HEADERS, timeout=5).json()

    assert (put.status_code, read.status_code, unlink.status_code) == (204, 200, 204)
    assert read.json()["value"] == "via PUT"
    assert row["_regardingobjectid_value"] is None


def test_related_collection_segment_lists_an_emails_attachments(dataverse: DataverseEmulator) -> None:
    email_id = create(
        dataverse,
        "emails",
        {"subject": "x", "email_activity_mime_attachment": [{"filename": "b.pdf", "body": "aGk="}]},
    )

    body = requests.get(
        dataverse.api_url + f"emails({email_id})/activity_pointer_activity_mime_attachment?$select=filename",
        headers=HEADERS,
        timeout=5,
    ).json()

    assert [a["filename"] for a in body["value"]] == ["b.pdf"]


def test_get_with_matching_if_none_match_is_304(dataverse: DataverseEmulator) -> None:
    email_id = create(dataverse, "emails", {"subject": "x"})
    url = dataverse.api_url + f"emails({email_id})"
    current = requests.get(url, headers=HEADERS, timeout=5).json()["@odata.etag"]

    cached = requests.get(url, headers={**HEADERS, "If-None-Match": current}, timeout=5)
    fresh = requests.get(url, headers={**HEADERS, "If-None-Match": "null"}, timeout=5)

    assert cached.status_code == 304
    assert fresh.status_code == 200


# ------------------------------------------------------------------ auth


def test_missing_or_wrong_token_is_401_with_www_authenticate(dataverse: DataverseEmulator) -> None:
    missing = requests.get(dataverse.api_url + "WhoAmI", timeout=5)
    wrong = requests.get(dataverse.api_url + "WhoAmI", headers={"Authorization": "Bearer nope"}, timeout=5)

    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["error"]["code"].startswith("0x")
