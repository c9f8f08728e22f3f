"""Crash injection on the receive path: 200 messages from two real mailboxes, the worker killed
at every step boundary in turn (after the ledger claim, after the CRM write, before the ledger
commit, before the source acknowledgement). No email lost or doubled in the organization; every
message with exactly one outcome in the ledger; quarantined ones with their raw MIME in S3.

The messages come from Dovecot, polled by the real poller: `help` over POP3, deleted at the
source once processed (except what is quarantined: it stays until replayed or discarded), and
`sales` over IMAP, kept there. A crash at `before_source_ack` falls
between the recorded outcomes and the deletion at the source; only a real source shows what it
costs: the messages stay on the server until a later batch or poll deletes them, and they must
never be tracked twice. (Queued messages alone could only show that the ledger still owes the
acknowledgement.)

The corpus goes in eight waves of 25 arrivals; each wave is delivered, polled and drained while
one point is armed for a few crashes (the four points in turn, twice). A crash raises from the
handler, so the whole SQS batch comes back after its visibility timeout, as it would after a
process death. Nothing here counts how often a point is reached: the test holds whether the
worker reaches a point once per message or once per batch, and checks that each wave crashed.

Expected results come from how the corpus is built, never from the code under test:
- a new thread (no In-Reply-To / References) is `created`;
- a reply whose In-Reply-To / References name an email already in the organization (a seeded
  CRM email, or a message of an earlier wave that was created or correlated) is `correlated`,
  regarding what that ancestor is regarding (the seeded emails are regarding an account);
- a reply that names only mail the organization never tracked is `created`;
- Auto-Submitted / Precedence: bulk mail is `filtered` (even when it answers a tracked email);
- bytes with no header block are `quarantined`;
- a message delivered to both mailboxes (addressed to both, or to one and copied to the other)
  has that one outcome once; its second arrival is the `duplicate` (the ledger keeps one record
  per message and one source record per arrival).
Every tracked email must end Received, whatever step a crash interrupted.
Replies only name messages of earlier waves, so the order of processing within a wave (which
crashes shuffle) cannot change any expectation. Senders are spread so no sender comes near the
loop-protection limit, even counting retried attempts.
"""

from __future__ import annotations

import collections
import json
import random
from dataclasses import dataclass

import pytest

from emailrouter import aws
from emailrouter.ledger.models import InboundRecord, Outcome
from emailrouter.ledger.store import Ledger
from emailrouter.local.stack import LocalStack
from emailrouter.routing.faults import FaultPoints
from emailrouter.runtime import Runtime, reset_runtime
from tests.helpers import (
    ACCOUNT_ID,
    TENANT,
    add_tenant,
    crm_get,
    dovecot_mailbox,
    ledger_source_records,
    raw_mail,
    seed_org,
    tracked_email,
)

POINTS = ("after_claim", "after_crm_write", "before_ledger_commit", "before_source_ack")
WAVES = 8
CRASHES_PER_WAVE = 2
HELP, SALES = "help", "sales"
SEEDED_THREADS = 4
# Distinct messages of each kind in one wave: 21 messages, 25 arrivals.
RECIPE = (
    ("new", 7),
    ("new-both", 1),
    ("new-bcc", 1),  # addressed to help only, reaches sales too (Bcc, a list, forwarding)
    ("reply", 5),
    ("reply-both", 1),
    ("reply-untracked", 1),
    ("auto-reply", 1),
    ("bulk", 1),
    ("junk-both", 1),  # auto-reply in even waves, malformed in odd ones
    ("malformed", 2),
)
TRACKED = (Outcome.CREATED, Outcome.CORRELATED)


@dataclass(frozen=True)
class Mail:
    label: str
    raw: bytes
    message_id: str | None
    mailboxes: tuple[str, ...]
    outcome: Outcome  # the message's one outcome; any further arrival of it is a duplicate
    regarding: str | None = None  # for a tracked message: what its CRM email is regarding


