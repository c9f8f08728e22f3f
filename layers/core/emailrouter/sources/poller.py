"""poll_mailbox's work: fetch what is new in one mailbox and hand it off durably.

Order matters for "nothing lost": messages go to the queue (or S3) first, the cursor moves
after; a crash in between re-sends a few messages, which the ledger turns into duplicates.

One poll of a mailbox at a time: a poll holds the mailbox's lease in the ledger
(`poll#<mailbox>`, POLL_LEASE_SECONDS, longer than poll_mailbox may run) while it works, so a
second job for the mailbox (the next minute's, while a slow poll still runs) skips instead of
handing the same messages off again. A poll that dies leaves the lease to expire.

A message the server will not hand out holds the mailbox back for at most
MAX_FETCH_ATTEMPTS polls: then it gets its outcome (quarantined, with the server's reason), stays
on the server, and the poller moves past it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emailrouter.clock import iso
from emailrouter.crm.errors import CrmError
from emailrouter.ledger.models import Outcome
from emailrouter.observability import logger
from emailrouter.queues.sender import inbound_message
from emailrouter.routing.acknowledge import acknowledge_pending
from emailrouter.sources.approval import approval_problem
from emailrouter.sources.base import header_identity
from emailrouter.sources.errors import (
    AuthenticationError,
    MessageNotFoundError,
    MessageTooLargeError,
    SourceConfigurationError,
    SourceError,
    TransientSourceError,
)
from emailrouter.sources.factory import open_source
from emailrouter.tenancy.errors import SecretAccessError
from emailrouter.tenancy.models import MailboxHealth

if TYPE_CHECKING:
    from emailrouter.config import Settings
    from emailrouter.crm.connections import CrmConnections
    from emailrouter.ledger.store import Ledger
    from emailrouter.queues.messages import InboundMessage
    from emailrouter.queues.rawstore import RawMailStore
    from emailrouter.queues.sender import QueueSender
    from emailrouter.sources.base import MailSource
    from emailrouter.tenancy.models import MailboxConfig, TenantConfig
    from emailrouter.tenancy.secrets import TenantSecrets
    from emailrouter.tenancy.store import TenantStore

HANDOFF_CHUNK = 10
# Longer than poll_mailbox may run (its timeout, 120 s in template.yaml; a unit test checks).
POLL_LEASE_SECONDS = 180
# Polls in a row that may fail on one message before it is skipped.
MAX_FETCH_ATTEMPTS = 3


@dataclass
class PollResult:
    tenant_id: str
    mailbox_id: str
    fetched: int = 0
    acknowledged: int = 0
    oversize: int = 0
    skipped: int = 0
    state: str = "ok"
    reason: str = ""


class MailboxPoller:
    def __init__(
        self,
        settings: Settings,
        tenants: TenantStore,
        ledger: Ledger,
        raw_store: RawMailStore,
        queue: QueueSender,
        secrets: TenantSecrets,
        crm: CrmConnections | None = None,
    ) -> None:
        self._settings = settings
        self._tenants = tenants
        self._ledger = ledger
        self._raw = raw_store
        self._queue = queue
        self._secrets = secrets
        self._crm = crm

    def poll(self, tenant_id: str, mailbox_id: str) -> PollResult:
        """Poll once. Source failures are recorded as mailbox health, not raised: the next
        schedule tries again, and other mailboxes are unaffected."""
        tenant = self._tenants.get(tenant_id)
        mailbox = tenant.mailbox(mailbox_id)
        result = PollResult(tenant_id, mailbox_id)
        if not (tenant.enabled and mailbox.enabled):
            result.state, result.reason = "skipped", "disabled"
            return result
        lease, owner = f"poll#{mailbox_id}", uuid.uuid4().hex
        if not self._ledger.take_lease(tenant_id, lease, owner, POLL_LEASE_SECONDS):
            result.state, result.reason = "skipped", "another poll of this mailbox is running"
            return result
        try:
            self._poll(tenant, mailbox, result)
        finally:
            self._ledger.release_lease(tenant_id, lease, owner)
        self._record_health(tenant, mailbox, result)
        return result

    def _poll(self, tenant: TenantConfig, mailbox: MailboxConfig, result: PollResult) -> None:
        tenant_id, mailbox_id = tenant.tenant_id, mailbox.mailbox_id
        try:
            waiting = self._awaiting_approval(tenant, mailbox)
            if waiting is not None:
                result.state, result.reason = "failing", waiting
                return
            source = open_source(tenant, mailbox, self._secrets, allow_private=self._settings.local_mode)
            with source:
                result.acknowledged = len(acknowledge_pending(source, self._ledger, tenant, mailbox).done)
                self._fetch_new(source, tenant, mailbox, result)
                if result.state == "ok" and mailbox.delete_after_processing:
                    result.reason = "; ".join(source.delete_caveats())
        except AuthenticationError as error:
            result.state, result.reason = "failing", f"authentication failed: {error}"
        except SourceConfigurationError as error:
            result.state, result.reason = "failing", f"configuration: {error}"
        except TransientSourceError as error:
            result.state, result.reason = "failing", f"unreachable: {error}"
        except SourceError as error:
            result.state, result.reason = "failing", f"source error: {error}"
        except SecretAccessError as error:
            result.state, result.reason = "failing", f"credentials: {error}"
        except CrmError as error:
            result.state, result.reason = "failing", f"approval could not be checked: {error}"
        except Exception as error:  # the queue, the ledger, a bug: still a failed poll, on record
            logger.exception("poll failed", tenant_id=tenant_id, mailbox_id=mailbox_id)
            result.state, result.reason = "failing", f"internal error: {type(error).__name__}: {error}"

    def _awaiting_approval(self, tenant: TenantConfig, mailbox: MailboxConfig) -> str | None:
        if not mailbox.require_approval:
            return None
        if self._crm is None:
            return "approval is required but the poller has no CRM connection"
        return approval_problem(self._crm.for_tenant(tenant).client, mailbox.address)

    def _fetch_new(
        self, source: MailSource, tenant: TenantConfig, mailbox: MailboxConfig, result: PollResult
    ) -> None:
        cursor = self._tenants.get_cursor(tenant.tenant_id, mailbox.mailbox_id)
        refs = source.list_new(cursor)[: mailbox.max_messages_per_poll]
        failures = {ref: n for ref, n in cursor.fetch_failures.items() if ref in refs}
        for start in range(0, len(refs), HANDOFF_CHUNK):
            chunk = refs[start : start + HANDOFF_CHUNK]
            batch: list[InboundMessage] = []
            done = 0
            failed: SourceError | None = None
            for ref in chunk:
                try:
                    raw = source.fetch(ref)
                except MessageTooLargeError as error:
                    self._record_unfetchable(tenant, mailbox, ref, "oversize", str(error))
                    result.oversize += 1
                    done += 1
                    continue
                except MessageNotFoundError:
                    done += 1  # expunged by another client since it was listed: nothing to hand off
                    continue
                except SourceError as error:
                    attempts = failures.get(ref, 0) + 1
                    if attempts < MAX_FETCH_ATTEMPTS:
                        failures[ref] = attempts
                        failed = error
                        result.state = "failing"
                        result.reason = (
                            f"message {ref} could not be fetched (attempt {attempts} of "
                            f"{MAX_FETCH_ATTEMPTS}): {error}"
                        )
                        break
                    failures.pop(ref, None)
                    reason = f"could not be fetched in {attempts} polls, left on the server: {error}"
                    self._record_unfetchable(tenant, mailbox, ref, "unfetchable", reason)
                    result.skipped += 1
                    done += 1
                    continue
                failures.pop(ref, None)
                batch.append(
                    inbound_message(
                        tenant.tenant_id,
                        mailbox.mailbox_id,
                        ref,
                        raw,
                        self._raw,
                        self._settings.inline_max_bytes,
                        header_identity(raw),
                    )
                )
                done += 1
            self._queue.send(self._settings.inbound_queue_url, tenant.tenant_id, batch)
            result.fetched += len(batch)
            cursor = source.advance(cursor, chunk[:done]).model_copy(update={"fetch_failures": failures})
            self._tenants.save_cursor(tenant.tenant_id, mailbox.mailbox_id, cursor)
            if failed is not None:
                return
        if not refs:
            # Still prune refs that left the server, so the cursor does not grow without bound.
            cursor = source.advance(cursor, []).model_copy(update={"fetch_failures": {}})
            self._tenants.save_cursor(tenant.tenant_id, mailbox.mailbox_id, cursor)

    def _record_unfetchable(
        self, tenant: TenantConfig, mailbox: MailboxConfig, ref: str, kind: str, reason: str
    ) -> None:
        """A message that cannot be fetched still gets its one outcome, and stays at the source."""
        key = f"{kind}-{mailbox.mailbox_id}-{ref}"[:120]
        owner = f"poll:{tenant.tenant_id}:{mailbox.mailbox_id}"
        claimed, _ = self._ledger.claim(
            tenant.tenant_id, key, owner, 60, {"mailbox_id": mailbox.mailbox_id, "source_ref": ref}
        )
        if claimed is not None:
            self._ledger.complete(tenant.tenant_id, key, owner, Outcome.QUARANTINED, reason=reason)

    def _record_health(self, tenant: TenantConfig, mailbox: MailboxConfig, result: PollResult) -> None:
        if result.state == "skipped":
            return
        health = self._tenants.get_health(tenant.tenant_id, mailbox.mailbox_id)
        now = iso()
        if result.state == "ok":
            # An ok poll's reason is a caveat worth showing (e.g. deletions left to the owner's client).
            health = MailboxHealth(
                state="ok", reason=result.reason[:500], last_poll_at=now, last_success_at=now
            )
        else:
            health = MailboxHealth(
                state="failing",
                reason=result.reason[:500],
                last_poll_at=now,
                last_success_at=health.last_success_at,
                consecutive_failures=health.consecutive_failures + 1,
            )
        self._tenants.save_health(tenant.tenant_id, mailbox.mailbox_id, health)
