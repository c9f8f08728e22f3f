"""CRM mailbox approval against the Dataverse emulator: a mailbox that requires approval waits
until the CRM mailbox record with its address is Approved (emailrouteraccessapproval 1; 0 Empty,
2 Pending Approval, 3 Rejected). The poller's side runs end to end in
tests/functional/test_inbound_tracking.py."""

from __future__ import annotations

from typing import Any

import pytest

from emailrouter.crm.auth import StaticTokenProvider
from emailrouter.crm.client import DataverseClient
from emailrouter.sources.approval import approval_problem
from emulators.dataverse import DataverseEmulator
from tests.fixtures.dataverse import TOKEN

ADDRESS = "service@acme.example"


def _client(emulator: DataverseEmulator) -> DataverseClient:
    return DataverseClient(emulator.url, StaticTokenProvider(TOKEN))


def _mailbox(number: int, address: str = ADDRESS, approval: int | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "mailboxid": f"ffffffff-0000-0000-0000-{number:012d}",
        "name": f"Mailbox {number}",
        "emailaddress": address,
    }
    if approval is not None:
        row["emailrouteraccessapproval"] = approval
    return row


def test_approved_mailbox_may_be_polled(dataverse: DataverseEmulator) -> None:
    dataverse.seed({"mailboxes": [_mailbox(1, approval=1)]})

    assert approval_problem(_client(dataverse), ADDRESS) is None


@pytest.mark.parametrize(
    ("approval", "label"), [(2, "Pending Approval"), (3, "Rejected"), (0, "Empty"), (None, "Empty")]
)
def test_mailbox_not_approved_waits_and_says_why(
    dataverse: DataverseEmulator, approval: int | None, label: str
) -> None:
    dataverse.seed({"mailboxes": [_mailbox(1, approval=approval)]})

    problem = approval_problem(_client(dataverse), ADDRESS)

    assert problem is not None
    assert label in problem and ADDRESS in problem


def test_address_without_a_crm_mailbox_cannot_be_approved(dataverse: DataverseEmulator) -> None:
    dataverse.seed({"mailboxes": [_mailbox(1, address="sales@acme.example", approval=1)]})

    problem = approval_problem(_client(dataverse), ADDRESS)

    assert problem is not None and "no CRM mailbox" in problem and ADDRESS in problem


def test_mailbox_stored_in_another_case_is_the_same_mailbox(dataverse: DataverseEmulator) -> None:
    dataverse.seed({"mailboxes": [_mailbox(1, address="Service@Acme.Example", approval=1)]})

    assert approval_problem(_client(dataverse), ADDRESS) is None


def test_one_approved_record_among_several_with_the_address_is_enough(dataverse: DataverseEmulator) -> None:
    dataverse.seed({"mailboxes": [_mailbox(1, approval=3), _mailbox(2, approval=1)]})

    assert approval_problem(_client(dataverse), ADDRESS) is None


def test_a_plus_address_finds_its_own_crm_mailbox(dataverse: DataverseEmulator) -> None:
    dataverse.seed(
        {
            "mailboxes": [
                _mailbox(1, address="service+crm@acme.example", approval=1),
                _mailbox(2, address="service crm@acme.example", approval=3),
            ]
        }
    )

    assert approval_problem(_client(dataverse), "service+crm@acme.example") is None
