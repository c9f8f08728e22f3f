"""Errors about tenants and their configuration."""

from __future__ import annotations


class TenancyError(Exception):
    """Base class for tenant configuration problems."""


class TenantNotFoundError(TenancyError):
    pass


class MailboxNotFoundError(TenancyError, KeyError):
    """The tenant has no mailbox with that id (a KeyError too, for lookups that expect one)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidTenantFileError(TenancyError):
    """A tenants file that cannot be imported; the message says where and why."""


class SecretAccessError(TenancyError):
    """A credential could not be read, or belongs to another tenant."""
