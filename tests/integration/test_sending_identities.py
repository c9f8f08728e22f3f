"""Sending identities are the operator's: `emailrouter tenants identities …` against the local
stack, tenant files that try to choose them refused, and the SES tenant calls.

moto implements none of SES v2's tenant operations (CreateTenant answers 404), so the calls the
router makes to create SES tenants and associate resources are checked with botocore's Stubber
against the real service model; the local stack records the SES tenant name without them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from emailrouter import aws
from emailrouter.cli.main import main
from emailrouter.local.stack import LocalStack
from emailrouter.outbound.identities import add_identities, provision_ses_tenant, remove_identities
from emailrouter.outbound.ses_tenants import SesTenantError, SesTenants
from emailrouter.tenancy.errors import InvalidTenantFileError
from emailrouter.tenancy.importer import import_tenants
from emailrouter.tenancy.models import TenantConfig
from emailrouter.tenancy.store import TenantStore

ACCOUNT = "123456789012"
TENANT_FILE = """
tenant_id: {tenant}
crm:
  url: https://{tenant}.crm4.dynamics.com/
  credential_secret: emailrouter/{tenant}/crm
{extra}
"""


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = main([*args, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def _tenant_file(tmp_path: Path, tenant: str, extra: str = "") -> Path:
    path = tmp_path / f"{tenant}.yaml"
    path.write_text(TENANT_FILE.format(tenant=tenant, extra=extra))
    return path


# -- the CLI against the local stack -----------------------------------------------------------------


def test_operator_gives_identities_and_the_ses_tenant_through_the_cli(
    local_stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configuration_set = local_stack.endpoints.environment["SES_CONFIGURATION_SET"]  # type: ignore[union-attr]

    code, imported, _ = _cli(capsys, "tenants", "import", str(_tenant_file(tmp_path, "northwind")))
    assert code == 0 and imported["ses_tenants_created"] == [f"{configuration_set}-northwind"]

    code, _, err = _cli(capsys, "tenants", "identities", "add", "northwind", "northwind.example")
    assert code == 1 and "not an SES identity" in err  # SES must have it first

    aws.client("sesv2").create_email_identity(EmailIdentity="northwind.example")
    code, shown, _ = _cli(capsys, "tenants", "identities", "add", "northwind", "Northwind.Example")
    assert code == 0
    assert shown["identities"] == ["northwind.example"]
    assert shown["ses_tenant"] == f"{configuration_set}-northwind"

    assert _cli(capsys, "tenants", "import", str(_tenant_file(tmp_path, "contoso")))[0] == 0
    code, _, err = _cli(capsys, "tenants", "identities", "add", "contoso", "billing@northwind.example")
    assert code == 1 and "overlaps northwind.example, a sending identity of tenant northwind" in err

    code, shown, _ = _cli(capsys, "tenants", "identities", "remove", "northwind", "northwind.example")
    assert code == 0 and shown["identities"] == []
    code, shown, _ = _cli(capsys, "tenants", "identities", "show", "northwind")
    assert code == 0 and shown["identities"] == [] and shown["ses_tenant"].endswith("-northwind")


def test_reimporting_a_tenant_file_keeps_the_operators_identities(
    local_stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _tenant_file(tmp_path, "northwind")
    assert _cli(capsys, "tenants", "import", str(path))[0] == 0
    aws.client("sesv2").create_email_identity(EmailIdentity="northwind.example")
    assert _cli(capsys, "tenants", "identities", "add", "northwind", "northwind.example")[0] == 0
    path.write_text(path.read_text() + "name: Northwind Traders\n")

    code, imported, _ = _cli(capsys, "tenants", "import", str(path))

    assert code == 0 and imported["updated"] == ["northwind"] and imported["ses_tenants_created"] == []
    assert TenantStore().get_sending("northwind").identities == ["northwind.example"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("outbound:\n  configuration_set: someone-elses", "outbound.configuration_set: every send uses"),
        ("outbound:\n  ses_tenant_name: globex", "outbound.ses_tenant_name: the SES tenant is created by"),
        ("sending_identities: [globex.example]", "sending_identities cannot be set in a tenant file"),
    ],
)
def test_tenant_file_cannot_choose_how_or_as_whom_it_sends(
    local_stack: LocalStack, tmp_path: Path, extra: str, expected: str
) -> None:
    with pytest.raises(InvalidTenantFileError, match=expected.replace(".", r"\.")):
        import_tenants(_tenant_file(tmp_path, "northwind", extra), TenantStore())


# -- SES tenant calls, with Stubber (moto has no SES tenant API) -----------------------------------


@pytest.fixture
def store(aws: boto3.Session) -> TenantStore:
    ddb = aws.client("dynamodb")
    ddb.create_table(
        TableName="tenants",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    tenants = TenantStore("tenants", ddb)
    tenants.save(
        TenantConfig.model_validate(
            {
                "tenant_id": "acme",
                "crm": {"url": "https://acme.example", "credential_secret": "emailrouter/acme/crm"},
            }
        )
    )
    return tenants


def _stubbed() -> tuple[SesTenants, Stubber]:
    client = boto3.client("sesv2", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y")
    return SesTenants(client, ACCOUNT), Stubber(client)


CONFIG_SET_ARN = f"arn:aws:ses:eu-west-1:{ACCOUNT}:configuration-set/emailrouter-prod"
DOMAIN_ARN = f"arn:aws:ses:eu-west-1:{ACCOUNT}:identity/acme.example"


def test_adding_an_identity_creates_the_ses_tenant_and_associates_set_and_identity(
    store: TenantStore,
) -> None:
    ses_tenants, stub = _stubbed()
    name = "emailrouter-prod-acme"
    stub.add_client_error(
        "get_email_identity",
        "NotFoundException",
        http_status_code=404,
        expected_params={"EmailIdentity": "billing@acme.example"},
    )
    stub.add_response("get_email_identity", {}, {"EmailIdentity": "acme.example"})
    stub.add_response(
        "create_tenant",
        {"TenantName": name, "TenantId": "t-1"},
        {"TenantName": name, "Tags": [{"Key": "emailrouter:tenant", "Value": "acme"}]},
    )
    stub.add_response(
        "create_tenant_resource_association", {}, {"TenantName": name, "ResourceArn": CONFIG_SET_ARN}
    )
    # The address is authorized by its domain's SES identity: that is what the SES tenant gets.
    stub.add_response(
        "create_tenant_resource_association", {}, {"TenantName": name, "ResourceArn": DOMAIN_ARN}
    )

    with stub:
        sending = add_identities(store, ses_tenants, "acme", ["billing@acme.example"], "emailrouter-prod")
        stub.assert_no_pending_responses()

    assert (sending.identities, sending.ses_tenant_name) == (["billing@acme.example"], name)
    assert store.get_sending("acme") == sending


def test_provisioning_twice_converges_on_existing_tenant_and_associations(store: TenantStore) -> None:
    ses_tenants, stub = _stubbed()
    name = "emailrouter-prod-acme"
    for _ in range(2):
        stub.add_client_error("create_tenant", "AlreadyExistsException", http_status_code=400)
        stub.add_client_error(
            "create_tenant_resource_association",
            "AlreadyExistsException",
            http_status_code=400,
            expected_params={"TenantName": name, "ResourceArn": CONFIG_SET_ARN},
        )

    with stub:
        first = provision_ses_tenant(store, ses_tenants, "acme", "emailrouter-prod")
        second = provision_ses_tenant(store, ses_tenants, "acme", "emailrouter-prod")
        stub.assert_no_pending_responses()

    assert first.ses_tenant_name == second.ses_tenant_name == name


def test_removing_an_identity_dissociates_it_from_the_ses_tenant(store: TenantStore) -> None:
    from emailrouter.tenancy.sending import SendingIdentities

    name = "emailrouter-prod-acme"
    store.save_sending(
        "acme", SendingIdentities(identities=["acme.example", "acme.test"], ses_tenant_name=name)
    )
    ses_tenants, stub = _stubbed()
    stub.add_response(
        "delete_tenant_resource_association", {}, {"TenantName": name, "ResourceArn": DOMAIN_ARN}
    )

    with stub:
        sending = remove_identities(store, ses_tenants, "acme", ["ACME.example"])
        stub.assert_no_pending_responses()

    assert sending.identities == ["acme.test"]


def test_ses_refusing_the_tenant_is_reported_not_ignored(store: TenantStore) -> None:
    ses_tenants, stub = _stubbed()
    stub.add_client_error("create_tenant", "LimitExceededException", "too many tenants", http_status_code=400)

    with stub, pytest.raises(SesTenantError, match="cannot create SES tenant emailrouter-prod-acme"):
        provision_ses_tenant(store, ses_tenants, "acme", "emailrouter-prod")
    assert store.get_sending("acme").ses_tenant_name == ""
