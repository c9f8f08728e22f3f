"""`make bench`: inbound and outbound throughput and cost against the local stack.

Writes bench/results/latest.json, a flat object whose names carry their units. CPU time is the
worker thread's own (time.thread_time), so moto and the emulator — running in other threads of
this process — are not counted; network waits are not CPU time either.
"""

from __future__ import annotations

import base64
import json
import resource
import sys
import tempfile
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path

import requests

from bench.corpus import build_corpus, size_distribution
from emailrouter.clock import iso
from emailrouter.local.stack import LocalStack
from emailrouter.queues.messages import InboundMessage
from emailrouter.queues.sender import QueueSender

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
INBOUND_COUNT = 200
OUTBOUND_COUNT = 40


def _stats(stack: LocalStack) -> dict:
    return requests.get(f"{stack.dataverse.url}/_emulator/stats", timeout=10).json()


def _requests_total(stats: dict) -> int:
    return int(stats.get("api_requests", stats.get("total_requests", 0)))


def bench_inbound(stack: LocalStack, corpus: list[bytes]) -> dict[str, float]:
    from tests.helpers import TENANT, add_tenant, seed_org

    seed_org(stack)
    # The corpus has four senders writing 50 messages each within minutes: loop protection would
    # (rightly) filter most of them, so it is off for this measurement of the tracking path.
    add_tenant(stack, loop_protection={"enabled": False})
    sender = QueueSender()
    queue = stack.endpoints.environment["INBOUND_QUEUE_URL"]  # type: ignore[union-attr]
    messages = [
        InboundMessage(
            tenant_id=TENANT,
            mailbox_id="help",
            source_ref=f"b{i}",
            fetched_at=iso(),
            size=len(raw),
            raw_b64=base64.b64encode(raw).decode(),
        )
        for i, raw in enumerate(corpus)
    ]
    # Warm the worker (imports, party cache) on a separate small set, as a warm Lambda would be.
    sender.send(queue, TENANT, messages[:10])
    assert stack.runner is not None and stack.runner.drain(120)
    before = _requests_total(_stats(stack))
    sender.send(queue, TENANT, messages[10:])
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    assert stack.runner.drain(600)
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    after = _requests_total(_stats(stack))
    measured = len(messages) - 10
    parser = BytesParser(policy=policy.default)
    p0 = time.thread_time()
    for raw in corpus[10:]:
        parser.parsebytes(raw)
    parse_cpu = time.thread_time() - p0
    return {
        "inbound_msgs_per_s": round(measured / wall, 2),
        "dataverse_requests_per_email": round((after - before) / measured, 3),
        "inbound_cpu_ms_per_msg": round(cpu / measured * 1000, 3),
        "stdlib_parse_cpu_ms_per_msg": round(parse_cpu / measured * 1000, 3),
        "cpu_ratio_to_stdlib_parse": round(cpu / parse_cpu, 2) if parse_cpu else 0.0,
    }


def bench_outbound(stack: LocalStack) -> dict[str, float]:
    from emailrouter import aws
    from tests.helpers import pending_send

    aws.client("sesv2").create_email_identity(EmailIdentity="acme.example")
    session = requests.Session()
    for i in range(OUTBOUND_COUNT):
        pending_send(stack, f"Outbound {i}", description="<p>Hello</p>" * 50, session=session)
    assert stack.runner is not None
    before = _requests_total(_stats(stack))
    wall0 = time.perf_counter()
    stack.runner.fire_due_schedules(force=True)  # dispatch + dispatch_outbound
    dispatch_requests = _requests_total(_stats(stack)) - before
    assert stack.runner.drain(600)
    wall = time.perf_counter() - wall0
    sent_requests = _requests_total(_stats(stack)) - before - dispatch_requests
    return {
        "outbound_emails_per_s": round(OUTBOUND_COUNT / wall, 2),
        "dataverse_requests_per_sent_email": round(sent_requests / OUTBOUND_COUNT, 3),
    }


def main() -> int:
    corpus = build_corpus(INBOUND_COUNT)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalStack(workdir=Path(tmp), time_scale=0.005, with_dovecot=False)
        stack.start()
        try:
            results.update(bench_inbound(stack, corpus))
            results.update(bench_outbound(stack))
        finally:
            stack.stop()
    results.update(size_distribution(corpus))
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    json.dump(results, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
