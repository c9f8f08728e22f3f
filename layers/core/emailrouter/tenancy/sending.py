"""What a tenant may send as: its sending identities and its SES tenant, set by the operator.

Stored apart from the tenant's configuration (``TENANT#<id> / SENDING`` in the tenants table), so
importing a tenant's file can neither set nor change them: only `emailrouter tenants identities …`
writes this item. A tenant without one sends nothing (every email fails with the reason).

An identity is a domain (``acme.example``: any address at exactly that domain, not its
subdomains) or one address (``billing@acme.example``), as SES identities are.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, field_validator

# SES: TenantName is 1–64 alphanumerics, '-' and '_'.
SES_TENANT_NAME_MAX = 64
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_LOCAL_PART = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}$")


def normalise_identity(value: str) -> str:
    """The identity in the form it is compared in: lower case, no surrounding space.

    >>> normalise_identity(" Billing@ACME.example ")
    'billing@acme.example'
    >>> normalise_identity("acme.example")
    'acme.example'
    """
    identity = value.strip().lower()
    local, at, domain = identity.rpartition("@")
    if not _DOMAIN.match(domain) or (at and not _LOCAL_PART.match(local)):
        raise ValueError(f"not a domain or an email address: {value!r}")
    return identity


def _domain_of(identity: str) -> str:
    return identity.rpartition("@")[2]


def identities_overlap(first: str, second: str) -> bool:
    """Whether one sender address could be covered by both identities (the same domain, or an
    address inside the other's domain). Two tenants must never hold overlapping identities.

    >>> identities_overlap("acme.example", "ann@acme.example")
    True
    >>> identities_overlap("ann@acme.example", "bob@acme.example")
    False
    >>> identities_overlap("acme.example", "eu.acme.example")
    False
    """
    if first == second:
        return True
    if "@" in first and "@" in second:
        return False
    return _domain_of(first) == _domain_of(second)


class SendingIdentities(BaseModel):
    """A tenant's sending identities and the SES tenant its mail goes out through."""

    identities: list[str] = Field(default_factory=list)
    ses_tenant_name: str = ""
    updated_at: str = ""

    @field_validator("identities")
    @classmethod
    def _normalised(cls, values: list[str]) -> list[str]:
        return sorted({normalise_identity(value) for value in values})

    def covers(self, address: str) -> bool:
        """Whether `address` is one of the identities or at one of the identity domains.

        >>> SendingIdentities(identities=["acme.example"]).covers("Uma@Acme.Example")
        True
        >>> SendingIdentities(identities=["acme.example"]).covers("uma@evil-acme.example")
        False
        """
        address = address.strip().lower()
        return address in self.identities or ("@" in address and _domain_of(address) in self.identities)

    def refusal(self, tenant_id: str, address: str) -> str | None:
        """Why `tenant_id` may not send as `address`, or None when it may."""
        if not self.identities:
            return (
                f"tenant {tenant_id} has no sending identities; the operator sets them with "
                f"`emailrouter tenants identities add {tenant_id} DOMAIN`"
            )
        if not self.covers(address):
            return (
                f"sender {address} is not one of tenant {tenant_id}'s sending identities "
                f"({', '.join(self.identities)})"
            )
        if not self.ses_tenant_name:
            return (
                f"tenant {tenant_id} has no SES tenant; the operator creates it with "
                f"`emailrouter tenants identities add {tenant_id} DOMAIN`"
            )
        return None


def ses_tenant_name(configuration_set: str, tenant_id: str) -> str:
    """The SES tenant the router creates for a tenant: ``<configuration set>-<tenant id>``.

    The configuration set is named after the stack, so two deployments in one account never
    share an SES tenant, and the send function's IAM policy can name them (``tenant/<stack>-*``).

    >>> ses_tenant_name("emailrouter-prod", "acme")
    'emailrouter-prod-acme'
    """
    if not configuration_set:
        raise ValueError("the deployment has no SES configuration set (SES_CONFIGURATION_SET)")
    name = f"{configuration_set}-{tenant_id}"
    if len(name) > SES_TENANT_NAME_MAX or not re.match(r"^[A-Za-z0-9_-]+$", name):
        raise ValueError(
            f"SES tenant name {name!r} is not 1–{SES_TENANT_NAME_MAX} letters, digits, '-' or '_': "
            "use a shorter stack name or tenant id"
        )
    return name
