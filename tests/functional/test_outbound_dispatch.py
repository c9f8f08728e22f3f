"""dispatch_outbound: Pending Send → one job per email, paged, capped, oldest first, fair across tenants.

Every tenant gets its own CRM organization (one Dataverse emulator each) and the real handlers run
through the local runner against moto: the fairness test measures the order in which SES (moto)
accepted the messages, not anything our code reports about itself.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from emailrouter import aws
from emailrouter.clock import iso
from emailrouter.local.runner import QueueBinding
from emailrouter.local.sqs_events import schedule_event
from emailrouter.local.stack import LocalStack
from emailrouter.queues.messages import OutboundJob
from emailrouter.tenancy.models import TenantConfig
from emulators.dataverse import DataverseEmulator

DOMAIN = "fair.example"
RECIPIENT = "carl@client.example"
PENDING_SEND, SENDING = 6, 7
BASE_TIME = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
_ROUTER_ID = re.compile(r"^X-EmailRouter-Id:\s*([^/\s]+)/([^/\s]+)/\S+\s*$", re.MULTILINE | re.IGNORECASE)


@dataclass
class Org:
    """One tenant's CRM organization: an emulator of its own, with a sender and a recipient."""

    tenant_id: str
    emulator: DataverseEmulator
    token: str
    user_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    contact_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def sender(self) -> str:
        return f"{self.tenant_id}@{DOMAIN}"

    def seed_people(self) -> None:
        self.emulator.seed(
            {
                "systemusers": [
                    {
                        "systemuserid": self.user_id,
                        "fullname": f"{self.tenant_id} user",
                        "internalemailaddress": self.sender,
                        "isdisabled": False,
                    }
                ],
                "contacts": [{"contactid": self.contact_id, "fullname": "Carl", "emailaddress1": RECIPIENT}],
            }
        )

    def seed_emails(
        self,
        created: list[datetime],
        mailboxes: list[str | None] | None = None,
        status: int = PENDING_SEND,
        modified: datetime | None = None,
    ) -> list[str]:
        """Outgoing emails created at the given times (seeded in that order); returns their ids."""
        ids = [str(uuid.uuid4()) for _ in created]
        rows = []
        for index, (email_id, at) in enumerate(zip(ids, created, strict=True)):
            row: dict[str, Any] = {
                "activityid": email_id,
                "subject": f"{self.tenant_id} #{index}",
                "description": "<p>Hello</p>",
                "directioncode": True,
                "statecode": 1,
                "statuscode": status,
                "createdon": _text(at),
                "email_activity_parties": [
                    {
                        "participationtypemask": 1,
                        "partyid_systemuser@odata.bind": f"/systemusers({self.user_id})",
                        "addressused": self.sender,
                    },
                    {
                        "participationtypemask": 2,
                        "partyid_contact@odata.bind": f"/contacts({self.contact_id})",
                        "addressused": RECIPIENT,
                    },
                ],
            }
            if modified is not None:
                row["modifiedon"] = _text(modified)
            mailbox = mailboxes[index] if mailboxes else None
            if mailbox:
                row["sendermailboxid@odata.bind"] = f"/mailboxes({mailbox})"
            rows.append(row)
        self.emulator.seed({"emails": rows})
        return ids

    def seed_mailboxes(self, count: int, delivery: int) -> list[str]:
        ids = [str(uuid.uuid4()) for _ in range(count)]
        self.emulator.seed(
            {
                "mailboxes": [
                    {
                        "mailboxid": mailbox_id,
                        "name": f"mailbox {mailbox_id[:8]}",
                        "outgoingemaildeliverymethod": delivery,
                    }
                    for mailbox_id in ids
                ]
            }
        )
        return ids

    def email_gets(self) -> list[str]:
        """Paths of the GETs on emails the organization answered (one per page)."""
        return [
            str(request["path"])
            for request in self.emulator.stats()["requests"]
            if request["method"] == "GET" and "/emails" in str(request["path"])
        ]


