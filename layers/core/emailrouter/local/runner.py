"""Drives the Lambda handlers in-process the way AWS would.

- Schedules fire on their `rate(...)` expressions (the first tick at start).
- SQS event sources: ReceiveMessage up to the batch size; the handler gets Lambda's SQS event;
  records the handler does not report in `batchItemFailures` are deleted; reported ones (or all,
  when the invocation raises) stay and come back when their visibility timeout ends; moto moves
  a message to the DLQ after maxReceiveCount receives, as SQS does.
- `time_scale` shrinks visibility timeouts and schedule periods for tests and the demo, so a
  retry that takes six minutes in AWS takes seconds here; the semantics stay the same.
"""

from __future__ import annotations

import importlib.util
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emailrouter import aws
from emailrouter.clock import iso
from emailrouter.local.lambda_context import LocalLambdaContext
from emailrouter.local.sqs_events import schedule_event, sqs_event

if TYPE_CHECKING:
    from pathlib import Path

Handler = Callable[[dict[str, Any], Any], Any]
PUMP_INTERVAL = 0.5
_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float:
    """`rate(1 minute)` → 60. cron() schedules are not run locally (none are declared)."""
    match = _RATE.match(expression.strip())
    if not match:
        raise ValueError(f"unsupported schedule expression for the local runner: {expression!r}")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")]


@dataclass
class FunctionBinding:
    name: str  # logical id, e.g. DeliverInboundFunction
    app_path: Path
    timeout: int
    handler: Handler | None = None


@dataclass
class QueueBinding:
    function: str
    queue_url: str
    queue_arn: str
    batch_size: int
    visibility_timeout: int


@dataclass
class ScheduleBinding:
    function: str
    name: str
    period_seconds: float
    next_at: float = 0.0


@dataclass
class InvocationStats:
    invocations: int = 0
    records: int = 0
    failed_records: int = 0
    crashed_invocations: int = 0
    by_function: dict[str, int] = field(default_factory=dict)
    # CPU seconds inside each function's handler calls, on the invoking thread only: the local
    # servers' threads and the runner's own SQS calls (Lambda's poller, not the function) are out.
    cpu_seconds: dict[str, float] = field(default_factory=dict)


