"""Delete processed messages at the source, only after their outcome is in the ledger.

A ref can come to name another message (a folder re-created or a server migrated under a new
UIDVALIDITY, a POP3 UIDL reused): the source deletes only what still looks as it did when it was
fetched, and a deletion it refuses is recorded as dropped, never retried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emailrouter.observability import logger
from emailrouter.sources.base import DeletionReport
from emailrouter.sources.factory import open_source

if TYPE_CHECKING:
    from emailrouter.ledger.store import Ledger
    from emailrouter.sources.base import MailSource
    from emailrouter.tenancy.models import MailboxConfig, TenantConfig
    from emailrouter.tenancy.secrets import TenantSecrets


def acknowledge_pending(
    source: MailSource, ledger: Ledger, tenant: TenantConfig, mailbox: MailboxConfig
) -> DeletionReport:
    """Delete every message whose outcome is recorded but which is still at the source."""
    if not mailbox.delete_after_processing:
        return DeletionReport()
    pending = ledger.pending_deletions(tenant.tenant_id, mailbox.mailbox_id)
    if not pending:
        return DeletionReport()
    report = source.delete(pending)
    for warning in report.warnings:
        logger.warning(
            "deletion at the source incomplete",
            tenant_id=tenant.tenant_id,
            mailbox_id=mailbox.mailbox_id,
            reason=warning,
        )
    if report.dropped:
        ledger.deletions_dropped(tenant.tenant_id, mailbox.mailbox_id, report.dropped)
        for ref, reason in report.dropped.items():
            logger.warning(
                "deletion at the source dropped",
                tenant_id=tenant.tenant_id,
                mailbox_id=mailbox.mailbox_id,
                source_ref=ref,
                reason=reason,
            )
    # Refs no longer on the server were deleted by someone else (or an earlier session): done too.
    ledger.acknowledged(tenant.tenant_id, mailbox.mailbox_id, report.done)
    return report


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
        return acknowledge_pending(source, ledger, tenant, mailbox).done
