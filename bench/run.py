"""`make bench`: inbound and outbound throughput and cost against the local stack.

Writes bench/results/latest.json, a flat object whose names carry their units.

Inbound CPU is the deliver_inbound worker's alone: the local runner sums the thread CPU time
(time.thread_time) of each handler invocation, so neither moto nor the emulator (other threads of
this process) nor the runner's own SQS receive/delete calls (Lambda's event source mapping, not
the function) are counted, and network waits are not CPU time. `inbound_drain_cpu_ms_per_msg`
keeps the wider figure: the runner thread over the whole drain. The 40 MB memory figure comes
from a worker in a process of its own (bench/memory.py).
"""

from __future__ import annotations

import base64
import json
import resource
import statistics
import sys
import tempfile
import threading
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path

import requests

from bench.corpus import build_corpus, check_representative, corpus_shape, size_distribution
from bench.memory import bench_memory
from emailrouter.clock import iso
from emailrouter.local.stack import LocalStack
from emailrouter.queues.messages import InboundMessage
from emailrouter.queues.sender import QueueSender

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
INBOUND_COUNT = 200
WARMUP_COUNT = 10
OUTBOUND_COUNT = 40
PARSE_REPEATS = 3


def _stats(stack: LocalStack) -> dict:
    return requests.get(f"{stack.dataverse.url}/_emulator/stats", timeout=10).json()


def _requests_total(stats: dict) -> int:
    return int(stats.get("api_requests", stats.get("total_requests", 0)))


class ThreadStarts:
    """Counts threads started from one thread while armed (an audit hook cannot be removed, so
    it stays installed and disarmed). Thread CPU time misses work the worker hands to threads of
    its own; a non-zero count during the measured drain says the CPU figure may be too low."""

    def __init__(self) -> None:
        self.count = 0
        self._watched: int | None = None
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[object, ...]) -> None:
        if event.startswith("_thread.start") and threading.get_ident() == self._watched:
            self.count += 1

    def arm(self) -> None:
        self._watched = threading.get_ident()

    def disarm(self) -> None:
        self._watched = None


def stdlib_parse_cpu(messages: list[bytes]) -> float:
    """Thread CPU seconds of BytesParser(policy=default).parsebytes over `messages` (median of runs)."""
    parser = BytesParser(policy=policy.default)
    runs = []
    for _ in range(PARSE_REPEATS):
        started = time.thread_time()
        for raw in messages:
            parser.parsebytes(raw)
        runs.append(time.thread_time() - started)
    return statistics.median(runs)


def bench_inbound(stack: LocalStack, corpus: list[bytes]) -> dict[str, float]:
    from tests.helpers import TENANT, add_tenant, seed_org

    seed_org(stack)
    # The corpus has four senders writing 50 messages each within minutes: loop protection would
    # (rightly) filter most of them, so it is off for this measurement of the tracking path.
    add_tenant(stack, loop_protection={"enabled": False})
    sender = QueueSender()
    queue = stack.endpoints.environment["INBOUND_QUEUE_URL"]  # type: ignore[union-attr]
    assert stack.runner is not None
    worker = next(q.function for q in stack.runner.queues if q.queue_url == queue)
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
    sender.send(queue, TENANT, messages[:WARMUP_COUNT])
    assert stack.runner.drain(120)
    before = _requests_total(_stats(stack))
    sender.send(queue, TENANT, messages[WARMUP_COUNT:])
    threads = ThreadStarts()
    stats = stack.runner.stats
    worker0, failed0 = stats.cpu_seconds.get(worker, 0.0), stats.failed_records
    threads.arm()
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    assert stack.runner.drain(600)
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    threads.disarm()
    worker_cpu = stats.cpu_seconds[worker] - worker0
    after = _requests_total(_stats(stack))
    if stats.failed_records != failed0:
        raise RuntimeError(f"{stats.failed_records - failed0} inbound records failed during the measurement")
    if threads.count:
        print(
            f"warning: {threads.count} threads started during the drain; worker CPU may be too low",
            file=sys.stderr,
        )
    measured = len(messages) - WARMUP_COUNT
    parse_cpu = stdlib_parse_cpu(corpus[WARMUP_COUNT:])
    return {
        "inbound_measured_messages": measured,
        "inbound_msgs_per_s": round(measured / wall, 2),
        "dataverse_requests_per_email": round((after - before) / measured, 3),
        "inbound_worker_cpu_ms_per_msg": round(worker_cpu / measured * 1000, 3),
        "inbound_drain_cpu_ms_per_msg": round(cpu / measured * 1000, 3),
        "inbound_worker_threads_started": threads.count,
        "stdlib_parse_cpu_ms_per_msg": round(parse_cpu / measured * 1000, 3),
        "cpu_ratio_to_stdlib_parse": round(worker_cpu / parse_cpu, 2) if parse_cpu else 0.0,
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
    shape = {**size_distribution(corpus), **corpus_shape(corpus)}
    problems = check_representative(shape)
    if problems:
        raise SystemExit("the bench corpus is not representative business mail: " + "; ".join(problems))
    results: dict[str, float | str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalStack(workdir=Path(tmp), time_scale=0.005, with_dovecot=False)
        stack.start()
        try:
            results.update(bench_inbound(stack, corpus))
            results.update(bench_outbound(stack))
            results.update(bench_memory(stack))
        finally:
            stack.stop()
    results.update(shape)
    # The whole bench process: moto, the emulator and the runner together.
    results["bench_process_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    json.dump(results, sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
