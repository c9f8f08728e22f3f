"""Queries on the Dataverse emulator: ``$filter`` semantics, ``$select``/``$expand``/``$orderby``/``$top``,
``$count``, paging through ``@odata.nextLink`` (fact sheet §4), and the filter parser on its own."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest
import requests

from emulators.dataverse import DataverseEmulator
from emulators.dataverse.errors import DataverseError
from emulators.dataverse.query import evaluate, parse_filter
from tests.fixtures.dataverse import HEADERS


def get(dv: DataverseEmulator, path: str, **headers: str) -> requests.Response:
    return requests.get(dv.api_url + path, headers={**HEADERS, **headers}, timeout=5)


def values(dv: DataverseEmulator, path: str) -> list[dict[str, Any]]:
    response = get(dv, path)
    assert response.status_code == 200, response.text
    return list(response.json()["value"])


@pytest.fixture
def contacts(dataverse: DataverseEmulator) -> DataverseEmulator:
    dataverse.seed(
        {
            "contacts": [
                {
                    "firstname": "Ann",
                    "lastname": "O'Brien",
                    "emailaddress1": "ann@example.com",
                    "createdon": "2026-01-01T00:00:00Z",
                },
                {
                    "firstname": "Bob",
                    "lastname": "Smith",
                    "emailaddress1": "BOB@Example.com",
                    "createdon": "2026-02-01T00:00:00Z",
                },
                {
                    "firstname": "Cy",
                    "lastname": "Smith",
                    "emailaddress2": "cy@other.org",
                    "createdon": "2026-03-01T00:00:00Z",
                },
                {
                    "firstname": "Di",
                    "lastname": "Jones",
                    "emailaddress1": None,
                    "statecode": 1,
                    "createdon": "2026-04-01T00:00:00Z",
                },
            ]
        }
    )
    return dataverse


# ------------------------------------------------------------------ $filter over HTTP


def test_string_equality_is_case_insensitive(contacts: DataverseEmulator) -> None:
    rows = values(contacts, "contacts?$filter=emailaddress1 eq 'bob@example.com'")

    assert [r["firstname"] for r in rows] == ["Bob"]


def test_or_across_email_columns_as_the_address_lookup_does(contacts: DataverseEmulator) -> None:
    address = "cy@other.org"
    query = f"emailaddress1 eq '{address}' or emailaddress2 eq '{address}' or emailaddress3 eq '{address}'"

    rows = values(contacts, "contacts?$filter=" + urllib.parse.quote(query))

    assert [r["firstname"] for r in rows] == ["Cy"]


def test_doubled_quote_in_literal_and_functions(contacts: DataverseEmulator) -> None:
    assert [r["firstname"] for r in values(contacts, "contacts?$filter=lastname eq 'o''brien'")] == ["Ann"]
    assert [
        r["firstname"]
        for r in values(contacts, "contacts?$filter=startswith(lastname,'SM')&$orderby=firstname")
    ] == [
        "Bob",
        "Cy",
    ]
    assert [
        r["firstname"]
        for r in values(
            contacts, "contacts?$filter=endswith(emailaddress1,'.com') and not contains(firstname,'b')"
        )
    ] == ["Ann"]


def test_null_numbers_and_datetimes(contacts: DataverseEmulator) -> None:
    assert [
        r["firstname"] for r in values(contacts, "contacts?$filter=emailaddress1 eq null and statecode eq 1")
    ] == ["Di"]
    assert [
        r["firstname"]
        for r in values(
            contacts,
            "contacts?$filter=(statecode ne 1) and createdon ge 2026-02-01T00:00:00Z&$orderby=createdon",
        )
    ] == [
        "Bob",
        "Cy",
    ]


def test_unknown_column_in_filter_is_400_could_not_find_property(contacts: DataverseEmulator) -> None:
    response = get(contacts, "contacts?$filter=nosuchcolumn eq 'x'")

    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "0x80060888",
        "message": "Could not find a property named 'nosuchcolumn' on type 'Microsoft.Dynamics.CRM.contact'.",
    }


@pytest.mark.parametrize(
    "bad", ["firstname eq", "firstname eq 'x", "(firstname eq 'x'", "firstname xx 'y'", "eq 'x'"]
)
def test_malformed_filter_is_400(contacts: DataverseEmulator, bad: str) -> None:
    response = get(contacts, "contacts?$filter=" + urllib.parse.quote(bad))

    assert response.status_code == 400
    assert response.json()["error"]["code"].startswith("0x")


# ------------------------------------------------------------------ the query string, decoded as ASP.NET does

AWKWARD = [
    "ann+crm@example.com",
    "a&b@example.com",
    "hash#tag@example.com",
    "100%25@example.com",
    "o'neil@example.com",
    "k=v?x/y@example.com",
    "jörg@bücher.example",
    "<CAF+x=y/z@mail.gmail.com>",
]


@pytest.fixture
def awkward(dataverse: DataverseEmulator) -> DataverseEmulator:
    dataverse.seed({"contacts": [{"lastname": f"C{i}", "emailaddress1": a} for i, a in enumerate(AWKWARD)]})
    return dataverse


@pytest.mark.parametrize("address", AWKWARD)
def test_a_percent_encoded_literal_matches_exactly_its_own_value(
    awkward: DataverseEmulator, address: str
) -> None:
    literal = "'" + address.replace("'", "''") + "'"
    query = urllib.parse.urlencode({"$filter": f"emailaddress1 eq {literal}"}, quote_via=urllib.parse.quote)

    rows = values(awkward, "contacts?" + query)

    assert [r["emailaddress1"] for r in rows] == [address]


def test_a_plus_in_the_query_string_is_a_space_and_percent_2b_a_plus(awkward: DataverseEmulator) -> None:
    awkward.seed({"contacts": [{"lastname": "Space", "emailaddress1": "ann crm@example.com"}]})

    raw_plus = values(awkward, "contacts?$filter=emailaddress1%20eq%20'ann+crm@example.com'")
    encoded_plus = values(awkward, "contacts?$filter=emailaddress1%20eq%20'ann%2Bcrm@example.com'")

    assert [r["lastname"] for r in raw_plus] == ["Space"]
    assert [r["lastname"] for r in encoded_plus] == ["C0"]


def test_a_raw_ampersand_ends_the_option_so_the_literal_is_unterminated(awkward: DataverseEmulator) -> None:
    response = get(awkward, "contacts?$filter=emailaddress1 eq 'a&b@example.com'")

    assert response.status_code == 400
    assert "unterminated string literal" in response.json()["error"]["message"]


def test_percent_encoded_quotes_are_decoded_before_the_filter_is_parsed(awkward: DataverseEmulator) -> None:
    # What an unencoded address like x%27%20or%20true%20or%20%27@evil becomes on the server.
    rows = values(
        awkward, "contacts?$filter=emailaddress1 eq 'x%27 or statecode eq 0 or emailaddress1 eq %27'"
    )

    assert len(rows) == len(AWKWARD)


def test_a_system_query_option_given_twice_is_400(awkward: DataverseEmulator) -> None:
    response = get(awkward, "contacts?$filter=lastname eq 'C0'&$filter=statecode eq 0")

    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "Query option '$filter' was specified more than once, it must be specified at most once."
    )


def test_in_query_function_matches_any_of_its_values(awkward: DataverseEmulator) -> None:
    wanted = ["ANN+crm@example.com", "o'neil@example.com", "nobody@example.com"]
    listed = ",".join("'" + a.replace("'", "''") + "'" for a in wanted)
    text = f"Microsoft.Dynamics.CRM.In(PropertyName='emailaddress1',PropertyValues=[{listed}]) and statecode eq 0"

    rows = values(awkward, "contacts?$filter=" + urllib.parse.quote(text, safe=""))

    assert sorted(r["lastname"] for r in rows) == ["C0", "C4"]


def test_in_query_function_on_an_unknown_column_is_400(awkward: DataverseEmulator) -> None:
    text = "Microsoft.Dynamics.CRM.In(PropertyName='nosuch',PropertyValues=['a'])"

    response = get(awkward, "contacts?$filter=" + urllib.parse.quote(text, safe=""))

    assert response.status_code == 400
    assert "nosuch" in response.json()["error"]["message"]


def test_lookup_value_filter_with_guid_literal(dataverse: DataverseEmulator) -> None:
    ids = dataverse.seed({"accounts": [{"name": "Contoso"}]})
    account_id = ids["accounts"][0]
    dataverse.seed(
        {"contacts": [{"lastname": "A", "_parentcustomerid_value": account_id}, {"lastname": "B"}]}
    )

    rows = values(dataverse, f"contacts?$filter=_parentcustomerid_value eq {account_id.upper()}")

    assert [r["lastname"] for r in rows] == ["A"]


# ------------------------------------------------------------------ $select / $orderby / $top / $count


def test_collection_context_and_select(contacts: DataverseEmulator) -> None:
    response = get(contacts, "contacts?$select=firstname&$top=1&$orderby=firstname")
    body = response.json()

    assert response.headers["Content-Type"].startswith("application/json; odata.metadata=minimal")
    assert body["@odata.context"] == contacts.api_url + "$metadata#contacts(firstname)"
    assert set(body["value"][0]) == {"@odata.etag", "firstname", "contactid"}


def test_orderby_multiple_keys_and_desc(contacts: DataverseEmulator) -> None:
    rows = values(contacts, "contacts?$select=firstname,lastname&$orderby=lastname desc,firstname asc")

    assert [r["firstname"] for r in rows] == ["Bob", "Cy", "Ann", "Di"]


def test_unknown_select_column_is_400(contacts: DataverseEmulator) -> None:
    response = get(contacts, "contacts?$select=nosuch")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "0x80060888"


def test_count_true_and_count_segment(contacts: DataverseEmulator) -> None:
    body = get(contacts, "contacts?$filter=lastname eq 'Smith'&$count=true").json()
    bare = get(contacts, "contacts/$count")

    assert body["@odata.count"] == 2
    assert bare.status_code == 200
    assert bare.text == "4"


def test_skip_is_not_supported(contacts: DataverseEmulator) -> None:
    response = get(contacts, "contacts?$skip=1")

    assert response.status_code == 400
    assert "$skip" in response.json()["error"]["message"]


def test_paging_follows_next_link_verbatim(dataverse: DataverseEmulator) -> None:
    dataverse.seed({"contacts": [{"lastname": f"C{i:02d}"} for i in range(7)]})

    first = get(dataverse, "contacts?$select=lastname&$orderby=lastname", Prefer="odata.maxpagesize=3")
    names = [r["lastname"] for r in first.json()["value"]]
    link = first.json()["@odata.nextLink"]
    pages = 1
    while link:
        assert "$skiptoken=" in link
        page = requests.get(link, headers={**HEADERS, "Prefer": "odata.maxpagesize=3"}, timeout=5).json()
        names += [r["lastname"] for r in page["value"]]
        link = page.get("@odata.nextLink")
        pages += 1

    assert first.headers["Preference-Applied"] == "odata.maxpagesize=3"
    assert pages == 3
    assert names == [f"C{i:02d}" for i in range(7)]


def test_page_size_over_5000_is_ignored(contacts: DataverseEmulator) -> None:
    response = get(contacts, "contacts", Prefer="odata.maxpagesize=9000")

    assert "Preference-Applied" not in response.headers
    assert len(response.json()["value"]) == 4


# ------------------------------------------------------------------ $expand


def test_expand_parties_with_nested_select_and_filter(dataverse: DataverseEmulator) -> None:
    response = requests.post(
        dataverse.api_url + "emails",
        json={
            "subject": "x",
            "email_activity_parties": [
                {"participationtypemask": 1, "addressused": "from@example.com"},
                {"participationtypemask": 2, "addressused": "to@example.com"},
            ],
            "email_activity_mime_attachment": [{"filename": "a.txt", "body": "aGk="}],
        },
        headers=HEADERS,
        timeout=5,
    )
    assert response.status_code == 204

    expand = (
        "email_activity_parties($select=participationtypemask,addressused;$filter=participationtypemask eq 2),"
        "email_activity_mime_attachment($select=filename)"
    )
    rows = values(dataverse, "emails?$select=subject&$expand=" + urllib.parse.quote(expand))

    assert len(rows) == 1
    parties = rows[0]["email_activity_parties"]
    assert [(p["participationtypemask"], p["addressused"]) for p in parties] == [(2, "to@example.com")]
    assert set(parties[0]) == {"@odata.etag", "participationtypemask", "addressused", "activitypartyid"}
    assert [a["filename"] for a in rows[0]["email_activity_mime_attachment"]] == ["a.txt"]


def test_expand_unknown_navigation_is_400(dataverse: DataverseEmulator) -> None:
    response = get(dataverse, "emails?$expand=nosuchnav")

    assert response.status_code == 400


# ------------------------------------------------------------------ the parser alone (no I/O)


@pytest.mark.parametrize(
    ("text", "row", "expected"),
    [
        ("a eq 1 or b eq 2 and c eq 3", {"a": 1, "b": 0, "c": 0}, True),  # and binds tighter than or
        ("(a eq 1 or b eq 2) and c eq 3", {"a": 1, "b": 0, "c": 0}, False),
        ("not a eq 1", {"a": 2}, True),
        ("a gt 1.5 and a le 2", {"a": 2}, True),
        ("a lt -1", {"a": -3}, True),
        ("flag eq true", {"flag": True}, True),
        ("flag ne false", {"flag": None}, True),
        ("x gt 1", {"x": None}, False),
        ("id eq 6F9619FF-8B86-D011-B42D-00CF4FC964FF", {"id": "6f9619ff-8b86-d011-b42d-00cf4fc964ff"}, True),
        ("on lt 2026-01-02", {"on": "2026-01-01T23:59:59Z"}, True),
        ("contains(s,'A''B')", {"s": "xa'bx"}, True),
        ("Microsoft.Dynamics.CRM.In(PropertyName='s',PropertyValues=['x','Y'])", {"s": "y"}, True),
        ("Microsoft.Dynamics.CRM.In(PropertyName='s',PropertyValues=[])", {"s": "y"}, False),
        ("not Microsoft.Dynamics.CRM.In(PropertyName='n',PropertyValues=[1,2])", {"n": 3}, True),
    ],
)
def test_filter_parser_semantics(text: str, row: dict[str, Any], expected: bool) -> None:
    assert evaluate(parse_filter(text), row) is expected


@pytest.mark.parametrize(
    "text",
    [
        "a eq",
        "a eq 'x",
        "a eq 1)",
        "contains(a)",
        "a eq 1 b",
        "tolower(a) eq 'x'",
        "a @ 1",
        "a eq [1]",
        "Microsoft.Dynamics.CRM.In(PropertyValues=['x'],PropertyName='s')",
        "Microsoft.Dynamics.CRM.In(PropertyName='s',PropertyValues=[s])",
        "Microsoft.Dynamics.CRM.In(PropertyName='s',PropertyValues=['x')",
    ],
)
def test_filter_parser_rejects_malformed_input(text: str) -> None:
    with pytest.raises(DataverseError) as raised:
        parse_filter(text)

    assert raised.value.status == 400


def test_a_url_over_the_limit_is_414_and_one_just_under_is_answered(dataverse: DataverseEmulator) -> None:
    prefix = "contacts?$filter=" + urllib.parse.quote("lastname eq '")
    suffix = urllib.parse.quote("'")
    room = 32_768 - len("/api/data/v9.2/" + prefix + suffix)

    under = get(dataverse, prefix + "x" * room + suffix)
    over = get(dataverse, prefix + "x" * (room + 1) + suffix)

    assert under.status_code == 200
    assert over.status_code == 414
