"""The same message reaching several tracked mailboxes of a tenant is one CRM email with every
recipient as a party. Mailboxes named in the headers already are; one the message reached
without being named (Bcc, a list, forwarding) is added as a Bcc party — at creation when both
copies arrive together, afterwards when a copy arrives later.

A received email is read-only in Dataverse, so adding a party later reopens it, replaces its Bcc
parties and closes it again as Received, in one change set: all or nothing. The Bcc parties it
already has are written back as they are (resolved or not): only the new mailbox's address is
looked up, so a message with a long Bcc list costs no more when it reaches a second mailbox.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emailrouter.crm import batch
from emailrouter.crm.emails import STATE_COMPLETED, STATE_OPEN, STATUS_DRAFT, STATUS_RECEIVED, bcc_parties
from emailrouter.crm.errors import CrmError
from emailrouter.crm.parties import KINDS, PartyMatch
from emailrouter.crm.query import guid, query_path

if TYPE_CHECKING:
    from emailrouter.crm.connections import CrmConnection
    from emailrouter.ledger.models import InboundRecord
    from emailrouter.ledger.store import Ledger
    from emailrouter.tenancy.models import TenantConfig


def add_mailbox_party(
    connection: CrmConnection, ledger: Ledger, tenant: TenantConfig, record: InboundRecord, address: str
) -> None:
    """Make `address` a Bcc party of the record's CRM email, once."""
    if not record.crm_email_id or address in record.party_addresses:
        return
    client = connection.client
    email_id = guid(record.crm_email_id)
    rows = client.get(
        query_path(
            "activityparties",
            select=("addressused", "_partyid_value"),
            filter=f"_activityid_value eq {email_id} and participationtypemask eq 4",
            top=BCC_PARTY_ROWS,
        ),
        headers={"Prefer": f'odata.include-annotations="{_LOGICAL_NAME}"'},
    ).get("value", [])
    resolved = _existing_parties(rows)
    resolved.update(connection.parties.resolve([address]))
    bcc = sorted(resolved)
    path = f"emails({email_id})"
    answers = batch.execute_change_set(
        client,
        [
            batch.Operation(
                "PATCH",
                path,
                {
                    "statecode": STATE_OPEN,
                    "statuscode": STATUS_DRAFT,
                    "email_activity_parties": bcc_parties(bcc, resolved),
                },
            ),
            batch.Operation("PATCH", path, {"statecode": STATE_COMPLETED, "statuscode": STATUS_RECEIVED}),
        ],
    )
    for answer in answers:
        if isinstance(answer, CrmError):
            raise answer
    ledger.set_attributes(
        tenant.tenant_id, record.message_key, {"party_addresses": sorted({*record.party_addresses, address})}
    )


BCC_PARTY_ROWS = 5000  # a Dataverse page; an email's Bcc parties beyond it are not rewritten
_LOGICAL_NAME = "Microsoft.Dynamics.CRM.lookuplogicalname"
_SET_OF = {kind.logical_name: kind.entity_set for kind in KINDS}


def _existing_parties(rows: list[dict[str, Any]]) -> dict[str, tuple[PartyMatch, ...]]:
    """Each Bcc address of the email with the records its parties are bound to (() unresolved)."""
    parties: dict[str, tuple[PartyMatch, ...]] = {}
    for row in rows:
        address = str(row.get("addressused") or "").lower()
        if not address:
            continue
        record = row.get("_partyid_value")
        entity_set = _SET_OF.get(str(row.get(f"_partyid_value@{_LOGICAL_NAME}") or ""))
        matches = parties.setdefault(address, ())
        if record and entity_set:
            match = PartyMatch(str(row[f"_partyid_value@{_LOGICAL_NAME}"]), entity_set, str(record))
            if match not in matches:
                parties[address] = (*matches, match)
    return parties
