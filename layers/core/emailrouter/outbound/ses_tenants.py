"""The operator's side of SES tenants: one SES tenant per router tenant, associated with the
deployment's configuration set and with the tenant's sending identities (SES v2 CreateTenant,
CreateTenantResourceAssociation, DeleteTenantResourceAssociation).

Every call is idempotent (an existing tenant or association is what was asked for), so running
a command twice, or after a partial failure, converges. moto implements none of these
operations: the local stack records the SES tenant name without calling them (see
`SesTenants.api_available`), and their tests use botocore's Stubber.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from emailrouter.outbound.errors import OutboundError

_ALREADY = "AlreadyExistsException"
_MISSING = "NotFoundException"


class SesTenantError(OutboundError):
    """SES refused to create or associate a tenant's resources."""


class SesTenants:
    """Creates SES tenants and associates resources with them.

    `client` is a boto3 ``sesv2`` client; `account_id` and `partition` build resource ARNs.
    With ``api_available=False`` (the local stack: moto has no SES tenant API) nothing is
    called and the tenant name is only returned.
    """

    def __init__(
        self, client: Any, account_id: str, *, partition: str = "aws", api_available: bool = True
    ) -> None:
        self._client = client
        self._account_id = account_id
        self._partition = partition
        self.api_available = api_available

    @property
    def client(self) -> Any:
        return self._client

    @property
    def region(self) -> str:
        return str(self._client.meta.region_name)

    def identity_arn(self, identity: str) -> str:
        return f"arn:{self._partition}:ses:{self.region}:{self._account_id}:identity/{identity}"

    def configuration_set_arn(self, name: str) -> str:
        return f"arn:{self._partition}:ses:{self.region}:{self._account_id}:configuration-set/{name}"

    def ensure_tenant(self, name: str, tenant_id: str, configuration_set: str) -> bool:
        """Create the SES tenant (tagged with the router's tenant id) if missing and associate the
        configuration set with it. Returns True when the tenant was created now."""
        if not self.api_available:
            return False
        created = True
        try:
            self._client.create_tenant(
                TenantName=name, Tags=[{"Key": "emailrouter:tenant", "Value": tenant_id}]
            )
        except ClientError as error:
            if _code(error) != _ALREADY:
                raise SesTenantError(f"cannot create SES tenant {name}: {_described(error)}") from error
            created = False
        self.associate(name, self.configuration_set_arn(configuration_set))
        return created

    def associate(self, name: str, resource_arn: str) -> None:
        if not self.api_available:
            return
        try:
            self._client.create_tenant_resource_association(TenantName=name, ResourceArn=resource_arn)
        except ClientError as error:
            if _code(error) != _ALREADY:
                raise SesTenantError(
                    f"cannot associate {resource_arn} with SES tenant {name}: {_described(error)}"
                ) from error

    def dissociate(self, name: str, resource_arn: str) -> None:
        if not self.api_available:
            return
        try:
            self._client.delete_tenant_resource_association(TenantName=name, ResourceArn=resource_arn)
        except ClientError as error:
            if _code(error) != _MISSING:
                raise SesTenantError(
                    f"cannot remove {resource_arn} from SES tenant {name}: {_described(error)}"
                ) from error


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code") or "")


def _described(error: ClientError) -> str:
    details = error.response.get("Error", {})
    return f"{details.get('Code')}: {details.get('Message', '')}"
