"""Poll jobs: dispatch makes one per mailbox per minute; poll_mailbox runs each once."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.idempotency import idempotent_function

from emailrouter.clock import iso, now
from emailrouter.queues.messages import PollJob

if TYPE_CHECKING:
    from emailrouter.runtime import Runtime


def dispatch_poll_jobs(runtime: Runtime, scheduled_at: str = "") -> int:
    """One job per enabled mailbox; the job id names the minute, so a re-run of the same
    schedule tick does not poll twice (poll_mailbox is idempotent on it)."""
    slot = (scheduled_at or iso(now()))[:16]
    total = 0
    for tenant in runtime.tenants.all():
        if not tenant.enabled:
            continue
        jobs = [
            PollJob(
                tenant_id=tenant.tenant_id,
                mailbox_id=mailbox.mailbox_id,
                job_id=f"{tenant.tenant_id}/{mailbox.mailbox_id}/{slot}",
                scheduled_at=scheduled_at or iso(),
            )
            for mailbox in tenant.mailboxes
            if mailbox.enabled
        ]
        runtime.queue.send(runtime.settings.poll_jobs_queue_url, tenant.tenant_id, jobs)
        total += len(jobs)
    return total


def run_poll_job(runtime: Runtime, job: PollJob) -> dict[str, Any]:
    """Poll once per job id (Powertools idempotency in DynamoDB); a redelivered job is a no-op."""
    kit = runtime.idempotency

    @idempotent_function(data_keyword_argument="job", persistence_store=kit.persistence, config=kit.config)
    def _poll(job: dict[str, Any]) -> dict[str, Any]:
        return asdict(runtime.poller.poll(job["tenant_id"], job["mailbox_id"]))

    return _poll(job=job.model_dump(include={"tenant_id", "mailbox_id", "job_id"}))
