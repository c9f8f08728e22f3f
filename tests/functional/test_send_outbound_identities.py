"""A tenant sends only as the identities the operator gave it, through its own SES tenant and the
deployment's configuration set; everything else fails before SES is called (moto never has it)."""

from __future__ import annotations

import json
from typing import Any

import requests

from emailrouter import aws
from emailrouter.ledger.store import Ledger
from emailrouter.local.stack import LocalStack
from emailrouter.runtime import get_runtime
from emailrouter.tenancy.sending import SendingIdentities
from emailrouter.tenancy.store import TenantStore
from tests.helpers import add_tenant, crm_get, pending_send, seed_org


def _ses_sent(stack: LocalStack) -> list[dict[str, Any]]:
    assert stack.endpoints is not None
    data = requests.get(f"{stack.endpoints.aws_endpoint}/moto-api/data.json", timeout=10).json()
    return list(data.get("ses", {}).get("RawMessage", []))


def _two_tenants(stack: LocalStack) -> None:
    """acme holds acme.example; globex holds globex.example. SES has both verified (one account)."""
    seed_org(stack)
    add_tenant(stack)
    TenantStore().save_sending(
        "globex", SendingIdentities(identities=["globex.example"], ses_tenant_name="emailrouter-local-globex")
    )
    ses = aws.client("sesv2")
    ses.create_email_identity(EmailIdentity="acme.example")
    ses.create_email_identity(EmailIdentity="globex.example")


def _failed_with(stack: LocalStack, email_id: str) -> str:
    row = crm_get(stack, f"emails({email_id})?$select=statecode,statuscode")
    assert (row["statecode"], row["statuscode"]) == (0, 8)
    record = Ledger().get_outbound("acme", email_id)
    assert record is not None
    return record.reason


def test_sender_at_another_tenants_domain_fails_before_ses(local_stack: LocalStack) -> None:
    _two_tenants(local_stack)
    email_id = pending_send(local_stack, "Invoice, please pay", sender="billing@globex.example")

    assert local_stack.runner is not None and local_stack.runner.run_until_idle(rounds=2, max_seconds=60)

    assert _ses_sent(local_stack) == []
    reason = _failed_with(local_stack, email_id)
    assert "billing@globex.example" in reason and "not one of tenant acme's sending identities" in reason


def test_a_lookalike_or_sub_domain_is_not_the_tenants_domain(local_stack: LocalStack) -> None:
    _two_tenants(local_stack)
    aws.client("sesv2").create_email_identity(EmailIdentity="mail.acme.example")
    sub = pending_send(local_stack, "From a subdomain", sender="uma@mail.acme.example")
    lookalike = pending_send(local_stack, "From a lookalike", sender="uma@acme.example.globex.example")

    assert local_stack.runner is not None and local_stack.runner.run_until_idle(rounds=2, max_seconds=60)

    assert _ses_sent(local_stack) == []
    assert "not one of tenant acme's sending identities" in _failed_with(local_stack, sub)
    assert "not one of tenant acme's sending identities" in _failed_with(local_stack, lookalike)


def test_tenant_without_operator_set_identities_sends_nothing(local_stack: LocalStack) -> None:
    seed_org(local_stack)
    add_tenant(local_stack, sending_identities=[])  # e.g. a tenant stored before identities existed
    aws.client("sesv2").create_email_identity(EmailIdentity="acme.example")
    email_id = pending_send(local_stack, "Before the operator set identities")

    assert local_stack.runner is not None and local_stack.runner.run_until_idle(rounds=2, max_seconds=60)

    assert _ses_sent(local_stack) == []
    reason = _failed_with(local_stack, email_id)
    assert "has no sending identities" in reason and "emailrouter tenants identities add acme" in reason


def test_own_identity_goes_through_its_ses_tenant_and_the_deployments_configuration_set(
    local_stack: LocalStack,
) -> None:
    _two_tenants(local_stack)
    email_id = pending_send(local_stack, "Your order")
    seen: list[dict[str, Any]] = []
    client = get_runtime().outbound._ses._client  # the real client the worker uses, observed
    client.meta.events.register(
        "before-parameter-build.sesv2.SendEmail", lambda params, **_: seen.append(dict(params))
    )

    assert local_stack.runner is not None and local_stack.runner.run_until_idle(rounds=2, max_seconds=60)

    assert len(_ses_sent(local_stack)) == 1
    assert [(p["TenantName"], p["ConfigurationSetName"]) for p in seen] == [
        ("emailrouter-local-acme", local_stack.endpoints.environment["SES_CONFIGURATION_SET"])  # type: ignore[union-attr]
    ]
    row = crm_get(local_stack, f"emails({email_id})?$select=statuscode")
    assert row["statuscode"] == 3


def test_configuration_stored_with_retired_ses_keys_still_loads(local_stack: LocalStack) -> None:
    """Migration: a tenant imported when its file could name a configuration set and an SES
    tenant loads; the values are ignored and, without identities, it sends nothing."""
    seed_org(local_stack)
    tenant = add_tenant(local_stack, sending_identities=[])
    body = json.loads(tenant.model_dump_json())
    body["outbound"].update({"configuration_set": "someone-elses", "ses_tenant_name": "globex"})
    ddb = aws.client("dynamodb")
    ddb.put_item(
        TableName=local_stack.endpoints.environment["TENANTS_TABLE"],  # type: ignore[union-attr]
        Item={
            "pk": {"S": "TENANT#acme"},
            "sk": {"S": "CONFIG"},
            "tenant_id": {"S": "acme"},
            "body": {"S": json.dumps(body)},
        },
    )

    loaded = TenantStore().get("acme")

    assert "configuration_set" not in loaded.outbound.model_dump()
    assert [t.tenant_id for t in TenantStore().all()] == ["acme"]
