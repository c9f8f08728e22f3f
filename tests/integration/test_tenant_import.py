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


# ---- limits a tenant cannot set for itself (shared workers) --------------------------------


def _cli_import(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from emailrouter.cli.main import main

    code = main(["tenants", "import", str(path)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            ("tenant_id: northwind\n", "tenant_id: northwind\nmax_message_bytes: 209715200\n"),
            "max_message_bytes",
        ),
        (
            (
                "    delete_after_processing: true\n",
                "    delete_after_processing: true\n    security: none\n",
            ),
            "cleartext",
        ),
        (
            (
                "tenant_id: northwind\n",
                "tenant_id: northwind\noutbound:\n  sending_status_delay_minutes: 0.5\n",
            ),
            "sending_status_delay_minutes",
        ),
    ],
    ids=["message-size-above-the-ceiling", "cleartext-mailbox", "early-resend"],
)
def test_import_outside_local_mode_refuses_settings_that_hurt_shared_workers(
    local_stack: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    change: tuple[str, str],
    named: str,
) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(GOOD.replace(*change))
    monkeypatch.setenv("SALES_PASSWORD", "s3cret-value")
    monkeypatch.setenv("LOCAL_MODE", "false")

    code, output = _cli_import(path, capsys)

    assert code == 78  # EX_CONFIG
    assert named in output and output.count("\n") == 1
    assert "s3cret-value" not in output
    assert list(TenantStore().all()) == []


def test_local_mode_accepts_cleartext_and_short_delays_but_not_oversized_messages(
    local_stack: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The local stack's Dovecot speaks plain text and its clock runs fast; memory does not grow."""
    local = GOOD.replace(
        "    delete_after_processing: true\n", "    delete_after_processing: true\n    security: none\n"
    ).replace(
        "tenant_id: northwind\n", "tenant_id: northwind\noutbound:\n  sending_status_delay_minutes: 0.5\n"
    )
    path = tmp_path / "tenants.yaml"
    path.write_text(local)
    monkeypatch.setenv("SALES_PASSWORD", "s3cret-value")

    assert _cli_import(path, capsys)[0] == 0
    assert TenantStore().get("northwind").mailbox("sales").security == "none"

    path.write_text(
        GOOD.replace("tenant_id: northwind\n", "tenant_id: northwind\nmax_message_bytes: 209715200\n")
    )
    code, output = _cli_import(path, capsys)
    assert code == 78 and "max_message_bytes" in output


def test_cleartext_mailbox_is_not_opened_outside_local_mode(local_stack: LocalStack) -> None:
    """A configuration stored before the rule existed still never sends a password in clear."""
    from emailrouter.sources.errors import SourceConfigurationError
    from emailrouter.sources.factory import open_source
    from emailrouter.tenancy.models import TenantConfig
    from emailrouter.tenancy.secrets import TenantSecrets

    aws.client("secretsmanager").create_secret(
        Name="emailrouter/northwind/sales", SecretString=json.dumps({"username": "u", "password": "p"})
    )
    tenant = TenantConfig.model_validate(
        {
            "tenant_id": "northwind",
            "crm": {
                "url": "https://northwind.crm4.dynamics.com",
                "credential_secret": "emailrouter/northwind/crm",
            },
            "mailboxes": [
                {
                    "mailbox_id": "sales",
                    "address": "sales@northwind.example",
                    "protocol": "imap",
                    "host": "mail.northwind.example",
                    "security": "none",
                    "credential_secret": "emailrouter/northwind/sales",
                }
            ],
        }
    )

    with pytest.raises(SourceConfigurationError, match="cleartext"):
        open_source(tenant, tenant.mailbox("sales"), TenantSecrets(), allow_private=False)


# ---- ${VAR} placeholders: only in secret values, after parsing ------------------------------


def _stored_secret(name: str = "emailrouter/northwind/sales") -> dict[str, object]:
    return dict(json.loads(aws.client("secretsmanager").get_secret_value(SecretId=name)["SecretString"]))


@pytest.mark.parametrize(
    "value",
    ["0755", "yes", "abc #not-a-comment", 'quote" and: colon', "line1\nline2", "${NOT_EXPANDED_AGAIN}"],
    ids=["octal-looking", "boolean-looking", "hash", "yaml-syntax", "newline", "placeholder-inside"],
)
def test_secret_placeholders_keep_the_value_exactly_as_a_string(
    local_stack: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    value: str,
) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(GOOD)
    monkeypatch.setenv("SALES_PASSWORD", value)

    code, output = _cli_import(path, capsys)

    assert code == 0, output
    assert _stored_secret() == {"username": "sales", "password": value}


def test_placeholders_outside_secrets_are_refused_without_reading_the_environment(
    local_stack: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(
        GOOD.replace("tenant_id: northwind\n", "tenant_id: northwind\nname: ${AWS_SECRET_ACCESS_KEY}\n")
    )
    monkeypatch.setenv("SALES_PASSWORD", "s3cret-value")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-operators-aws-key")

    code, output = _cli_import(path, capsys)

    assert code == 78
    assert "tenants[0].name" in output and "only under secrets" in output
    assert "the-operators-aws-key" not in output and "s3cret-value" not in output
    assert list(TenantStore().all()) == []


def test_errors_in_a_file_with_secrets_never_show_secret_values(
    local_stack: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An invalid file is reported by field; the value a placeholder would bring in is not shown."""
    path = tmp_path / "tenants.yaml"
    path.write_text(GOOD.replace("protocol: imap", "protocol: carrier-pigeon"))
    monkeypatch.setenv("SALES_PASSWORD", "s3cret-value: [")

    code, output = _cli_import(path, capsys)

    assert code == 78 and "mailboxes.0.protocol" in output
    assert "s3cret-value" not in output


def test_missing_secret_placeholder_is_named_with_its_place(
    local_stack: LocalStack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(GOOD)
    monkeypatch.delenv("SALES_PASSWORD", raising=False)

    code, output = _cli_import(path, capsys)

    assert code == 78
    assert "SALES_PASSWORD" in output and "emailrouter/northwind/sales" in output
