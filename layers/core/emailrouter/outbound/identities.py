"""The operator's steps for what a tenant may send as (`emailrouter tenants identities …` and
`emailrouter tenants import`): its SES tenant, and the sending identities associated with it.

An identity is given to one tenant only: an identity overlapping another tenant's (the same
domain, or an address in its domain) is refused. An identity must exist in SES first (created
and verified by the operator); an address whose domain is the SES identity is associated
through that domain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3

from emailrouter import aws
from emailrouter.clock import iso
from emailrouter.outbound.errors import OutboundError
from emailrouter.outbound.ses_tenants import SesTenants
from emailrouter.tenancy.sending import identities_overlap, normalise_identity, ses_tenant_name

if TYPE_CHECKING:
    from emailrouter.config import Settings
    from emailrouter.tenancy.sending import SendingIdentities
    from emailrouter.tenancy.store import TenantStore


class IdentityError(OutboundError):
    """An identity that cannot be given to the tenant; the message says why."""


def ses_tenants_for(settings: Settings) -> SesTenants:
    """SesTenants for the deployment the CLI talks to (the caller's account and region)."""
    client = aws.client("sesv2")
    account = str(aws.client("sts").get_caller_identity()["Account"])
    partition = boto3.session.Session().get_partition_for_region(client.meta.region_name)
    return SesTenants(client, account, partition=partition, api_available=not settings.local_mode)


def provision_ses_tenant(
    store: TenantStore, ses_tenants: SesTenants, tenant_id: str, configuration_set: str
) -> SendingIdentities:
    """Create the tenant's SES tenant with the configuration set (idempotent), associate the
    identities it already has, and record its name."""
    sending = store.get_sending(tenant_id)
    try:
        name = ses_tenant_name(configuration_set, tenant_id)
    except ValueError as error:
        raise IdentityError(str(error)) from None
    ses_tenants.ensure_tenant(name, tenant_id, configuration_set)
    for identity in sending.identities:
        ses_tenants.associate(name, ses_tenants.identity_arn(_ses_identity(ses_tenants, identity)))
    if sending.ses_tenant_name != name:
        sending = sending.model_copy(update={"ses_tenant_name": name, "updated_at": iso()})
        store.save_sending(tenant_id, sending)
    return sending


def add_identities(
    store: TenantStore,
    ses_tenants: SesTenants,
    tenant_id: str,
    identities: list[str],
    configuration_set: str,
) -> SendingIdentities:
    """Give `identities` to the tenant: checked, associated with its SES tenant, then stored."""
    store.get(tenant_id)  # the tenant must exist
    wanted = [_normalised(identity) for identity in identities]
    for other_id, other in store.all_sending():
        if other_id == tenant_id:
            continue
        for identity in wanted:
            clash = next((held for held in other.identities if identities_overlap(identity, held)), None)
            if clash:
                raise IdentityError(f"{identity} overlaps {clash}, a sending identity of tenant {other_id}")
    resolved = {identity: _ses_identity(ses_tenants, identity) for identity in wanted}
    sending = provision_ses_tenant(store, ses_tenants, tenant_id, configuration_set)
    for ses_identity in resolved.values():
        ses_tenants.associate(sending.ses_tenant_name, ses_tenants.identity_arn(ses_identity))
    updated = sending.model_copy(
        update={"identities": sorted({*sending.identities, *wanted}), "updated_at": iso()}
    )
    store.save_sending(tenant_id, updated)
    return updated


def remove_identities(
    store: TenantStore, ses_tenants: SesTenants, tenant_id: str, identities: list[str]
) -> SendingIdentities:
    """Take identities away: from the stored list first (sending as them stops at once), then
    from the SES tenant (unless another identity still needs the same SES identity)."""
    sending = store.get_sending(tenant_id)
    dropped = {_normalised(identity) for identity in identities}
    kept = [identity for identity in sending.identities if identity not in dropped]
    updated = sending.model_copy(update={"identities": kept, "updated_at": iso()})
    store.save_sending(tenant_id, updated)
    if sending.ses_tenant_name:
        still_used = {identity.rpartition("@")[2] for identity in kept} | set(kept)
        for identity in dropped & set(sending.identities):
            if identity not in still_used:
                ses_tenants.dissociate(sending.ses_tenant_name, ses_tenants.identity_arn(identity))
    return updated


def _normalised(identity: str) -> str:
    try:
        return normalise_identity(identity)
    except ValueError as error:
        raise IdentityError(str(error)) from None


def _ses_identity(ses_tenants: SesTenants, identity: str) -> str:
    """The SES identity that authorizes sending as `identity`: itself, else its domain."""
    candidates = [identity] + ([identity.rpartition("@")[2]] if "@" in identity else [])
    client: Any = ses_tenants.client
    for candidate in candidates:
        try:
            client.get_email_identity(EmailIdentity=candidate)
        except client.exceptions.NotFoundException:
            continue
        return candidate
    raise IdentityError(
        f"{identity} is not an SES identity in {ses_tenants.region}: create and verify it first"
    )
