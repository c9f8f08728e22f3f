"""CRM's mailbox approval: a mailbox that requires it is polled only while its CRM mailbox
record (matched by email address) is Approved (emailrouteraccessapproval = 1). Mail waits on the
server until then; nothing is fetched, so nothing can be lost."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emailrouter.crm.client import odata_literal

if TYPE_CHECKING:
    from emailrouter.crm.client import DataverseClient

APPROVED = 1
_LABELS = {0: "Empty", 1: "Approved", 2: "Pending Approval", 3: "Rejected"}


def approval_problem(client: DataverseClient, address: str) -> str | None:
    """None when the CRM mailbox for `address` is approved; otherwise why polling waits."""
    rows = client.get_all(
        f"mailboxes?$select=mailboxid,emailrouteraccessapproval&$filter=emailaddress eq {odata_literal(address)}"
    )
    if not rows:
        return f"no CRM mailbox has the address {address}: it cannot be approved"
    values = {int(r.get("emailrouteraccessapproval") or 0) for r in rows}
    if APPROVED in values:
        return None
    shown = ", ".join(_LABELS.get(v, str(v)) for v in sorted(values))
    return f"the CRM mailbox {address} is not approved for the email router ({shown})"
