"""deliver_inbound under CRM stress: the emulator answers 30 % of Web API requests with a 429
(Retry-After 1 s, Dataverse's service-protection body) and 5 % with a 503, at random with a fixed
seed; inside each `$batch`, 30 % of the operations get a 429 part and 5 % a 503 part of their own.
Every message must still become exactly one CRM email with one ledger outcome, nothing may reach
the dead-letter queue, and the emulator's journal must show that no request of the router arrived
while a Retry-After it had been given (by a whole request or by a `$batch` part) was still running.

A whole request throttled is what the fact sheet calls the usual case; throttled parts are sent
again within the same invocation once their Retry-After has passed, so they reach the CRM too.
"""

from __future__ import annotations

from collections import Counter

from emailrouter import aws
from emailrouter.ledger.models import Outcome
from emailrouter.ledger.store import Ledger
from emailrouter.local.stack import LocalStack
from tests.helpers import (
    ACCOUNT_ID,
    TENANT,
    add_tenant,
    dataverse_journal,
    enqueue_inbound,
    incoming_emails,
    raw_mail,
    retry_after_violations,
    seed_org,
)

MESSAGES = 60
REPLY_EVERY = 3  # every third message answers an email the organization sent
SENT_BY_CRM = 5
# Four senders, fifteen messages each: under the default loop protection (20 per sender).
SENDERS = (
    "Carl Contact <carl@client.example>",  # a contact
    "Client Office <office@client.example>",  # an account
    "Eve Prospect <eve@partner.example>",  # unresolved
    "Finn Prospect <finn@partner.example>",  # unresolved
)
STRESS = [
    {"kind": "429", "probability": 0.30, "retry_after": 1},
    {"kind": "503", "probability": 0.05, "retry_after": 1},
    {"kind": "429", "probability": 0.30, "retry_after": 1, "scope": "operation"},
    {"kind": "503", "probability": 0.05, "retry_after": 1, "scope": "operation"},
]
SEED = 42


def _sent_by_crm(number: int) -> str:
    return f"<order-{number}@acme.example>"


def _seed_crm_sent_emails(stack: LocalStack) -> None:
    stack.dataverse.seed(
        {
            "emails": [
                {
                    "subject": f"Order {n}",
                    "directioncode": True,
                    "messageid": _sent_by_crm(n),
                    "regardingobjectid_account_email@odata.bind": f"/accounts({ACCOUNT_ID})",
                }
                for n in range(SENT_BY_CRM)
            ]
        }
    )


def _message(index: int) -> tuple[str, bytes]:
    message_id = f"<stress-{index}@client.example>"
    sender = SENDERS[index % len(SENDERS)]
    if index % REPLY_EVERY == 0:
        parent = _sent_by_crm(index % SENT_BY_CRM)
        raw = raw_mail(
            subject=f"Re: Order {index % SENT_BY_CRM}",
            sender=sender,
            message_id=message_id,
            extra_headers=f"In-Reply-To: {parent}\r\nReferences: {parent}",
            body=f"Reply {index}.",
        )
    else:
        raw = raw_mail(subject=f"Question {index}", sender=sender, message_id=message_id, body=f"Q {index}.")
    return message_id, raw


def test_every_message_is_delivered_once_and_no_request_beats_its_retry_after(
    local_stack: LocalStack,
) -> None:
    seed_org(local_stack)
    _seed_crm_sent_emails(local_stack)
    add_tenant(local_stack)
    expected = dict(_message(i) for i in range(MESSAGES))
    replies = {message_id for i, (message_id, _raw) in enumerate(expected.items()) if i % REPLY_EVERY == 0}
    for index, raw in enumerate(expected.values()):
        enqueue_inbound(local_stack, raw, source_ref=f"ref-{index}")
    local_stack.dataverse.journal.reset()
    local_stack.dataverse.set_faults(STRESS, seed=SEED)

    assert local_stack.runner is not None
    try:
        drained = local_stack.runner.drain(150)
    finally:
        local_stack.dataverse.clear_faults()  # the reads below must not be throttled
    journal = dataverse_journal(local_stack)

    assert drained, "the inbound queue did not empty within 150 s"
    # The stress was real: throttles were given, all with Retry-After 1 s.
    throttles = [entry for entry in journal if entry["throttled"]]
    given = Counter(entry["status"] for entry in journal)
    given.update(status for entry in journal for status in entry["operation_statuses"] or ())
    assert len(throttles) >= 3 and given[503] >= 1, given
    assert {entry["retry_after"] for entry in throttles} == {1}
    # Service protection counts per user: the router is one caller here (the tenant's token).
    assert len({entry["caller"] for entry in journal}) == 1
    assert retry_after_violations(journal) == []

    emails = incoming_emails(local_stack)
    by_message_id = Counter(email["messageid"] for email in emails)
    assert set(by_message_id) == set(expected)
    assert [mid for mid, n in by_message_id.items() if n != 1] == []  # none duplicated
    regarding = {email["messageid"]: email.get("_regardingobjectid_value") for email in emails}
    assert {mid for mid, record in regarding.items() if record == ACCOUNT_ID} == replies

    records = list(Ledger().list_messages(TENANT))
    assert len(records) == MESSAGES
    assert Counter(r.message_id for r in records) == Counter(expected.keys())
    outcomes = {r.message_id: r.outcome for r in records}
    assert {mid for mid, outcome in outcomes.items() if outcome is Outcome.CORRELATED} == replies
    assert {mid for mid, outcome in outcomes.items() if outcome is Outcome.CREATED} == set(expected) - replies
    email_ids = {email["messageid"]: email["activityid"] for email in emails}
    assert {r.message_id: r.crm_email_id for r in records} == email_ids

    assert local_stack.endpoints is not None
    dead = aws.client("sqs").receive_message(
        QueueUrl=local_stack.endpoints.resources["InboundDLQ"], MaxNumberOfMessages=10
    )
    assert dead.get("Messages", []) == []