def load_handler(name: str, app_path: Path) -> Handler:
    """Import functions/<name>/app.py as its own module, as Lambda would, and return `handler`."""
    spec = importlib.util.spec_from_file_location(f"lambda_{name}", app_path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {app_path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


class LocalRunner:
    def __init__(
        self,
        functions: list[FunctionBinding],
        queues: list[QueueBinding],
        schedules: list[ScheduleBinding],
        region: str,
        time_scale: float = 1.0,
        sqs_client: Any | None = None,
        on_crash: Callable[[str, BaseException], None] | None = None,
        pumps: list[Callable[[], int]] | None = None,
    ) -> None:
        self.functions = {f.name: f for f in functions}
        self.queues = queues
        self.schedules = schedules
        self.region = region
        self.time_scale = time_scale
        self.stats = InvocationStats()
        self._sqs = sqs_client or aws.client("sqs")
        self._on_crash = on_crash
        # Work the local stack does between invocations that AWS does by itself (SES
        # publishing its events); each returns how many things it produced.
        self.pumps = list(pumps or [])
        self._last_pump = 0.0
        self._stop = threading.Event()

    def _handler(self, name: str) -> Handler:
        function = self.functions[name]
        if function.handler is None:
            function.handler = load_handler(name, function.app_path)
        return function.handler

    def invoke(self, name: str, event: dict[str, Any], *, timeout_seconds: float | None = None) -> Any:
        """Call the function's handler; `timeout_seconds` gives its context less time than the
        template's Timeout (what an invocation late in its life, or a short function, sees)."""
        function = self.functions[name]
        context = LocalLambdaContext(function_name=name, timeout_seconds=timeout_seconds or function.timeout)
        self.stats.invocations += 1
        self.stats.by_function[name] = self.stats.by_function.get(name, 0) + 1
        handler = self._handler(name)
        started = time.thread_time()
        try:
            return handler(event, context)
        finally:
            spent = time.thread_time() - started
            self.stats.cpu_seconds[name] = self.stats.cpu_seconds.get(name, 0.0) + spent

    # ---- schedules ---------------------------------------------------------------------
    def fire_due_schedules(self, now: float | None = None, force: bool = False) -> int:
        moment = time.monotonic() if now is None else now
        fired = 0
        for schedule in self.schedules:
            if force or moment >= schedule.next_at:
                schedule.next_at = moment + schedule.period_seconds * self.time_scale
                self._safe_invoke(schedule.function, schedule_event(schedule.name, self.region, iso()))
                fired += 1
        return fired

    # ---- SQS event sources -------------------------------------------------------------
    def poll_queue(self, binding: QueueBinding) -> int:
        """One receive → invoke → delete cycle. Returns the number of records handed over."""
        visibility = max(1, round(binding.visibility_timeout * self.time_scale))
        response = self._sqs.receive_message(
            QueueUrl=binding.queue_url,
            MaxNumberOfMessages=min(10, binding.batch_size),
            VisibilityTimeout=visibility,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return 0
        self.stats.records += len(messages)
        result = self._safe_invoke(binding.function, sqs_event(messages, binding.queue_arn, self.region))
        if result is _CRASHED:
            self.stats.failed_records += len(messages)
            return len(messages)
        failed = {item["itemIdentifier"] for item in (result or {}).get("batchItemFailures", [])}
        self.stats.failed_records += len(failed)
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            self._sqs.delete_message_batch(
                QueueUrl=binding.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        return len(messages)

    def _safe_invoke(self, name: str, event: dict[str, Any]) -> Any:
        try:
            return self.invoke(name, event)
        except BaseException as error:  # a crashed invocation: Lambda retries via the event source
            if isinstance(error, KeyboardInterrupt):
                raise
            self.stats.crashed_invocations += 1
            if self._on_crash is not None:
                self._on_crash(name, error)
            return _CRASHED

    def queue_depth(self, binding: QueueBinding) -> int:
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=binding.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    def pump(self, force: bool = False) -> int:
        """Run the pumps; while busy at most every PUMP_INTERVAL seconds (a pump may re-read a
        growing list, as the SES publisher reads moto's sent mail), always when `force`."""
        now = time.monotonic()
        if not force and now - self._last_pump < PUMP_INTERVAL:
            return 0
        self._last_pump = now
        return sum(pump() for pump in self.pumps)

    def drain(self, max_seconds: float = 120.0) -> bool:
        """Run the event sources until every queue is empty; True when idle within the limit."""
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            handed = self.pump() + sum(self.poll_queue(binding) for binding in self.queues)
            if handed == 0:
                if self.pump(force=True) == 0 and all(
                    self.queue_depth(binding) == 0 for binding in self.queues
                ):
                    return True
                time.sleep(0.2)  # messages in flight: wait for their visibility timeout
        return False

    def run_until_idle(self, rounds: int = 2, max_seconds: float = 150.0) -> bool:
        """Fire every schedule, drain; repeat `rounds` times (a second tick acknowledges and
        sends what the first produced). True when everything settled."""
        deadline = time.monotonic() + max_seconds
        for _ in range(rounds):
            self.fire_due_schedules(force=True)
            if not self.drain(max(1.0, deadline - time.monotonic())):
                return False
        return True

    def serve_forever(self, idle_sleep: float = 0.5) -> None:
        """What `emailrouter local up` runs until Ctrl-C: schedules by the clock, queues polled."""
        while not self._stop.is_set():
            self.fire_due_schedules()
            handed = self.pump() + sum(self.poll_queue(binding) for binding in self.queues)
            if handed == 0:
                self._stop.wait(idle_sleep)

    def stop(self) -> None:
        self._stop.set()


_CRASHED = object()
