"""The same message reaching several tracked mailboxes of a tenant is one CRM email with every
recipient as a party. Mailboxes named in the headers already are; one the message reached
without being named (Bcc, a list, forwarding) is added as a Bcc party — at creation when both
copies arrive together, afterwards when a copy arrives later.

A received email is read-only in Dataverse, so adding a party later reopens it, replaces its Bcc
parties and closes it again as Received, in one change set: all or nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emailrouter.crm import batch
from emailrouter.crm.emails import STATE_COMPLETED, STATE_OPEN, STATUS_DRAFT, STATUS_RECEIVED, bcc_parties
from emailrouter.crm.errors import CrmError

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
    rows = client.get_all(
        f"activityparties?$select=addressused&$filter=_activityid_value eq {record.crm_email_id} "
        "and participationtypemask eq 4"
    )
    bcc = sorted({str(r.get("addressused") or "").lower() for r in rows} - {""} | {address})
    resolved = connection.parties.resolve(bcc)
    path = f"emails({record.crm_email_id})"
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
