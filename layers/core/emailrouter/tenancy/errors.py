"""Errors about tenants and their configuration."""

from __future__ import annotations


class TenancyError(Exception):
    """Base class for tenant configuration problems."""


class TenantNotFoundError(TenancyError):
    pass


class InvalidTenantFileError(TenancyError):
    """A tenants file that cannot be imported; the message says where and why."""


class SecretAccessError(TenancyError):
    """A credential could not be read, or belongs to another tenant."""
