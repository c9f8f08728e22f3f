"""The objects a warm Lambda container keeps, built once from the settings.

Handlers call `get_runtime()`; the local runner and tests call `reset_runtime()` after changing
the environment, so the next call builds clients for the new endpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import boto3
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig
from botocore.config import Config

from emailrouter import aws
from emailrouter.config import Settings, get_settings
from emailrouter.crm.breaker import CrmBreaker
from emailrouter.crm.connections import CrmConnections
from emailrouter.crm.party_cache import PartyCache
from emailrouter.ledger.store import Ledger
from emailrouter.outbound.send import OutboundSender
from emailrouter.outbound.ses import SesSender
from emailrouter.queues.rawstore import RawMailStore
from emailrouter.queues.sender import QueueSender
from emailrouter.routing.deliver import InboundDelivery, TenantCache
from emailrouter.routing.faults import NO_FAULTS, FaultPoints
from emailrouter.sources.poller import MailboxPoller
from emailrouter.tenancy.secrets import TenantSecrets
from emailrouter.tenancy.store import TenantStore


@dataclass
class Runtime:
    settings: Settings
    faults: FaultPoints = field(default=NO_FAULTS)

    @cached_property
    def tenants(self) -> TenantStore:
        return TenantStore(self.settings.tenants_table)

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.settings.ledger_table)

    @cached_property
    def raw_store(self) -> RawMailStore:
        return RawMailStore(self.settings.raw_mail_bucket)

    @cached_property
    def queue(self) -> QueueSender:
        return QueueSender()

    @cached_property
    def secrets(self) -> TenantSecrets:
        return TenantSecrets()

    @cached_property
    def crm(self) -> CrmConnections:
        table = self.settings.party_cache_table
        party_cache = PartyCache(table) if table else None
        return CrmConnections(self.secrets, allow_private=self.settings.local_mode, party_cache=party_cache)

    @cached_property
    def breaker(self) -> CrmBreaker:
        return CrmBreaker(self.settings.tenants_table)

    @cached_property
    def region(self) -> str:
        return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"

    @cached_property
    def idempotency(self) -> IdempotencyKit:
        persistence = DynamoDBPersistenceLayer(
            table_name=self.settings.idempotency_table, boto3_client=aws.client("dynamodb")
        )
        return IdempotencyKit(persistence, IdempotencyConfig(expires_after_seconds=24 * 3600))

    def register_context(self, context: Any) -> None:
        """Lets idempotency records expire with the invocation when it dies mid-way."""
        self.idempotency.config.register_lambda_context(context)

    @cached_property
    def tenant_cache(self) -> TenantCache:
        """Tenant configuration as a warm worker reads it: re-read at most every 30 s."""
        return TenantCache(self.tenants)

    @cached_property
    def delivery(self) -> InboundDelivery:
        return InboundDelivery(self.tenant_cache, self.ledger, self.raw_store, self.crm, self.faults)

    @cached_property
    def poller(self) -> MailboxPoller:
        return MailboxPoller(
            self.settings, self.tenants, self.ledger, self.raw_store, self.queue, self.secrets, self.crm
        )

    @cached_property
    def outbound(self) -> OutboundSender:
        # One attempt only: botocore's automatic retry of a dropped connection could send twice.
        ses = boto3.client("sesv2", config=Config(retries={"total_max_attempts": 1}, read_timeout=30))
        sender = SesSender(ses, configuration_set=self.settings.ses_configuration_set or None)
        return OutboundSender(self.crm, self.ledger, sender, self.region, self.faults, sending=self.tenants)


@dataclass
class IdempotencyKit:
    persistence: DynamoDBPersistenceLayer
    config: IdempotencyConfig


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime(get_settings())
    return _runtime


def reset_runtime(faults: FaultPoints | None = None) -> Runtime:
    """Forget cached settings and clients (the local stack and tests change the environment)."""
    global _runtime
    get_settings.cache_clear()
    _runtime = Runtime(get_settings(), faults or NO_FAULTS)
    return _runtime
