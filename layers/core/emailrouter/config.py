"""Settings resolved once per cold start: explicit argument, then environment, then default."""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import BaseModel, Field


class Settings(BaseModel):
    """Names of the deployed resources and the mode the code runs in.

    Every Lambda function gets these as environment variables from template.yaml; the local
    stack sets the same variables from the resources it created out of that template.
    """

    tenants_table: str = Field(default="emailrouter-tenants")
    ledger_table: str = Field(default="emailrouter-ledger")
    idempotency_table: str = Field(default="emailrouter-idempotency")
    # Empty: party answers are cached in each container's memory only.
    party_cache_table: str = ""
    raw_mail_bucket: str = Field(default="emailrouter-raw-mail")
    poll_jobs_queue_url: str = ""
    inbound_queue_url: str = ""
    outbound_queue_url: str = ""
    ses_configuration_set: str = ""
    # Read by send_outbound before it resends an interrupted send (outbound/event_backlog.py).
    ses_events_queue_url: str = ""
    ses_events_dlq_url: str = ""
    # Secrets Manager id of the key that signs X-EmailRouter-Id (outbound/router_id.py).
    router_id_key_secret: str = ""
    local_mode: bool = False
    inline_max_bytes: int = 192 * 1024
    raw_mail_retention_days: int = 30
    # The CRM circuit breaker (crm.breaker): consecutive timeouts that open it, and for how long.
    crm_breaker_threshold: int = Field(default=3, ge=1)
    crm_breaker_cooldown_seconds: int = Field(default=300, ge=1)
    # Queued inbound mail of a disabled tenant goes back to its queue for this long (SQS: ≤ 900 s).
    disabled_tenant_retry_seconds: int = Field(default=900, ge=0, le=900)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        source = os.environ if env is None else env
        values: dict[str, object] = {}
        for name in cls.model_fields:
            key = name.upper()
            if key in source:
                values[name] = source[key]
        return cls.model_validate(values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings.from_env()
