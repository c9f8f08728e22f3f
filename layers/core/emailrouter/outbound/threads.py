"""What a sent email leaves in the thread index, so replies correlate without asking the CRM:
the Message-ID we rendered, the id SES assigned, and the tracking token (ledger/threads.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emailrouter.crm.emails import regarding_of
from emailrouter.ledger.threads import ThreadRef, message_id_key, record_refs, ses_key, token_key

if TYPE_CHECKING:
    from emailrouter.ledger.store import Ledger
    from emailrouter.outbound.compose import CrmEmail


def remember_sent(
    ledger: Ledger, tenant_id: str, email: CrmEmail, message_id: str, ses_id: str, token: str | None
) -> None:
    """Point our id, SES's id and the token at the email and its regarding record."""
    keys: list[str] = []
    if message_id:
        keys.append(message_id_key(message_id))
    if ses_id:
        keys.append(ses_key(ses_id))
    token = token or str(email.row.get("trackingtoken") or "") or None
    if token:
        keys.append(token_key(token))
    if keys:
        record_refs(ledger, tenant_id, keys, ThreadRef(email.email_id, regarding_of(email.row)))
