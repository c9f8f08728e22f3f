"""Peak memory of the deliver_inbound worker handling one 40 MB message (mostly attachments).

The worker runs in a child process of its own, so the moto server and the Dataverse emulator
(threads of the bench process) are not counted. The child imports the handler and drives it
with the local runner's receive → invoke → delete cycle, as Lambda's SQS event source would:

1. the bench queues two small messages (one inline, one as an S3 claim check) and starts the child;
2. the child handles them (imports, clients, tenant and party caches are then warm), resets the
   kernel's RSS high-water mark and reports its baseline RSS;
3. the bench puts the 40 MB message the way the poller does — raw MIME in S3, a claim check on
   the inbound queue — and tells the child to go;
4. the child handles it and reports the high-water mark; the bench then checks that the email and
   every attachment, byte for byte, reached the CRM.

Peak = VmHWM from /proc/self/status after writing 5 to /proc/self/clear_refs at the baseline,
i.e. the kernel's resident-set high-water mark over the handling alone. Where clear_refs cannot
be written the peak is ru_maxrss (the whole process's high-water mark, warm-up included), which
can only overstate the growth; `worker_peak_rss_source` says which was used. Nothing in the
worker is instrumented (tracemalloc would add its own memory and time).

`make bench` runs this after the throughput figures; `python -m bench.memory` runs it alone.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import random
import resource
import select
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from bench.corpus import build_corpus

if TYPE_CHECKING:
    from emailrouter.local.runner import QueueBinding
    from emailrouter.local.stack import LocalStack

REPO_ROOT = Path(__file__).resolve().parents[1]
MESSAGE_BYTES = 40 * 1024 * 1024
# Share of the attachment bytes per file: a scanned contract, photos, a workbook, a drawing.
ATTACHMENTS = [
    ("signed-contract-scan.pdf", "application", "pdf", 0.45),
    ("site-photos.zip", "application", "zip", 0.30),
    ("price-list.xlsx", "application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet", 0.15),
    ("floor-plan.png", "image", "png", 0.10),
]
REPORT_TIMEOUT_SECONDS = 300


@dataclass
class WorkerSpec:
    """What the child needs to act as the deliver_inbound function behind its queue."""

    function: str
    app_path: str
    timeout: int
    region: str
    queue: dict[str, Any]


@dataclass
class LargeMessage:
    raw: bytes
    message_id: str
    attachments: dict[str, str]  # filename → sha256 of the content


def build_large_message(target_bytes: int = MESSAGE_BYTES, seed: int = 40) -> LargeMessage:
    """A new-thread business email of about `target_bytes`: short text and HTML bodies and four
    incompressible attachments (base64 in the MIME grows them by 4/3 plus line ends)."""
    rng = random.Random(seed)
    message = EmailMessage()
    message["From"] = "Carl Contact <carl@client.example>"
    message["To"] = "help@acme.example"
    message["Subject"] = "Signed contract, site photos and price list"
    message["Date"] = "Fri, 20 Nov 2026 09:30:00 +0000"
    message_id = make_msgid(domain="client.example")
    message["Message-ID"] = message_id
    text = "Hello,\n\nplease find the signed contract and the site survey attached.\n\nRegards,\nCarl\n"
    message.set_content(text * 40)
    message.add_alternative("<html><body>" + ("<p>" + text + "</p>") * 40 + "</body></html>", subtype="html")
    budget = (target_bytes - len(bytes(message)) - 2048) * 3 // 4 * 76 // 77
    digests: dict[str, str] = {}
    for filename, maintype, subtype, share in ATTACHMENTS:
        content = rng.randbytes(int(budget * share))
        digests[filename] = hashlib.sha256(content).hexdigest()
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    return LargeMessage(bytes(message), message_id, digests)


# ---- the bench process ---------------------------------------------------------------------
def bench_memory(stack: LocalStack) -> dict[str, float | str]:
    from emailrouter.config import get_settings
    from emailrouter.queues.rawstore import RawMailStore
    from emailrouter.queues.sender import QueueSender, inbound_message
    from emailrouter.tenancy.models import MAX_MESSAGE_BYTES_CEILING
    from tests.helpers import TENANT, add_tenant

    assert stack.runner is not None and stack.endpoints is not None
    add_tenant(
        stack,
        loop_protection={"enabled": False},
        max_message_bytes=MAX_MESSAGE_BYTES_CEILING,
        max_attachment_bytes=128 * 1024 * 1024,
    )
    queue_url = stack.endpoints.environment["INBOUND_QUEUE_URL"]
    binding = next(q for q in stack.runner.queues if q.queue_url == queue_url)
    function = stack.runner.functions[binding.function]
    spec = WorkerSpec(
        binding.function, str(function.app_path), function.timeout, stack.runner.region, asdict(binding)
    )
    store, sender = RawMailStore(), QueueSender()
    inline_max = get_settings().inline_max_bytes
    warm_with_attachment, warm_plain = build_corpus(2, seed=41)
    sender.send(
        queue_url,
        TENANT,
        [
            inbound_message(TENANT, "help", "memory-warm-1", warm_with_attachment, store, inline_max_bytes=0),
            inbound_message(TENANT, "help", "memory-warm-2", warm_plain, store, inline_max),
        ],
    )
    large = build_large_message()
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.memory", "--worker", json.dumps(asdict(spec))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        ready = _read_report(child)
        claim_check = inbound_message(TENANT, "help", "memory-40mb", large.raw, store, inline_max)
        assert claim_check.raw_s3_key is not None, "the large message must travel as a claim check"
        sender.send(queue_url, TENANT, [claim_check])
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        done = _read_report(child)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    _check_delivered(stack, large)
    growth_kb = done["peak_kb"] - ready["baseline_kb"]
    size = len(large.raw)
    return {
        "memory_message_mb": round(size / 2**20, 2),
        "memory_message_attachments": len(large.attachments),
        "worker_baseline_rss_mb": round(ready["baseline_kb"] / 1024, 1),
        "worker_peak_rss_mb": round(done["peak_kb"] / 1024, 1),
        "worker_peak_rss_growth_mb": round(growth_kb / 1024, 1),
        "worker_peak_rss_source": ready["peak_source"],
        "peak_rss_ratio_40mb": round(growth_kb * 1024 / size, 2),
        "worker_40mb_cpu_s": round(done["cpu_s"], 3),
        "worker_40mb_wall_s": round(done["wall_s"], 3),
    }


def _read_report(child: subprocess.Popen[str]) -> dict[str, Any]:
    assert child.stdout is not None
    readable, _, _ = select.select([child.stdout], [], [], REPORT_TIMEOUT_SECONDS)
    line = child.stdout.readline() if readable else ""
    if not line:
        raise RuntimeError(f"the memory worker stopped without reporting (exit code {child.poll()})")
    report: dict[str, Any] = json.loads(line)
    if report.get("error"):
        raise RuntimeError(f"the memory worker failed: {report['error']}")
    return report


def _check_delivered(stack: LocalStack, large: LargeMessage) -> None:
    """The email exists and carries every attachment intact; otherwise the figure means nothing."""
    import base64

    from tests.helpers import crm_get

    rows = crm_get(
        stack,
        f"emails?$filter=messageid eq '{large.message_id}'&$select=activityid"
        "&$expand=email_activity_mime_attachment($select=filename,body)",
    )["value"]
    if len(rows) != 1:
        raise RuntimeError(f"expected the 40 MB email once in the CRM, found {len(rows)}")
    stored = {
        a["filename"]: hashlib.sha256(base64.b64decode(a.get("body") or "")).hexdigest()
        for a in rows[0].get("email_activity_mime_attachment", [])
    }
    if stored != large.attachments:
        missing = sorted(n for n in large.attachments if stored.get(n) != large.attachments[n])
        raise RuntimeError(f"attachments missing or altered in the CRM: {missing} (stored {sorted(stored)})")


# ---- the worker process --------------------------------------------------------------------
def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name == field:
                return int(value.split()[0])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> str:
    """Restart the kernel's RSS high-water mark at the current RSS, where the kernel allows it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return "ru_maxrss"
    return "VmHWM"