class Orgs:
    """Starts one Dataverse emulator per tenant and stores the tenant pointing at it."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.started: list[Org] = []

    def add(self, tenant_id: str, token: str | None = None, **outbound: Any) -> Org:
        real_token = secrets.token_urlsafe(16)
        emulator = DataverseEmulator(host="127.0.0.1", port=0, tokens=(real_token,), org_name=tenant_id)
        emulator.start()
        org = Org(tenant_id, emulator, real_token)
        self.started.append(org)
        org.seed_people()
        secret = f"emailrouter/{tenant_id}/crm"
        sm = aws.client("secretsmanager")
        with contextlib.suppress(sm.exceptions.ResourceExistsException):
            sm.create_secret(Name=secret, SecretString=json.dumps({"token": token or real_token}))
        tenant = TenantConfig.model_validate(
            {
                "tenant_id": tenant_id,
                "crm": {"url": emulator.url, "credential_secret": secret},
                # These orgs' emails name no sending mailbox unless a test gives one.
                "outbound": {"only_router_mailboxes": False, **outbound},
            }
        )
        from emailrouter.tenancy.sending import SendingIdentities
        from emailrouter.tenancy.store import TenantStore

        store = TenantStore()
        store.save(tenant)
        # The operator's sending identity (stored directly: these orgs all send from one test
        # domain, which the operator CLI would give to one tenant only).
        store.save_sending(
            tenant_id,
            SendingIdentities(identities=[DOMAIN], ses_tenant_name=f"emailrouter-local-{tenant_id}"),
        )
        return org

    def stop(self) -> None:
        for org in self.started:
            org.emulator.stop()


@pytest.fixture
def orgs(local_stack: LocalStack) -> Iterator[Orgs]:
    started = Orgs(local_stack)
    yield started
    started.stop()


def _text(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _times(count: int, start: datetime = BASE_TIME) -> list[datetime]:
    return [start + timedelta(seconds=index) for index in range(count)]


def _dispatch(stack: LocalStack) -> dict[str, Any]:
    """One tick of the real dispatch_outbound handler, as the minute schedule invokes it."""
    assert stack.runner is not None and stack.endpoints is not None
    event = schedule_event("dispatch-outbound", stack.endpoints.region, iso())
    result: dict[str, Any] = stack.runner.invoke("DispatchOutboundFunction", event)
    return result


def _take_jobs(stack: LocalStack) -> list[OutboundJob]:
    """Every job on the outbound queue, in queue order, removed from it."""
    assert stack.endpoints is not None
    sqs = aws.client("sqs")
    url = stack.endpoints.environment["OUTBOUND_QUEUE_URL"]
    jobs: list[OutboundJob] = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=60).get(
            "Messages", []
        )
        if not messages:
            return jobs
        jobs += [OutboundJob.model_validate_json(message["Body"]) for message in messages]
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
        )


def _ses_sent_order(stack: LocalStack) -> list[tuple[str, str]]:
    """(tenant, email id) of every message SES (moto) accepted, in the order it accepted them."""
    assert stack.endpoints is not None
    data = requests.get(f"{stack.endpoints.aws_endpoint}/moto-api/data.json", timeout=30).json()
    order: list[tuple[str, str]] = []
    for message in (data.get("ses") or {}).get("RawMessage", []):
        raw = message["raw_data"]
        match = _ROUTER_ID.search(raw if isinstance(raw, str) else raw.decode("utf-8", "replace"))
        assert match, "every message the router sends carries X-EmailRouter-Id"
        order.append((match.group(1), match.group(2)))
    return order


def _outbound_binding(stack: LocalStack) -> QueueBinding:
    assert stack.runner is not None
    return next(binding for binding in stack.runner.queues if binding.function == "SendOutboundFunction")


# ---- paging, cap, oldest first, no duplicates -----------------------------------------------


def test_dispatch_takes_capped_slices_oldest_first_across_pages_without_duplicates(
    local_stack: LocalStack, orgs: Orgs
) -> None:
    org = orgs.add("paged", max_jobs_per_dispatch=20)
    created = _times(130)
    ids = org.seed_emails(created[::-1])[::-1]  # seeded newest first; ids now oldest first

    slices = []
    for _ in range(8):
        result = _dispatch(local_stack)
        slices.append([job.email_id for job in _take_jobs(local_stack)])
        assert result["enqueued"] == len(slices[-1]) and result["errors"] == []

    assert [len(ids_in_run) for ids_in_run in slices] == [20, 20, 20, 20, 20, 20, 10, 0]
    assert [email_id for run in slices for email_id in run] == ids  # oldest first, each once
    # Pages of 50 (the floor for a cap of 20), read only as far as needed: the third run pages
    # past 40 queued emails into page 2, the sixth past 100 into page 3.
    assert len(org.email_gets()) == 1 + 1 + 2 + 2 + 2 + 3 + 3 + 3


def test_dispatch_requeues_only_emails_stuck_in_sending_past_the_delay(
    local_stack: LocalStack, orgs: Orgs
) -> None:
    org = orgs.add("stuck", sending_status_delay_minutes=30)
    now = datetime.now(UTC)
    stuck = org.seed_emails([BASE_TIME], status=SENDING, modified=now - timedelta(hours=2))
    recent = org.seed_emails([BASE_TIME + timedelta(seconds=1)], status=SENDING, modified=now)
    pending = org.seed_emails([BASE_TIME + timedelta(seconds=2)])

    _dispatch(local_stack)

    queued = [job.email_id for job in _take_jobs(local_stack)]
    assert queued == stuck + pending
    assert recent[0] not in queued


# ---- only_router_mailboxes ------------------------------------------------------------------


def test_router_mailbox_filter_takes_only_email_from_mailboxes_delivering_through_the_router(
    local_stack: LocalStack, orgs: Orgs
) -> None:
    # 120 router mailboxes need three `or` groups of 50: the result must still be oldest first.
    filtered = orgs.add("filtered", only_router_mailboxes=True)
    unfiltered = orgs.add("unfiltered")
    expected: dict[str, list[str]] = {"filtered": [], "unfiltered": []}
    for org in (filtered, unfiltered):
        router = org.seed_mailboxes(120, delivery=2)
        other = org.seed_mailboxes(5, delivery=0)
        senders: list[str | None] = [
            None if i % 5 == 0 else other[i % 5] if i % 5 == 1 else router[(i * 37) % 120] for i in range(60)
        ]
        ids = org.seed_emails(_times(60), mailboxes=senders)
        expected[org.tenant_id] = ids
        if org is filtered:
            expected["filtered"] = [e for e, s in zip(ids, senders, strict=True) if s in set(router)]

    result = _dispatch(local_stack)

    jobs = _take_jobs(local_stack)
    by_tenant = {tenant: [j.email_id for j in jobs if j.tenant_id == tenant] for tenant in expected}
    assert result["errors"] == []
    assert len(expected["filtered"]) == 36
    assert by_tenant["filtered"] == expected["filtered"]  # oldest first across the three groups
    assert by_tenant["unfiltered"] == expected["unfiltered"]  # default: every Pending Send email
    mailbox_reads = [r for r in filtered.emulator.stats()["requests"] if "/mailboxes" in str(r["path"])]
    assert len(mailbox_reads) == 1


def test_router_mailbox_filter_with_no_router_mailbox_sends_nothing(
    local_stack: LocalStack, orgs: Orgs
) -> None:
    org = orgs.add("no-router", only_router_mailboxes=True)
    other = org.seed_mailboxes(2, delivery=1)
    org.seed_emails(_times(3), mailboxes=[other[0], other[1], None])

    result = _dispatch(local_stack)

    assert result == {"enqueued": 0, "errors": []}
    assert _take_jobs(local_stack) == []


# ---- round-robin across tenants, a failing tenant --------------------------------------------


def test_jobs_are_queued_round_robin_and_a_failing_crm_does_not_stop_the_others(
    local_stack: LocalStack, orgs: Orgs
) -> None:
    five = orgs.add("five")
    two = orgs.add("two")
    broken = orgs.add("broken", token="not-the-token")  # the CRM answers 401
    five.seed_emails(_times(5))
    two.seed_emails(_times(2))
    broken.seed_emails(_times(3))

    result = _dispatch(local_stack)

    tenants = [job.tenant_id for job in _take_jobs(local_stack)]
    assert result["enqueued"] == 7
    assert len(result["errors"]) == 1 and "CrmAuthError" in result["errors"][0]
    first, second = tenants[0], tenants[1]
    assert {first, second} == {"five", "two"}
    assert tenants == [first, second, first, second, "five", "five", "five"]


# ---- fairness ---------------------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_small_tenants_are_all_sent_before_half_of_a_large_tenants_backlog(
    local_stack: LocalStack, orgs: Orgs
) -> None:
    """1,000 Pending Send emails across 20 tenants, one holding 800: the 19 small tenants' 200
    emails all go out through SES before the large tenant's 400th."""
    aws.client("sesv2").create_email_identity(EmailIdentity=DOMAIN)
    sizes = {"large": 800} | {f"small-{n:02d}": 11 if n <= 10 else 10 for n in range(1, 20)}
    assert sum(sizes.values()) == 1000 and len(sizes) == 20
    for tenant_id, size in sizes.items():  # the large tenant is stored first, its backlog oldest
        org = orgs.add(tenant_id)
        org.seed_emails(_times(size, BASE_TIME + timedelta(hours=0 if tenant_id == "large" else 1)))
    runner = local_stack.runner
    assert runner is not None
    outbound = _outbound_binding(local_stack)

    # Each tick is a minute: the schedules fire, then send_outbound works through 20 batches
    # of 5 (100 sends) before the next tick, so dispatch runs many times during the backlog.
    started = time.monotonic()
    ticks = 0
    order = _ses_sent_order(local_stack)
    while len(order) < 1000 and ticks < 40:
        runner.fire_due_schedules(force=True)
        for _ in range(20):
            runner.poll_queue(outbound)
        ticks += 1
        order = _ses_sent_order(local_stack)
    elapsed = time.monotonic() - started

    tenants = [tenant for tenant, _ in order]
    large_positions = [position for position, tenant in enumerate(tenants, 1) if tenant == "large"]
    small_positions = [position for position, tenant in enumerate(tenants, 1) if tenant != "large"]
    print(
        f"fairness: {ticks} ticks, {elapsed:.1f}s; last small-tenant send at position "
        f"{small_positions[-1] if small_positions else None}, large tenant's 400th at "
        f"{large_positions[399] if len(large_positions) >= 400 else None}"
    )
    assert len(order) == len(set(order)) == 1000  # every email once
    assert len(small_positions) == 200
    assert small_positions[-1] < large_positions[399]


