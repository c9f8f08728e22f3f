"""Credentials from Secrets Manager, cached briefly, and only those of the tenant asking."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

from emailrouter import aws
from emailrouter.tenancy.errors import SecretAccessError

SECRET_PREFIX = "emailrouter"
_CACHE_SECONDS = 300


def secret_name(tenant_id: str, name: str) -> str:
    """The Secrets Manager name for a tenant's credential: `emailrouter/<tenant>/<name>`."""
    return f"{SECRET_PREFIX}/{tenant_id}/{name}"


def belongs_to(tenant_id: str, secret: str) -> bool:
    return secret.startswith(f"{SECRET_PREFIX}/{tenant_id}/")


class TenantSecrets:
    """Reads JSON credentials for one tenant. A name outside the tenant's prefix is refused."""

    def __init__(self, client: Any | None = None) -> None:
        self._provider = SecretsProvider(boto3_client=client or aws.client("secretsmanager"))

    def get(self, tenant_id: str, secret: str) -> dict[str, Any]:
        if not belongs_to(tenant_id, secret):
            raise SecretAccessError(f"secret {secret!r} is not under {SECRET_PREFIX}/{tenant_id}/")
        try:
            value = self._provider.get(secret, max_age=_CACHE_SECONDS)
        except GetParameterError as error:
            # The provider's message names the secret and the AWS error code, never its value.
            raise SecretAccessError(
                f"cannot read secret {secret!r}: {type(error.__cause__).__name__}"
            ) from None
        try:
            text = value if isinstance(value, str) else value.decode() if isinstance(value, bytes) else ""
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            raise SecretAccessError(f"secret {secret!r} is not a JSON object") from None
        if not isinstance(data, dict):
            raise SecretAccessError(f"secret {secret!r} is not a JSON object")
        return data
