"""Open the right source for a mailbox, with its credentials from Secrets Manager."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emailrouter.sources.errors import SourceConfigurationError
from emailrouter.tenancy.models import Protocol

if TYPE_CHECKING:
    from emailrouter.sources.base import MailSource
    from emailrouter.tenancy.models import MailboxConfig, TenantConfig
    from emailrouter.tenancy.secrets import TenantSecrets


def open_source(
    tenant: TenantConfig,
    mailbox: MailboxConfig,
    secrets: TenantSecrets,
    *,
    allow_private: bool,
    timeout: float = 30.0,
    max_message_bytes: int | None = None,
) -> MailSource:
    """An unconnected source; entering its context connects and signs in."""
    if mailbox.security == "none" and not allow_private:
        # Refused at import too; this holds for configurations stored before that rule.
        raise SourceConfigurationError(
            f"mailbox {mailbox.mailbox_id}: security none (cleartext password) is for the local stack only"
        )
    credentials = secrets.get(tenant.tenant_id, mailbox.credential_secret)
    username = str(credentials.get("username", mailbox.address))
    password = str(credentials.get("password", ""))
    limit = max_message_bytes or tenant.max_message_bytes
    if mailbox.protocol is Protocol.POP3:
        from emailrouter.sources.pop3 import Pop3Source

        return Pop3Source(
            mailbox.host,
            mailbox.effective_port,
            username,
            password,
            security=mailbox.security,
            timeout=timeout,
            allow_private=allow_private,
            max_message_bytes=limit,
        )
    if mailbox.protocol is Protocol.IMAP:
        from emailrouter.sources.imap import ImapSource

        return ImapSource(
            mailbox.host,
            mailbox.effective_port,
            username,
            password,
            security=mailbox.security,
            timeout=timeout,
            allow_private=allow_private,
            folder=mailbox.folder,
            max_message_bytes=limit,
        )
    raise SourceConfigurationError(f"protocol {mailbox.protocol} is not supported yet")