class CorpusBuilder:
    """Builds the waves and works out each message's expected outcome as it goes."""

    def __init__(self, seeded: dict[str, str | None]) -> None:
        self._rng = random.Random(20261126)
        self._count = 0
        # message-id → regarding, for every email in the organization before the current wave
        self._in_org: dict[str, str | None] = dict(seeded)
        self._references: dict[str, list[str]] = {mid: [] for mid in seeded}
        self._untracked: list[str] = []  # filtered messages of earlier waves

    def wave(self, number: int) -> list[Mail]:
        mails = [self._make(number, kind) for kind, count in RECIPE for _ in range(count)]
        for mail in mails:
            if mail.message_id and mail.outcome in TRACKED:
                self._in_org[mail.message_id] = mail.regarding
            elif mail.message_id and mail.outcome is Outcome.FILTERED:
                self._untracked.append(mail.message_id)
        return mails

    def arrivals(self, mails: list[Mail]) -> list[tuple[str, Mail]]:
        """(mailbox, mail) in the order they reach the mailboxes."""
        arrivals = [(mailbox, mail) for mail in mails for mailbox in mail.mailboxes]
        self._rng.shuffle(arrivals)
        return arrivals

    def _make(self, wave: int, kind: str) -> Mail:
        self._count += 1
        n = self._count
        label = f"w{wave}-{kind}-{n}"
        single: tuple[str, ...] = (HELP,) if n % 2 else (SALES,)
        both = (HELP, SALES)
        if kind == "junk-both":
            kind = "auto-reply" if wave % 2 == 0 else "malformed"
            single = both
        match kind:
            case "new":
                return self._tracked(label, single, f"Enquiry {n}", [])
            case "new-both":
                return self._tracked(label, both, f"Enquiry {n} to both", [])
            case "new-bcc":
                return self._tracked(label, both, f"Enquiry {n} copied", [], to=(HELP,))
            case "reply" | "reply-both":
                parent = self._rng.choice(sorted(self._in_org))
                thread = [*self._references[parent], parent]
                return self._tracked(label, both if kind == "reply-both" else single, f"Re: {n}", thread)
            case "reply-untracked":
                parent = self._rng.choice(self._untracked) if self._untracked else f"<gone-{n}@else.example>"
                return self._tracked(label, single, f"Re: untracked {n}", [parent])
            case "auto-reply":
                answered = self._rng.choice(sorted(self._in_org))
                headers = f"Auto-Submitted: auto-replied\r\nIn-Reply-To: {answered}\r\nReferences: {answered}"
                return self._filtered(label, single, f"Automatic reply {n}", headers)
            case "bulk":
                return self._filtered(label, single, f"Newsletter {n}", "Precedence: bulk")
            case "malformed":
                raw = (
                    f"%PDF-1.7 scanned fax {label} from a broken gateway\r\n\r\n".encode()
                    + bytes(range(0x80, 0xFF))
                    + b"\r\n"
                )
                return Mail(label, raw, None, single, Outcome.QUARANTINED)
        raise AssertionError(kind)

    def _tracked(
        self,
        label: str,
        mailboxes: tuple[str, ...],
        subject: str,
        thread: list[str],
        to: tuple[str, ...] | None = None,
    ) -> Mail:
        message_id = f"<{label}@client.example>"
        in_reply_to = thread[-1] if thread else None
        headers = f"In-Reply-To: {in_reply_to}\r\nReferences: {' '.join(thread)}" if thread else ""
        # Correlation by In-Reply-To / References: the parent first, then the older ancestors.
        ancestors = list(reversed(thread))
        known = [mid for mid in ancestors if mid in self._in_org]
        outcome = Outcome.CORRELATED if known else Outcome.CREATED
        regarding = next((self._in_org[mid] for mid in known if self._in_org[mid]), None)
        self._references[message_id] = thread
        raw = self._raw(label, to or mailboxes, subject, message_id, headers)
        return Mail(label, raw, message_id, mailboxes, outcome, regarding)

    def _filtered(self, label: str, mailboxes: tuple[str, ...], subject: str, headers: str) -> Mail:
        message_id = f"<{label}@client.example>"
        return Mail(
            label,
            self._raw(label, mailboxes, subject, message_id, headers),
            message_id,
            mailboxes,
            Outcome.FILTERED,
        )

    def _raw(self, label: str, to: tuple[str, ...], subject: str, message_id: str, headers: str) -> bytes:
        n = self._count
        return raw_mail(
            subject=subject,
            sender=f"Person {n} <person{n % 56}@client{n % 7}.example>",
            to=", ".join(f"{mailbox}@acme.example" for mailbox in to),
            message_id=message_id,
            extra_headers=headers,
            body=f"Message {label}.",
        )


