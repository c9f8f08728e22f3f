"""SES throttling and unsendable parties, through the real send path (emulator + moto ledger).

moto cannot throttle, so for that one case the SES client is given botocore's Stubber answer
TooManyRequestsException first — the only stand-in here; everything else runs for real."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from emailrouter import aws
from emailrouter.ledger.models import OutboundState
from emailrouter.ledger.store import Ledger
from emailrouter.local.stack import LocalStack
from emailrouter.outbound.send import OutboundSender
from emailrouter.outbound.ses import SesSender
from emailrouter.routing.outcomes import RetryLater
from emailrouter.runtime import get_runtime
from tests.helpers import add_tenant, crm_get, pending_send, seed_org


def test_throttled_send_goes_back_to_pending_send_and_is_not_a_failed_attempt(
    local_stack: LocalStack,
) -> None:
    seed_org(local_stack)
    tenant = add_tenant(local_stack)
    aws.client("sesv2").create_email_identity(EmailIdentity="acme.example")
    email_id = pending_send(local_stack, "Busy SES")
    runtime = get_runtime()
    throttled_client = boto3.client("sesv2")
    stub = Stubber(throttled_client)
    stub.add_client_error("send_email", service_error_code="TooManyRequestsException", http_status_code=429)
    stub.activate()
    sender = OutboundSender(
        runtime.crm, runtime.ledger, SesSender(throttled_client), runtime.region, sending=runtime.tenants
    )

    with pytest.raises(RetryLater, match="throttled"):
        sender.send(tenant, email_id)

    record = Ledger().get_outbound("acme", email_id)
    assert record is not None and (record.state, record.attempts) == (OutboundState.QUEUED, 0)
    row = crm_get(local_stack, f"emails({email_id})?$select=statecode,statuscode")
    assert (row["statecode"], row["statuscode"]) == (1, 6)  # Pending Send again, not Failed
    stub.assert_no_pending_responses()

    result = runtime.outbound.send(tenant, email_id)  # SES has capacity again

    assert result.state == "sent"
    row = crm_get(local_stack, f"emails({email_id})?$select=statecode,statuscode")
    assert (row["statecode"], row["statuscode"]) == (1, 3)


def test_a_recipient_without_any_address_fails_the_email_with_the_party_named(
    local_stack: LocalStack,
) -> None:
    seed_org(local_stack)
    add_tenant(local_stack)
    aws.client("sesv2").create_email_identity(EmailIdentity="acme.example")
    nameless = "cccccccc-0000-0000-0000-000000000099"
    local_stack.dataverse.seed(
        {"contacts": [{"contactid": nameless, "fullname": "No Address", "statecode": 0}]}
    )
    email_id = pending_send(
        local_stack,
        "To nobody",
        recipient={"participationtypemask": 2, "partyid_contact@odata.bind": f"/contacts({nameless})"},
    )

    assert local_stack.runner is not None and local_stack.runner.run_until_idle(rounds=2, max_seconds=60)

    row = crm_get(local_stack, f"emails({email_id})?$select=statecode,statuscode")
    assert (row["statecode"], row["statuscode"]) == (0, 8)
    record = Ledger().get_outbound("acme", email_id)
    assert record is not None and "has no email address" in record.reason and nameless in record.reason


def test_interrupted_attempts_beyond_the_limit_fail_the_email_with_the_reason(
    local_stack: LocalStack,
) -> None:
    import time

    from emailrouter.routing.faults import FaultPoints, InjectedCrash

    seed_org(local_stack)
    tenant = add_tenant(local_stack, outbound={"max_attempts": 1, "sending_status_delay_minutes": 0.01})
    aws.client("sesv2").create_email_identity(EmailIdentity="acme.example")
    email_id = pending_send(local_stack, "Unlucky")
    runtime = get_runtime()
    faults = FaultPoints()
    faults.arm("after_intent")  # the worker dies after recording its intent, before calling SES
    crashing = OutboundSender(
        runtime.crm,
        runtime.ledger,
        SesSender(aws.client("sesv2")),
        runtime.region,
        faults,
        sending=runtime.tenants,
    )
    with pytest.raises(InjectedCrash):
        crashing.send(tenant, email_id)
    time.sleep(1.0)  # past the sending-status delay: no SES event came, so SES never had it

    result = runtime.outbound.send(tenant, email_id)

    assert result.state == "failed" and "gave up after 1 attempts" in result.reason
    row = crm_get(local_stack, f"emails({email_id})?$select=statecode,statuscode")
    assert (row["statecode"], row["statuscode"]) == (0, 8)