# ---- time budgets, the circuit breaker, claims confirmed by SQS ------------------------------


def _dispatch_within(stack: LocalStack, seconds: float) -> dict[str, Any]:
    """One tick of dispatch_outbound with only `seconds` left in its invocation."""
    assert stack.runner is not None and stack.endpoints is not None
    event = schedule_event("dispatch-outbound", stack.endpoints.region, iso())
    result: dict[str, Any] = stack.runner.invoke("DispatchOutboundFunction", event, timeout_seconds=seconds)
    return result


def _tarpit(org: Org, delay_ms: int) -> None:
    """The organization takes `delay_ms` to answer anything: a hung org, or a tarpit URL."""
    org.emulator.set_faults([{"kind": "latency", "delay_ms": delay_ms}])


@pytest.mark.timeout(300)
def test_a_tarpit_crm_costs_only_its_share_of_the_run_and_every_other_tenant_dispatches(
    local_stack: LocalStack, orgs: Orgs
) -> None:
    hung = orgs.add("hung")
    first, second = orgs.add("first"), orgs.add("second")
    for org in (hung, first, second):
        org.seed_emails(_times(3))
    _tarpit(hung, 30_000)

    started = time.monotonic()
    result = _dispatch_within(local_stack, 6)
    elapsed = time.monotonic() - started

    assert elapsed < 6  # the invocation ended inside its remaining time
    jobs = _take_jobs(local_stack)
    assert sorted(job.tenant_id for job in jobs) == ["first"] * 3 + ["second"] * 3
    assert result["enqueued"] == 6
    assert len(result["errors"]) == 1 and "CrmTimeoutError" in result["errors"][0]