def _poll(runtime: Runtime, mailboxes: tuple[str, ...]) -> None:
    """What the minute schedule's poll jobs do, without their once-per-minute idempotency key."""
    for mailbox in mailboxes:
        result = runtime.poller.poll(TENANT, mailbox)
        assert result.state == "ok", result


def _dlq_depth(stack: LocalStack) -> int:
    assert stack.endpoints is not None
    attributes = aws.client("sqs").get_queue_attributes(
        QueueUrl=stack.endpoints.resources["InboundDLQ"], AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


@pytest.mark.timeout(900)
def test_crash_at_every_inbound_step_boundary_loses_nothing_and_tracks_nothing_twice(
    full_stack: LocalStack,
) -> None:
    stack = full_stack
    runner, dovecot = stack.runner, stack.dovecot
    assert runner is not None and dovecot is not None and stack.endpoints is not None
    seed_org(stack)
    add_tenant(
        stack,
        mailboxes=[
            dovecot_mailbox(stack, HELP, "pop3", delete_after_processing=True),
            dovecot_mailbox(stack, SALES, "imap"),
        ],
    )
    seeded: dict[str, str | None] = {f"<order-{i}@acme.example>": ACCOUNT_ID for i in range(SEEDED_THREADS)}
    for message_id in seeded:
        tracked_email(stack, f"Order {message_id}", message_id)
    builder = CorpusBuilder(seeded)
    waves = [builder.wave(number) for number in range(WAVES)]
    mails = [mail for wave in waves for mail in wave]
    arrivals = sum(len(mail.mailboxes) for mail in mails)
    assert arrivals == 200
    faults = FaultPoints()
    runtime = reset_runtime(faults)

    crashes_per_wave: list[tuple[str, int]] = []
    for number, wave in enumerate(waves):
        point = POINTS[number % len(POINTS)]
        for mailbox, mail in builder.arrivals(wave):
            dovecot.deliver(mailbox, mail.raw)
        before = faults.crashed.get(point, 0)
        faults.arm(point, CRASHES_PER_WAVE)
        # Which mailbox's messages reach the queue first alternates between a point's two waves,
        # so its crashes hit messages of both.
        _poll(runtime, (HELP, SALES) if number < len(POINTS) else (SALES, HELP))
        assert runner.drain(180), f"wave {number} ({point}) did not settle"
        faults.arm(point, 0)
        crashes_per_wave.append((point, faults.crashed.get(point, 0) - before))
    # The next minute's poll: deletes at the source whatever a crash left acknowledged-pending.
    _poll(runtime, (HELP, SALES))
    assert runner.drain(60)

    # Every wave really crashed at its point, and nothing else killed an invocation.
    assert all(crashed > 0 for _point, crashed in crashes_per_wave), crashes_per_wave
    assert runner.stats.crashed_invocations == sum(faults.crashed.values()), (
        runner.stats.crashed_invocations,
        faults.crashed,
    )
    assert _dlq_depth(stack) == 0

    # The organization: each tracked message exactly once, Received, regarding what its thread
    # is about (statecode 1 / statuscode 4 = Completed / Received).
    emails = crm_get(
        stack,
        "emails?$filter=directioncode eq false"
        "&$select=messageid,_regardingobjectid_value,statecode,statuscode",
    )["value"]
    in_org = collections.Counter(email["messageid"] for email in emails)
    expected_tracked = {str(mail.message_id): mail for mail in mails if mail.outcome in TRACKED}
    assert sorted(mid for mid, n in in_org.items() if n > 1) == [], "duplicated in the organization"
    assert sorted(set(expected_tracked) - set(in_org)) == [], "lost: tracked but not in the organization"
    assert sorted(str(mid) for mid in set(in_org) - set(expected_tracked)) == [], "unexpected emails"
    wrong_regarding = [
        (
            email["messageid"],
            email["_regardingobjectid_value"],
            expected_tracked[email["messageid"]].regarding,
        )
        for email in emails
        if email["_regardingobjectid_value"] != expected_tracked[email["messageid"]].regarding
    ]
    assert wrong_regarding == []
    assert [e["messageid"] for e in emails if (e["statecode"], e["statuscode"]) != (1, 4)] == []

    # The ledger: one finished record per message, with the expected outcome.
    records = list(Ledger().list_messages(TENANT))
    assert [r.message_key for r in records if r.status != "done"] == [], "claims left unfinished"
    by_message_id = {r.message_id: r for r in records if r.message_id}
    assert len(by_message_id) == sum(1 for r in records if r.message_id), "one message, several records"
    bucket = stack.endpoints.environment["RAW_MAIL_BUCKET"]
    s3 = aws.client("s3")
    raw_only = {mail.raw: mail for mail in mails if mail.message_id is None}
    record_of: dict[str, InboundRecord] = {}
    for record in records:
        if record.message_id is not None:
            continue
        assert record.outcome is Outcome.QUARANTINED and record.raw_s3_key and record.reason, record
        kept = s3.get_object(Bucket=bucket, Key=record.raw_s3_key)["Body"].read()
        assert kept in raw_only, f"quarantined {record.message_key}: S3 holds bytes of no message sent"
        assert raw_only[kept].label not in record_of, f"{raw_only[kept].label} quarantined twice"
        record_of[raw_only[kept].label] = record
    for mail in mails:
        if mail.message_id is not None and mail.message_id in by_message_id:
            record_of[mail.label] = by_message_id[mail.message_id]
    assert len(records) == len(mails), (len(records), len(mails))
    missing = [mail.label for mail in mails if mail.label not in record_of]
    assert missing == [], "messages without a ledger record"
    wrong = [
        (mail.label, mail.outcome.value, record_of[mail.label].outcome)
        for mail in mails
        if record_of[mail.label].outcome is not mail.outcome
    ]
    assert wrong == []

    # Every arrival: one source record, pointing at its message (the first arrival's outcome is
    # the message's; any other arrival of the same message is its duplicate).
    sources = ledger_source_records()
    assert len(sources) == arrivals, (len(sources), arrivals)
    mailboxes_of = collections.defaultdict(list)
    for source in sources:
        mailboxes_of[source["message_key"]].append(source["mailbox_id"])
    wrong_arrivals = [
        (mail.label, sorted(mail.mailboxes), sorted(mailboxes_of[record_of[mail.label].message_key]))
        for mail in mails
        if sorted(mail.mailboxes) != sorted(mailboxes_of[record_of[mail.label].message_key])
    ]
    assert wrong_arrivals == []
    # Every kind of outcome was observed: each in the ledger, and duplicates as the messages whose
    # source records show more than one arrival.
    observed = {record.outcome for record in records}
    if any(len(arrived) > 1 for arrived in mailboxes_of.values()):
        observed.add(Outcome.DUPLICATE)
    assert observed == set(Outcome), observed

    # The sources: nothing still owed an acknowledgement; help keeps only the arrivals that were
    # quarantined (until a replay or a discard), sales keeps its mail.
    assert [s for s in sources if s["ack_pending"]] == []
    assert runtime.ledger.pending_acks(TENANT, HELP) == []
    quarantined_in_help = [
        record
        for record in record_of.values()
        if record.outcome is Outcome.QUARANTINED and record.mailbox_id == HELP
    ]
    maildir = dovecot.maildir(HELP)
    # Dovecot stores lines with LF endings.
    left_in_help = [
        path.read_bytes().replace(b"\n", b"\r\n")
        for folder in ("new", "cur")
        for path in (maildir / folder).iterdir()
    ]
    assert len(left_in_help) == len(quarantined_in_help) == dovecot.message_count(HELP)
    assert all(any(raw in left for raw in raw_only) for left in left_in_help), "help kept tracked mail"
    assert {mail.label for mail in raw_only.values() if mail.mailboxes == (HELP,)} <= {
        raw_only[raw].label for left in left_in_help for raw in raw_only if raw in left
    }, "a quarantined message left help"
    assert dovecot.message_count(SALES) == sum(1 for mail in mails if SALES in mail.mailboxes)


def test_a_non_source_error_while_deleting_at_the_source_fails_no_message_of_the_batch(
    local_stack: LocalStack,
) -> None:
    """Two tenants in one batch; deleting at the source fails for one with an error that is not a
    SourceError (its mailbox secret is gone). Both outcomes are recorded, so neither message may
    come back to the queue to be delivered a second time."""
    from emailrouter.tenancy.store import TenantStore
    from tests.helpers import enqueue_inbound

    seed_org(local_stack)
    pop3_help = {
        "mailbox_id": "help",
        "address": "help@acme.example",
        "protocol": "pop3",
        "host": "127.0.0.1",
        "port": 1,
        "security": "none",
        "credential_secret": f"emailrouter/{TENANT}/help-deleted",  # never stored
        "delete_after_processing": True,
        "tracking": "all",
    }
    tenant = add_tenant(local_stack, mailboxes=[pop3_help])
    kept = tenant.mailboxes[0].model_copy(
        update={"credential_secret": "emailrouter/other/help", "delete_after_processing": False}
    )
    assert local_stack.endpoints is not None
    aws.client("secretsmanager").create_secret(
        Name="emailrouter/other/crm",
        SecretString=json.dumps({"token": local_stack.endpoints.dataverse_token}),
    )
    crm = tenant.crm.model_copy(update={"credential_secret": "emailrouter/other/crm"})
    TenantStore().save(tenant.model_copy(update={"tenant_id": "other", "crm": crm, "mailboxes": [kept]}))
    enqueue_inbound(local_stack, raw_mail(subject="Acme's", message_id="<ack-1@client.example>"))
    _enqueue_for(local_stack, "other", raw_mail(subject="Other's", message_id="<ack-2@client.example>"))
    runner = local_stack.runner
    assert runner is not None

    assert runner.drain(60)

    assert runner.stats.crashed_invocations == 0
    assert runner.stats.failed_records == 0
    assert runner.stats.records == 2  # each message handed to the worker once: none came back
    outcomes = {
        tenant_id: [r.outcome for r in Ledger().list_messages(tenant_id)] for tenant_id in (TENANT, "other")
    }
    assert outcomes == {TENANT: [Outcome.CREATED], "other": [Outcome.CREATED]}
    # The deletion is still owed: the next poll of the mailbox retries it.
    assert Ledger().pending_acks(TENANT, "help") == ["ref-1"]


def _enqueue_for(stack: LocalStack, tenant_id: str, raw: bytes) -> None:
    import base64

    from emailrouter.clock import iso
    from emailrouter.queues.messages import InboundMessage
    from emailrouter.queues.sender import QueueSender

    assert stack.endpoints is not None
    message = InboundMessage(
        tenant_id=tenant_id,
        mailbox_id="help",
        source_ref="ref-1",
        fetched_at=iso(),
        size=len(raw),
        raw_b64=base64.b64encode(raw).decode(),
    )
    QueueSender().send(stack.endpoints.environment["INBOUND_QUEUE_URL"], tenant_id, [message])
