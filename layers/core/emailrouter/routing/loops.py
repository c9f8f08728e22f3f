"""Per-sender loop protection: a runaway auto-responder or mail loop must not flood the CRM.

Counts messages from one sender to one mailbox in fixed windows of the configured length (an
approximation of the E-mail Router's sliding 120 minutes: a burst across a window boundary can
reach twice the limit before it is cut).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from emailrouter.ledger.store import Ledger

if TYPE_CHECKING:
    from emailrouter.tenancy.models import MailboxConfig, TenantConfig


def loop_counter(tenant: TenantConfig, mailbox: MailboxConfig, sender: str) -> tuple[str, int] | None:
    """The ledger counter (sk, expiry) for this sender and mailbox in the current window, or
    None when the sender is not limited. deliver_inbound reads the counters of a batch together
    and adds the batch's messages in the transaction that records their outcomes; concurrent
    batches may each admit up to the limit before they see each other's counts."""
    settings = tenant.loop_protection
    sender = sender.lower()
    if not settings.enabled or not sender or sender in {a.lower() for a in settings.allow}:
        return None
    # The key carries a hash, not the address: counters are bookkeeping, not a contact list.
    name = f"loop#{mailbox.mailbox_id}#{hashlib.sha256(sender.encode()).hexdigest()[:24]}"
    return Ledger.counter_key(name, settings.window_minutes * 60)
