"""Per-sender loop protection: a runaway auto-responder or mail loop must not flood the CRM.

Counts messages from one sender to one mailbox in fixed windows of the configured length (an
approximation of the E-mail Router's sliding 120 minutes: a burst across a window boundary can
reach twice the limit before it is cut).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from emailrouter.ledger.store import Ledger
    from emailrouter.tenancy.models import MailboxConfig, TenantConfig


def loop_reason(ledger: Ledger, tenant: TenantConfig, mailbox: MailboxConfig, sender: str) -> str | None:
    """None while the sender is within the limit; otherwise the filter reason."""
    settings = tenant.loop_protection
    sender = sender.lower()
    if not settings.enabled or not sender or sender in {a.lower() for a in settings.allow}:
        return None
    # The key carries a hash, not the address: counters are bookkeeping, not a contact list.
    name = f"loop#{mailbox.mailbox_id}#{hashlib.sha256(sender.encode()).hexdigest()[:24]}"
    count = ledger.count_in_window(tenant.tenant_id, name, settings.window_minutes * 60)
    if count <= settings.max_messages:
        return None
    return (
        f"loop protection: {count} messages from {sender} to {mailbox.address} within "
        f"{settings.window_minutes} minutes (limit {settings.max_messages})"
    )
