"""CRM's mailbox approval: a mailbox that requires it is polled only while its CRM mailbox
record (matched by email address) is Approved (emailrouteraccessapproval = 1). Mail waits on the
server until then; nothing is fetched, so nothing can be lost."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emailrouter.crm.query import eq, query_path

if TYPE_CHECKING:
    from emailrouter.crm.client import DataverseClient

APPROVED = 1
MAILBOX_ROWS = 50  # mailbox records read for one address: more is a misconfigured org, not a reason to page
_LABELS = {0: "Empty", 1: "Approved", 2: "Pending Approval", 3: "Rejected"}


def approval_problem(client: DataverseClient, address: str) -> str | None:
    """None when the CRM mailbox for `address` is approved; otherwise why polling waits."""
    query = query_path(
        "mailboxes",
        select=("mailboxid", "emailrouteraccessapproval"),
        filter=eq("emailaddress", address),
        top=MAILBOX_ROWS,
    )
    rows = client.get(query).get("value", [])
    if not rows:
        return f"no CRM mailbox has the address {address}: it cannot be approved"
    values = {int(r.get("emailrouteraccessapproval") or 0) for r in rows}
    if APPROVED in values:
        return None
    shown = ", ".join(_LABELS.get(v, str(v)) for v in sorted(values))
    return f"the CRM mailbox {address} is not approved for the email router ({shown})"
