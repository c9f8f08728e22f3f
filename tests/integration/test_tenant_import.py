"""`tenants import`: validated, idempotent, secrets only under the tenant's own prefix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emailrouter import aws
from emailrouter.local.stack import LocalStack
from emailrouter.tenancy.errors import InvalidTenantFileError
from emailrouter.tenancy.importer import import_tenants
from emailrouter.tenancy.store import TenantStore

GOOD = """
tenant_id: northwind
crm:
  url: https://northwind.crm4.dynamics.com/
  credential_secret: emailrouter/northwind/crm
mailboxes:
  - mailbox_id: sales
    address: Sales@Northwind.example
    protocol: imap
    host: mail.northwind.example
    credential_secret: emailrouter/northwind/sales
    delete_after_processing: true
secrets:
  emailrouter/northwind/sales:
    username: sales
    password: ${SALES_PASSWORD}
"""


def test_import_stores_config_and_secret_and_is_idempotent(local_stack: LocalStack, tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(GOOD)
    env = {"SALES_PASSWORD": "s3cret-value"}

    first = import_tenants(path, TenantStore(), env=env)
    second = import_tenants(path, TenantStore(), env=env)

    assert first.created == ["northwind"] and first.secrets_written == ["emailrouter/northwind/sales"]
    assert second.unchanged == ["northwind"] and second.secrets_written == []
    tenant = TenantStore().get("northwind")
    assert tenant.crm.url == "https://northwind.crm4.dynamics.com"
    mailbox = tenant.mailbox("sales")
    assert (mailbox.address, mailbox.effective_port, mailbox.tracking.value) == (
        "sales@northwind.example",
        993,
        "responses",
    )
    stored = aws.client("secretsmanager").get_secret_value(SecretId="emailrouter/northwind/sales")[
        "SecretString"
    ]
    assert json.loads(stored) == {"username": "sales", "password": "s3cret-value"}
    assert "s3cret-value" not in tenant.model_dump_json()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD.replace("protocol: imap", "protocol: carrier-pigeon"), "mailboxes.0.protocol"),
        (
            GOOD.replace("emailrouter/northwind/sales\n    delete", "emailrouter/other/sales\n    delete"),
            "must be named",
        ),
        (GOOD.replace("tenant_id: northwind", "tenant_id: North Wind"), "tenant_id"),
        (GOOD.replace("    host: mail.northwind.example\n", ""), "needs a host"),
        ("just a string", "expected a tenant mapping"),
        (GOOD + "parties:\n  max_resolved_per_message: 0\n", "parties.max_resolved_per_message"),
        (GOOD + "parties:\n  max_resolved_per_message: 501\n", "parties.max_resolved_per_message"),
    ],
)
def test_invalid_files_are_refused_with_a_clear_reason(
    local_stack: LocalStack, tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)

    with pytest.raises(InvalidTenantFileError) as error:
        import_tenants(path, TenantStore(), env={"SALES_PASSWORD": "x"})

    assert message in str(error.value)
    assert list(TenantStore().all()) == []


def test_missing_placeholder_names_the_variable(local_stack: LocalStack, tmp_path: Path) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(GOOD)

    with pytest.raises(InvalidTenantFileError, match="SALES_PASSWORD"):
        import_tenants(path, TenantStore(), env={})