@pytest.mark.timeout(300)
def test_a_crm_that_keeps_timing_out_is_skipped_by_its_breaker_and_tried_again_after_the_cool_down(
    local_stack: LocalStack, orgs: Orgs, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from emailrouter.cli.main import main
    from emailrouter.runtime import reset_runtime

    monkeypatch.setenv("CRM_BREAKER_THRESHOLD", "2")
    monkeypatch.setenv("CRM_BREAKER_COOLDOWN_SECONDS", "4")
    reset_runtime()
    hung, healthy = orgs.add("hung"), orgs.add("healthy")

    assert _dispatch(local_stack)["enqueued"] == 0  # warm: handler loaded, clients built
    _tarpit(hung, 2_500)
    hung.seed_emails(_times(2))
    for _ in range(2):  # two consecutive timeouts open it
        assert "CrmTimeoutError" in _dispatch_within(local_stack, 2)["errors"][0]
    time.sleep(2.6)  # the tarpit's last answers are written off
    requests_before = hung.emulator.stats()["http_requests"]
    healthy.seed_emails(_times(1))
    skipped = _dispatch_within(local_stack, 2)

    assert hung.emulator.stats()["http_requests"] == requests_before  # not one request
    assert "CRM circuit open after 2 consecutive timeouts" in skipped["errors"][0]
    assert [job.tenant_id for job in _take_jobs(local_stack)] == ["healthy"]
    assert main(["status", "--json"]) == 1
    status = json.loads(capsys.readouterr().out)
    (crm,) = [row for row in status["crm"] if row["tenant"] == "hung"]
    assert crm["state"] == "open" and "ReadTimeout" in crm["reason"]
    assert crm["consecutive_timeouts"] == 2

    hung.emulator.clear_faults()  # the organization recovers
    time.sleep(4.5)  # the cool-down passes: one trial run
    tried = _dispatch_within(local_stack, 10)

    assert tried["errors"] == []
    assert sorted(job.tenant_id for job in _take_jobs(local_stack)) == ["hung", "hung"]
    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert [row["state"] for row in status["crm"] if row["tenant"] == "hung"] == ["closed"]


@pytest.mark.timeout(300)
def test_a_dispatch_killed_before_queueing_holds_its_emails_back_only_as_long_as_it_could_live(
    local_stack: LocalStack, orgs: Orgs
) -> None:
    from emailrouter.ledger.store import Ledger
    from emailrouter.routing.faults import FaultPoints, InjectedCrash
    from emailrouter.runtime import reset_runtime

    org = orgs.add("killed", sending_status_delay_minutes=30)
    faults = FaultPoints()
    reset_runtime(faults)
    assert _dispatch(local_stack)["enqueued"] == 0  # warm: handler loaded, clients built
    ids = org.seed_emails(_times(3))
    faults.arm("before_outbound_enqueue")  # Lambda ends the invocation before SQS has the jobs

    with pytest.raises(InjectedCrash):
        _dispatch_within(local_stack, 3)
    assert _take_jobs(local_stack) == []
    assert [Ledger().get_outbound("killed", email_id) for email_id in ids] != [None] * 3  # recorded
    assert _dispatch_within(local_stack, 3)["enqueued"] == 0  # the dead run's claims still hold
    time.sleep(5.5)  # the 3 s it could have lived, and a second: its claims have lapsed
    again = _dispatch_within(local_stack, 3)

    assert again["enqueued"] == 3
    assert [job.email_id for job in _take_jobs(local_stack)] == ids
    time.sleep(1.5)
    assert _dispatch_within(local_stack, 3)["enqueued"] == 0  # queued for real: held for the delay
