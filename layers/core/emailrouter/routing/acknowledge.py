"""Delete processed messages at the source, only after their outcome is in the ledger."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emailrouter.sources.factory import open_source

if TYPE_CHECKING:
    from emailrouter.ledger.store import Ledger
    from emailrouter.sources.base import MailSource
    from emailrouter.tenancy.models import MailboxConfig, TenantConfig
    from emailrouter.tenancy.secrets import TenantSecrets


def acknowledge_pending(
    source: MailSource, ledger: Ledger, tenant: TenantConfig, mailbox: MailboxConfig
) -> list[str]:
    """Delete every message whose outcome is recorded but which is still at the source."""
    if not mailbox.delete_after_processing:
        return []
    pending = ledger.pending_acks(tenant.tenant_id, mailbox.mailbox_id)
    if not pending:
        return []
    present = set(source.present(pending))
    deleted = source.delete([ref for ref in pending if ref in present])
    # Refs no longer on the server were deleted by someone else (or an earlier session): done too.
    done = [ref for ref in pending if ref not in present] + list(deleted)
    ledger.acknowledged(tenant.tenant_id, mailbox.mailbox_id, done)
    return done


def acknowledge_mailbox(
    ledger: Ledger,
    tenant: TenantConfig,
    mailbox: MailboxConfig,
    secrets: TenantSecrets,
    *,
    allow_private: bool,
) -> list[str]:
    """Open one session on the mailbox and acknowledge everything pending there."""
    if not mailbox.delete_after_processing:
        return []
    with open_source(tenant, mailbox, secrets, allow_private=allow_private) as source:
        return acknowledge_pending(source, ledger, tenant, mailbox)
