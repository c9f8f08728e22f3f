"""Tracking rules and the email create body, against CRM's documented values."""

from __future__ import annotations

import base64
import json

import pytest

from emailrouter.crm.emails import incoming_email_body
from emailrouter.crm.parties import PartyMatch
from emailrouter.crm.payload import encode_body
from emailrouter.mime.models import Address, Attachment, ParsedMessage
from emailrouter.routing.filters import auto_generated_reason, tracking_reason
from emailrouter.tenancy.models import TrackingOption

CONTACT = PartyMatch("contact", "contacts", "c-1")
USER = PartyMatch("systemuser", "systemusers", "u-1")


def _message(**headers: str) -> ParsedMessage:
    return ParsedMessage(message_id="<x@y>", subject="s", sender=Address("a@b.example"), headers=headers)


@pytest.mark.parametrize(
    ("headers", "filtered"),
    [
        ({"Auto-Submitted": "auto-replied"}, True),
        ({"Auto-Submitted": "auto-generated"}, True),
        ({"Auto-Submitted": "no"}, False),
        ({"Precedence": "bulk"}, True),
        ({"Precedence": "first-class"}, False),
        ({"Precedence": "list", "List-Id": "Users <users.lists.example>"}, False),
        ({"Precedence": "bulk", "List-Post": "<mailto:users@lists.example>"}, False),
        ({"Precedence": "bulk", "Mailing-List": "contact users-help@lists.example; run by ezmlm"}, False),
        ({"Precedence": "bulk", "List-Unsubscribe": "<mailto:u@news.example>"}, True),
        ({"Precedence": "list", "List-Id": "Users <users.lists.example>", "X-Autoreply": "yes"}, True),
        ({"List-Id": "Users <users.lists.example>", "Auto-Submitted": "auto-replied"}, True),
        ({"X-Autorespond": "vacation"}, True),
        ({"X-Autoreply": "no"}, False),
        ({}, False),
    ],
)
def test_auto_generated_mail_is_recognised(headers: dict[str, str], filtered: bool) -> None:
    assert (auto_generated_reason(_message(**headers)) is not None) is filtered


@pytest.mark.parametrize(
    ("option", "is_response", "sender", "tracked"),
    [
        (TrackingOption.ALL, False, (), True),
        (TrackingOption.NONE, True, (CONTACT,), False),
        (TrackingOption.RESPONSES, True, (), True),
        (TrackingOption.RESPONSES, False, (CONTACT,), False),
        (TrackingOption.FROM_CRM_RECORDS, False, (CONTACT,), True),
        (TrackingOption.FROM_CRM_RECORDS, False, (USER,), False),
        (TrackingOption.FROM_EMAIL_ENABLED, False, (USER,), True),
        (TrackingOption.FROM_EMAIL_ENABLED, False, (), False),
    ],
)
def test_tracking_options_follow_crm_semantics(
    option: TrackingOption, is_response: bool, sender: tuple[PartyMatch, ...], tracked: bool
) -> None:
    assert (tracking_reason(option, is_response, sender) is None) is tracked


def test_create_body_is_a_received_email_with_parties_and_attachments() -> None:
    message = ParsedMessage(
        message_id="<m@x>",
        subject="S" * 900,
        sender=Address("carl@client.example", "Carl"),
        to=[Address("help@acme.example"), Address("nobody@else.example")],
        cc=[Address("uma@acme.example")],
        html_body="<p>hi</p>",
        attachments=[Attachment("a.pdf", "application/pdf", b"%PDF", content_id="img1", inline=True)],
    )
    resolved = {
        "carl@client.example": (CONTACT, PartyMatch("account", "accounts", "a-1")),
        "help@acme.example": (PartyMatch("queue", "queues", "q-1"),),
        "uma@acme.example": (USER,),
    }

    body = incoming_email_body("e-1", message, resolved, None, dropped_attachments=False, sender=CONTACT)

    assert (body["directioncode"], body["statecode"], body["statuscode"]) == (False, 1, 4)
    assert len(body["subject"]) == 800 and body["notifications"] == 2  # truncated body/subject flag
    parties = body["email_activity_parties"]
    assert parties[0] == {
        "participationtypemask": 1,
        "addressused": "carl@client.example",
        "partyid_contact@odata.bind": "/contacts(c-1)",
    }
    assert {"participationtypemask": 2, "addressused": "nobody@else.example"} in parties
    assert {
        "participationtypemask": 3,
        "addressused": "uma@acme.example",
        "partyid_systemuser@odata.bind": "/systemusers(u-1)",
    } in parties
    assert (
        len([p for p in parties if p["participationtypemask"] == 1]) == 1
    )  # the sender is the first match only
    # As the request carries it: the content Base64-encoded into the JSON ("%PDF" → "JVBERg==").
    attachment = json.loads(encode_body(body))["email_activity_mime_attachment"][0]
    assert attachment == {
        "filename": "a.pdf",
        "mimetype": "application/pdf",
        "body": "JVBERg==",
        "objecttypecode": "email",
        "attachmentcontentid": "img1",
    }


def test_encoded_body_carries_attachments_as_base64_and_text_unchanged() -> None:
    from emailrouter.crm.payload import AttachmentBody

    contents = [b"\x00\xff binary", b"", bytes(range(256)) * 3]
    body = {
        "subject": 'Quotes " and \\ and \u00e9 and a look-alike "att-0:1"',
        "items": [{"body": AttachmentBody(c), "n": i} for i, c in enumerate(contents)],
    }

    decoded = json.loads(encode_body(body))

    assert decoded["subject"] == body["subject"]
    assert [base64.b64decode(item["body"]) for item in decoded["items"]] == contents
    assert [item["n"] for item in decoded["items"]] == [0, 1, 2]
