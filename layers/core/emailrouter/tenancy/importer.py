"""`emailrouter tenants import FILE.yaml`: validate a tenants file and store it, idempotently.

The file holds one tenant or a list under `tenants:`. An optional `secrets:` mapping (name →
JSON object) is written to Secrets Manager under the tenant's prefix. `${NAME}` placeholders
in the string values under `secrets:` are replaced from the environment after the file is
parsed, so files in the repository never carry secret values and a value stays exactly the
string it was (`0755`, `yes`, `a #b`). Placeholders anywhere else are refused: no environment
variable can reach a configuration field. Errors name the place and the variable, never a value.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from emailrouter import aws
from emailrouter.config import get_settings
from emailrouter.tenancy.errors import InvalidTenantFileError
from emailrouter.tenancy.models import TenantConfig
from emailrouter.tenancy.secrets import SECRET_PREFIX, belongs_to

if TYPE_CHECKING:
    from pathlib import Path

    from emailrouter.tenancy.store import TenantStore

_PLACEHOLDER = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


@dataclass
class ImportResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    secrets_written: list[str] = field(default_factory=list)


def _expand_secret(value: Any, env: dict[str, str], where: str) -> Any:
    """The secret's value with placeholders in its strings replaced; keys and non-strings stay."""
    if isinstance(value, dict):
        return {key: _expand_secret(item, env, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_expand_secret(item, env, f"{where}[{index}]") for index, item in enumerate(value)]
    if not isinstance(value, str):
        return value
    missing = sorted({name for name in _PLACEHOLDER.findall(value) if name not in env})
    if missing:
        raise InvalidTenantFileError(f"{where}: environment variables not set: {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda match: env[match.group(1)], value)


def _refuse_placeholders(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_placeholders(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_placeholders(item, f"{where}[{index}]")
    elif isinstance(value, str) and _PLACEHOLDER.search(value):
        raise InvalidTenantFileError(f"{where}: ${{…}} placeholders are replaced only under secrets:")


def load_tenants_file(
    path: Path, env: dict[str, str] | None = None, local_mode: bool | None = None
) -> list[tuple[TenantConfig, dict[str, Any]]]:
    """Parse and validate; returns each tenant with the secrets its file declares. Outside local
    mode (LOCAL_MODE unless given) the deployed rules hold: no cleartext mailbox, no early resend."""
    if local_mode is None:
        local_mode = get_settings().local_mode
    environment = dict(os.environ) if env is None else env
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise InvalidTenantFileError(f"{path}: {error}") from None
    entries = document.get("tenants", [document]) if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InvalidTenantFileError(f"{path}: expected a tenant mapping or a 'tenants:' list")
    result: list[tuple[TenantConfig, dict[str, Any]]] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidTenantFileError(f"{path}: tenants[{index}] is not a mapping")
        secrets = entry.pop("secrets", {}) or {}
        _refuse_operator_keys(path, index, entry)
        _refuse_placeholders(entry, f"tenants[{index}]")
        if not isinstance(secrets, dict):
            raise InvalidTenantFileError(f"{path}: tenants[{index}].secrets is not a mapping")
        try:
            tenant = TenantConfig.model_validate(entry, context={"local_mode": local_mode})
        except ValidationError as error:
            problems = "; ".join(
                ": ".join(filter(None, (".".join(str(p) for p in item["loc"]), item["msg"])))
                for item in error.errors()
            )
            raise InvalidTenantFileError(f"{path}: tenants[{index}]: {problems}") from None
        _check_secret_names(tenant, secrets)
        secrets = {
            name: _expand_secret(value, environment, f"secret {name}") for name, value in secrets.items()
        }
        result.append((tenant, secrets))
    return result


# What a tenant's file may not decide: where its mail goes out, and as whom (tenancy/sending.py).
_OPERATOR_KEYS = {
    "configuration_set": "every send uses the deployment's configuration set (template.yaml)",
    "ses_tenant_name": "the SES tenant is created by the operator: `emailrouter tenants identities add`",
}


def _refuse_operator_keys(path: Path, index: int, entry: dict[str, Any]) -> None:
    outbound = entry.get("outbound")
    found = [key for key in _OPERATOR_KEYS if isinstance(outbound, dict) and key in outbound]
    if "sending_identities" in entry:
        raise InvalidTenantFileError(
            f"{path}: tenants[{index}]: sending_identities cannot be set in a tenant file; "
            "the operator sets them with `emailrouter tenants identities add`"
        )
    if found:
        reasons = "; ".join(f"outbound.{key}: {_OPERATOR_KEYS[key]}" for key in found)
        raise InvalidTenantFileError(f"{path}: tenants[{index}]: not settable in a tenant file: {reasons}")


def _check_secret_names(tenant: TenantConfig, secrets: dict[str, Any]) -> None:
    referenced = [tenant.crm.credential_secret] + [m.credential_secret for m in tenant.mailboxes]
    for name in [*referenced, *secrets]:
        if name and not belongs_to(tenant.tenant_id, name):
            raise InvalidTenantFileError(
                f"tenant {tenant.tenant_id}: secret {name!r} must be named {SECRET_PREFIX}/{tenant.tenant_id}/…"
            )
    for name, value in secrets.items():
        if not isinstance(value, dict):
            raise InvalidTenantFileError(f"tenant {tenant.tenant_id}: secret {name!r} must be a mapping")


def import_tenants(
    path: Path, store: TenantStore, secrets_client: Any | None = None, env: dict[str, str] | None = None
) -> ImportResult:
    """Validate the whole file first, then write; running it twice changes nothing the second time."""
    entries = load_tenants_file(path, env)
    client = secrets_client or aws.client("secretsmanager")
    result = ImportResult()
    for tenant, secrets in entries:
        for name, value in secrets.items():
            if _put_secret(client, name, json.dumps(value, sort_keys=True)):
                result.secrets_written.append(name)
        existed = _exists(store, tenant.tenant_id)
        changed = store.save(tenant)
        bucket = result.unchanged if not changed else (result.updated if existed else result.created)
        bucket.append(tenant.tenant_id)
    return result


def _exists(store: TenantStore, tenant_id: str) -> bool:
    from emailrouter.tenancy.errors import TenantNotFoundError

    try:
        store.get(tenant_id)
    except TenantNotFoundError:
        return False
    return True


def _put_secret(client: Any, name: str, value: str) -> bool:
    try:
        current = client.get_secret_value(SecretId=name)["SecretString"]
    except client.exceptions.ResourceNotFoundException:
        client.create_secret(Name=name, SecretString=value)
        return True
    if current == value:
        return False
    client.put_secret_value(SecretId=name, SecretString=value)
    return True
