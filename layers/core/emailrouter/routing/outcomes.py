"""What happened to one message, and how errors map to outcomes (the one place that decides)."""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from emailrouter.crm.errors import CrmAuthError, CrmError, CrmTransientError
from emailrouter.ledger.models import Outcome
from emailrouter.ledger.store import ClaimBusyError
from emailrouter.tenancy.errors import SecretAccessError


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    tenant_id: str
    message_key: str
    outcome: Outcome
    reason: str = ""
    crm_email_id: str | None = None
    correlation: str | None = None


class RetryLater(Exception):
    """The message cannot be finished now (throttled, CRM down, claim busy): back to the queue."""


class TenantDisabledError(RetryLater):
    """The tenant was disabled after its work was queued: the work waits, it is not lost."""


def is_retryable(error: Exception) -> bool:
    """True when the message should return to its queue; False when it gets quarantined.

    Infrastructure trouble (AWS, a CRM that is down or refuses our token, a busy claim) is
    retried: the message is fine. Anything the message itself causes is quarantined with its
    raw MIME kept, so an operator can replay it after a fix.
    """
    if isinstance(error, (CrmTransientError, CrmAuthError, ClaimBusyError, SecretAccessError, RetryLater)):
        return True
    if isinstance(error, CrmError):
        return False
    return isinstance(error, (ClientError, BotoCoreError, ConnectionError, TimeoutError))


def quarantine_reason(error: Exception) -> str:
    text = str(error).replace("\n", " ")[:300]
    return f"{type(error).__name__}: {text}"