def _peak_kb(source: str) -> int:
    if source == "VmHWM":
        return _status_kb("VmHWM")
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _handle(runner: Any, binding: QueueBinding, expected: int) -> None:
    """Receive → invoke → delete until `expected` records were handed over, each exactly once."""
    deadline = time.monotonic() + REPORT_TIMEOUT_SECONDS
    handed = 0
    while handed < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {handed} of {expected} messages arrived")
        received = runner.poll_queue(binding)
        handed += received
        if not received:
            time.sleep(0.05)
    stats = runner.stats
    if handed != expected or stats.failed_records or stats.crashed_invocations:
        raise RuntimeError(
            f"handed {handed} of {expected}; failed records {stats.failed_records}, "
            f"crashed invocations {stats.crashed_invocations}"
        )


def _worker(spec: WorkerSpec, report: IO[str]) -> None:
    from emailrouter.local.runner import FunctionBinding, LocalRunner, QueueBinding

    binding = QueueBinding(**spec.queue)
    runner = LocalRunner(
        [FunctionBinding(spec.function, Path(spec.app_path), spec.timeout)], [binding], [], spec.region
    )
    _handle(runner, binding, expected=2)
    gc.collect()
    source = _reset_peak()
    baseline = _status_kb("VmRSS")
    print(json.dumps({"baseline_kb": baseline, "peak_source": source}), file=report, flush=True)
    sys.stdin.readline()
    cpu0, wall0 = runner.stats.cpu_seconds.get(spec.function, 0.0), time.perf_counter()
    _handle(runner, binding, expected=1)
    wall = time.perf_counter() - wall0
    cpu = runner.stats.cpu_seconds[spec.function] - cpu0
    peak = _peak_kb(source)
    print(json.dumps({"peak_kb": peak, "cpu_s": cpu, "wall_s": wall}), file=report, flush=True)


def _standalone() -> dict[str, float | str]:
    """The memory figures alone, against a stack of their own (`python -m bench.memory`)."""
    import tempfile

    from emailrouter.local.stack import LocalStack
    from tests.helpers import seed_org

    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalStack(workdir=Path(tmp), time_scale=0.005, with_dovecot=False)
        stack.start()
        try:
            seed_org(stack)
            return bench_memory(stack)
        finally:
            stack.stop()


def main(argv: list[str]) -> int:
    if argv[:1] != ["--worker"]:
        json.dump(_standalone(), sys.stdout, indent=2, sort_keys=True)
        print()
        return 0
    # The reports go to the original stdout; anything the handler prints goes to stderr instead.
    report = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    try:
        _worker(WorkerSpec(**json.loads(argv[1])), report)
    except Exception as error:
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}), file=report, flush=True)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
