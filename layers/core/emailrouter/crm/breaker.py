"""A circuit breaker per tenant CRM: an organization that keeps timing out is left alone a while.

A hung organization or a tarpit URL costs every request its whole timeout. After `threshold`
consecutive timeouts (CrmTimeoutError: no answer in time, as often as the time left allowed)
the breaker opens: callers skip the tenant without a request until `cooldown_seconds` have
passed. Then it is half-open: one caller (a conditional write decides which) tries again; an
answer of any kind closes it, another timeout opens it for a new cool-down.

State lives in the tenants table, next to the tenant (pk ``TENANT#<id>``, sk ``CRM_HEALTH``), so
every container and function sees it and ``emailrouter status`` shows it with the reason. Only
timeouts count: a CRM that answers, even with an error (401, 500), is reachable, and those
errors are reported as they are.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from emailrouter import aws
from emailrouter.clock import epoch, iso
from emailrouter.config import get_settings
from emailrouter.tenancy.store import tenant_pk

if TYPE_CHECKING:
    from collections.abc import Callable

SK = "CRM_HEALTH"


class CrmHealth(BaseModel):
    """One tenant's CRM as the breaker sees it."""

    state: Literal["closed", "open", "half-open"] = "closed"
    consecutive_timeouts: int = 0
    reason: str = ""  # the last timeout
    opened_at: str | None = None
    open_until: int = 0  # epoch seconds; the cool-down's end while open
    last_timeout_at: str | None = None
    last_success_at: str | None = None

    @property
    def clean(self) -> bool:
        return self.state == "closed" and self.consecutive_timeouts == 0


class CrmBreaker:
    def __init__(
        self,
        table_name: str | None = None,
        client: Any | None = None,
        *,
        threshold: int | None = None,
        cooldown_seconds: int | None = None,
        clock: Callable[[], int] = epoch,
    ) -> None:
        settings = get_settings()
        self._table = table_name or settings.tenants_table
        self._ddb = client or aws.client("dynamodb")
        self.threshold = threshold or settings.crm_breaker_threshold
        self.cooldown_seconds = cooldown_seconds or settings.crm_breaker_cooldown_seconds
        self._clock = clock

    def _key(self, tenant_id: str) -> dict[str, Any]:
        return {"pk": {"S": tenant_pk(tenant_id)}, "sk": {"S": SK}}

    def health(self, tenant_id: str) -> CrmHealth:
        item = self._ddb.get_item(TableName=self._table, Key=self._key(tenant_id), ConsistentRead=True).get(
            "Item"
        )
        return _health(item) if item else CrmHealth()

    def refusal(self, tenant_id: str) -> tuple[str | None, CrmHealth]:
        """Why the tenant's CRM must not be called now (None: go ahead), and its health.

        An open breaker past its cool-down lets exactly one caller through, half-open."""
        health = self.health(tenant_id)
        if health.state == "closed":
            return None, health
        now = self._clock()
        if health.state == "open" and health.open_until > now:
            return self._why(health), health
        if health.state == "half-open" and health.open_until + self.cooldown_seconds > now:
            return self._why(health, "a trial request is under way"), health
        # Cool-down over (or a trial that never reported, a cool-down ago): this caller tries.
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=self._key(tenant_id),
                UpdateExpression="SET #s = :half, open_until = :now",
                ConditionExpression="#s = :seen AND open_until = :until",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={
                    ":half": {"S": "half-open"},
                    ":now": {"N": str(now)},
                    ":seen": {"S": health.state},
                    ":until": {"N": str(health.open_until)},
                },
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return self._why(health, "another caller is trying it"), health
        return None, health.model_copy(update={"state": "half-open", "open_until": now})

    def _why(self, health: CrmHealth, extra: str = "") -> str:
        text = (
            f"CRM circuit open after {health.consecutive_timeouts} consecutive timeouts "
            f"(last: {health.reason}); tried again after {iso(datetime.fromtimestamp(health.open_until, UTC))}"
        )
        return f"{text}; {extra}" if extra else text

    def record_success(self, tenant_id: str, health: CrmHealth) -> None:
        """The CRM answered: timeouts no longer consecutive, the breaker closes. `health` is what
        `refusal` returned: a clean one costs no write."""
        if health.clean:
            return
        self._ddb.update_item(
            TableName=self._table,
            Key=self._key(tenant_id),
            UpdateExpression="SET #s = :closed, consecutive_timeouts = :zero, open_until = :zero, "
            "last_success_at = :ts, tenant_id = :tenant",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={
                ":closed": {"S": "closed"},
                ":zero": {"N": "0"},
                ":ts": {"S": iso()},
                ":tenant": {"S": tenant_id},
            },
        )

    def record_timeout(self, tenant_id: str, reason: str) -> CrmHealth:
        """One more consecutive timeout; opens the breaker at the threshold, and at once when a
        half-open trial timed out."""
        item = self._ddb.update_item(
            TableName=self._table,
            Key=self._key(tenant_id),
            UpdateExpression="SET reason = :reason, last_timeout_at = :ts, tenant_id = :tenant, "
            "#s = if_not_exists(#s, :closed), open_until = if_not_exists(open_until, :zero) "
            "ADD consecutive_timeouts :one",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={
                ":reason": {"S": reason[:300]},
                ":ts": {"S": iso()},
                ":tenant": {"S": tenant_id},
                ":closed": {"S": "closed"},
                ":zero": {"N": "0"},
                ":one": {"N": "1"},
            },
            ReturnValues="ALL_NEW",
        )["Attributes"]
        health = _health(item)
        if health.state == "half-open" or (
            health.state == "closed" and health.consecutive_timeouts >= self.threshold
        ):
            until = self._clock() + self.cooldown_seconds
            self._ddb.update_item(
                TableName=self._table,
                Key=self._key(tenant_id),
                UpdateExpression="SET #s = :open, open_until = :until, opened_at = :ts",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues={
                    ":open": {"S": "open"},
                    ":until": {"N": str(until)},
                    ":ts": {"S": iso()},
                },
            )
            health = health.model_copy(update={"state": "open", "open_until": until, "opened_at": iso()})
        return health


def _health(item: dict[str, Any]) -> CrmHealth:
    def text(name: str) -> str | None:
        value = item.get(name)
        return value["S"] if value and "S" in value else None

    def number(name: str) -> int:
        value = item.get(name)
        return int(value["N"]) if value and "N" in value else 0

    return CrmHealth.model_validate(
        {
            "state": text("state") or "closed",
            "consecutive_timeouts": number("consecutive_timeouts"),
            "reason": text("reason") or "",
            "opened_at": text("opened_at"),
            "open_until": number("open_until"),
            "last_timeout_at": text("last_timeout_at"),
            "last_success_at": text("last_success_at"),
        }
    )
