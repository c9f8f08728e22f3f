"""A reply whose ancestors are regarding different CRM records takes the nearest one's.

Dynamics 365 correlates on In-Reply-To and References and follows the nearest parent it knows
(the last entry of References, In-Reply-To before all). Both places the router learns a parent
from are exercised: the organization's own emails (mail the router never saw) and the ledger's
thread index (mail the router tracked earlier).
"""

from __future__ import annotations

from emailrouter.ledger.models import Outcome
from emailrouter.ledger.store import Ledger
from emailrouter.local.stack import LocalStack
from tests.helpers import (
    ACCOUNT_ID,
    TENANT,
    add_tenant,
    crm_get,
    enqueue_inbound,
    raw_mail,
    seed_org,
    tracked_email,
)

OTHER_ACCOUNT_ID = "dddddddd-0000-0000-0000-000000000002"


def _prepare(stack: LocalStack) -> None:
    seed_org(stack)
    stack.dataverse.seed(
        {
            "accounts": [
                {
                    "accountid": OTHER_ACCOUNT_ID,
                    "name": "Other Client Ltd",
                    "emailaddress1": "office@other.example",
                    "statecode": 0,
                }
            ]
        }
    )
    add_tenant(stack)


def _regarding(stack: LocalStack, message_id: str) -> str | None:
    body = crm_get(stack, f"emails?$filter=messageid eq '{message_id}'&$select=_regardingobjectid_value")
    (row,) = body["value"]
    return row["_regardingobjectid_value"]


def _deliver(stack: LocalStack, raw: bytes, ref: str) -> None:
    enqueue_inbound(stack, raw, source_ref=ref)
    assert stack.runner is not None and stack.runner.drain(30)


def test_the_nearest_reference_in_the_organization_wins(local_stack: LocalStack) -> None:
    _prepare(local_stack)
    tracked_email(local_stack, "Quote", "<far@acme.example>", ACCOUNT_ID)
    tracked_email(local_stack, "Re: Quote", "<near@acme.example>", OTHER_ACCOUNT_ID)
    # No In-Reply-To: References alone, oldest first, an unknown id in between.
    references = "References: <far@acme.example> <unknown@client.example> <near@acme.example>"
    _deliver(
        local_stack,
        raw_mail(subject="Re: Re: Quote", message_id="<reply-org@client.example>", extra_headers=references),
        "org",
    )

    assert _regarding(local_stack, "<reply-org@client.example>") == OTHER_ACCOUNT_ID
    (record,) = Ledger().list_messages(TENANT)
    assert record.outcome is Outcome.CORRELATED and record.correlation == "in-reply-to"


def test_in_reply_to_is_nearer_than_any_reference(local_stack: LocalStack) -> None:
    _prepare(local_stack)
    tracked_email(local_stack, "Quote", "<far2@acme.example>", ACCOUNT_ID)
    tracked_email(local_stack, "Re: Quote", "<near2@acme.example>", OTHER_ACCOUNT_ID)
    headers = "In-Reply-To: <far2@acme.example>\r\nReferences: <near2@acme.example>"
    _deliver(
        local_stack,
        raw_mail(subject="Re: Quote", message_id="<reply-irt@client.example>", extra_headers=headers),
        "irt",
    )

    assert _regarding(local_stack, "<reply-irt@client.example>") == ACCOUNT_ID


def test_the_nearest_ancestor_the_router_tracked_wins(local_stack: LocalStack) -> None:
    _prepare(local_stack)
    tracked_email(local_stack, "Order", "<order-a@acme.example>", ACCOUNT_ID)
    tracked_email(local_stack, "Invoice", "<invoice-b@acme.example>", OTHER_ACCOUNT_ID)
    # Two earlier messages the router tracked, each continuing a different record's thread:
    # the ledger's thread index now knows them with those regarding records.
    _deliver(
        local_stack,
        raw_mail(
            subject="Re: Order",
            message_id="<tracked-a@client.example>",
            extra_headers="In-Reply-To: <order-a@acme.example>",
        ),
        "a",
    )
    _deliver(
        local_stack,
        raw_mail(
            subject="Re: Invoice",
            message_id="<tracked-b@client.example>",
            extra_headers="In-Reply-To: <invoice-b@acme.example>",
        ),
        "b",
    )
    assert _regarding(local_stack, "<tracked-a@client.example>") == ACCOUNT_ID
    assert _regarding(local_stack, "<tracked-b@client.example>") == OTHER_ACCOUNT_ID

    references = "References: <tracked-b@client.example> <tracked-a@client.example>"
    _deliver(
        local_stack,
        raw_mail(subject="Re: both", message_id="<reply-index@client.example>", extra_headers=references),
        "c",
    )

    assert _regarding(local_stack, "<reply-index@client.example>") == ACCOUNT_ID
    record = next(r for r in Ledger().list_messages(TENANT) if r.message_id == "<reply-index@client.example>")
    assert record.outcome is Outcome.CORRELATED and record.correlation == "in-reply-to"
