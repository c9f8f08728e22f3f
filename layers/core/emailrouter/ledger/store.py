"""The ledger table: one item per message per tenant; conditional writes make each step idempotent.

Layout (pk / sk), all under the tenant's partition:
  TENANT#<id> / MSG#<message_key>            inbound message: claim, outcome, CRM id
  TENANT#<id> / SRC#<mailbox>#<source_ref>   which message a source ref carried; ack state
    (IMAP refs are <uidvalidity>:<uid>; refs stored before that are bare UIDs, still read:
    their deletions are checked by the Message-ID of their message)
  TENANT#<id> / OUT#<email_id>               outbound email: intent, SES ids, state
  TENANT#<id> / SUPP#<address>               suppressed recipient, until expires_at
  TENANT#<id> / LEASE#<name>                 one worker at a time (e.g. poll#<mailbox>), until lease_expires
The GSI `by_outcome` (gsi1pk = TENANT#<id>#<outcome>, gsi1sk = updated_at) lists by outcome.
"""

from __future__ import annotations

import contextlib
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from emailrouter import aws
from emailrouter.clock import epoch, iso
from emailrouter.config import get_settings
from emailrouter.ledger.models import InboundRecord, OutboundRecord, OutboundState, Outcome, Suppression
from emailrouter.mime.addresses import within_smtp_limits
from emailrouter.sources.base import PendingDeletion

if TYPE_CHECKING:
    from collections.abc import Iterator

_SER = TypeSerializer()
_DE = TypeDeserializer()
RETENTION_SECONDS = 90 * 24 * 3600
SUPPRESSION_SECONDS = 90 * 24 * 3600  # the tenant's outbound.suppression_days by default


class ClaimBusyError(Exception):
    """Another worker holds a live claim on this message: try again later."""


def _pk(tenant_id: str) -> dict[str, str]:
    return {"S": f"TENANT#{tenant_id}"}


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _DE.deserialize(value) for key, value in item.items()}


def _values(values: dict[str, Any]) -> dict[str, Any]:
    return {key: _SER.serialize(value) for key, value in values.items()}


def _expired(item: dict[str, Any]) -> bool:
    """DynamoDB removes items some time after their TTL passes; until then they are ignored."""
    expires = item.get("expires_at", {}).get("N")
    return expires is not None and int(expires) <= epoch()


class Ledger:
    def __init__(self, table_name: str | None = None, client: Any | None = None) -> None:
        self._table = table_name or get_settings().ledger_table
        self._ddb = client or aws.client("dynamodb", validate=False)

    # ---- inbound -----------------------------------------------------------------------
    def claim_op(
        self, tenant_id: str, message_key: str, owner: str, ttl_seconds: int, attrs: dict[str, Any]
    ) -> dict[str, Any]:
        """The conditional update that claims a message: new, a stale claim, or our own claim."""
        now = epoch()
        names = {"#st": "status"}
        values = {
            ":claimed": "claimed",
            ":owner": owner,
            ":now": now,
            ":expires": now + ttl_seconds,
            ":zero": 0,
            ":one": 1,
            ":ts": iso(),
            ":tenant": tenant_id,
            ":ttl": now + RETENTION_SECONDS,
        }
        sets = [
            "#st = :claimed",
            "claim_owner = :owner",
            "claim_expires = :expires",
            "attempts = if_not_exists(attempts, :zero) + :one",
            "created_at = if_not_exists(created_at, :ts)",
            "updated_at = :ts",
            "tenant_id = :tenant",
            "expires_at = :ttl",
        ]
        for index, (key, value) in enumerate(attrs.items()):
            if value is None:
                continue
            names[f"#a{index}"] = key
            values[f":a{index}"] = value
            sets.append(f"#a{index} = if_not_exists(#a{index}, :a{index})")
        return {
            "TableName": self._table,
            "Key": {"pk": _pk(tenant_id), "sk": {"S": f"MSG#{message_key}"}},
            "UpdateExpression": "SET " + ", ".join(sets),
            "ConditionExpression": (
                "attribute_not_exists(pk) OR (#st = :claimed AND (claim_owner = :owner OR claim_expires < :now))"
            ),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": _values(values),
        }

    def claim(
        self,
        tenant_id: str,
        message_key: str,
        owner: str,
        ttl_seconds: int,
        attrs: dict[str, Any],
    ) -> tuple[InboundRecord | None, InboundRecord | None]:
        """Claim a message for processing.

        Returns (claimed, finished): `claimed` is the record when this worker now owns it
        (new, or a stale claim / our own earlier claim taken over); `finished` is the
        existing record when the message already has an outcome. Raises ClaimBusyError when
        another live worker owns it.
        """
        try:
            response = self._ddb.update_item(
                **self.claim_op(tenant_id, message_key, owner, ttl_seconds, attrs), ReturnValues="ALL_NEW"
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            existing = self.get(tenant_id, message_key)
            if existing is not None and existing.status == "done":
                return None, existing
            raise ClaimBusyError(f"message {message_key} is being processed by another worker") from None
        return self._inbound(response["Attributes"]), None

    def claim_many(
        self, claims: list[tuple[str, str, str, dict[str, Any]]], ttl_seconds: int
    ) -> list[InboundRecord | ClaimBusyError | None]:
        """Claim (tenant_id, message_key, owner, attrs) for each message, in one transaction when
        all can be claimed. Per message: None when claimed now, the finished record when it
        already has an outcome, ClaimBusyError when another live worker holds it."""
        ops = [self.claim_op(t, k, o, ttl_seconds, a) for t, k, o, a in claims]
        if len(ops) > 1 and self.transact([{"Update": op} for op in ops]):
            return [None] * len(ops)
        results: list[InboundRecord | ClaimBusyError | None] = []
        for tenant_id, key, owner, attrs in claims:
            try:
                _claimed, finished = self.claim(tenant_id, key, owner, ttl_seconds, attrs)
                results.append(finished)
            except ClaimBusyError as busy:
                results.append(busy)
        return results

    def complete_op(
        self,
        tenant_id: str,
        message_key: str,
        owner: str,
        outcome: Outcome,
        reason: str = "",
        crm_email_id: str | None = None,
        correlation: str | None = None,
        raw_s3_key: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The conditional update that records an outcome: only the claim's owner may, once."""
        ts = iso()
        values: dict[str, Any] = {
            ":done": "done",
            ":claimed": "claimed",
            ":owner": owner,
            ":outcome": outcome.value,
            ":reason": reason,
            ":ts": ts,
            ":g1": f"TENANT#{tenant_id}#{outcome.value}",
        }
        sets = ["#st = :done", "outcome = :outcome", "reason = :reason", "updated_at = :ts"]
        sets += ["gsi1pk = :g1", "gsi1sk = :ts"]
        fields = {"crm_email_id": crm_email_id, "correlation": correlation, "raw_s3_key": raw_s3_key}
        for name, value in {**fields, **(extra or {})}.items():
            if value is not None:
                sets.append(f"{name} = :{name}")
                values[f":{name}"] = value
        return {
            "TableName": self._table,
            "Key": {"pk": _pk(tenant_id), "sk": {"S": f"MSG#{message_key}"}},
            "UpdateExpression": "SET " + ", ".join(sets) + " REMOVE claim_owner, claim_expires",
            "ConditionExpression": "#st = :claimed AND claim_owner = :owner",
            "ExpressionAttributeNames": {"#st": "status"},
            "ExpressionAttributeValues": _values(values),
        }

    def complete(
        self,
        tenant_id: str,
        message_key: str,
        owner: str,
        outcome: Outcome,
        reason: str = "",
        crm_email_id: str | None = None,
        correlation: str | None = None,
        raw_s3_key: str | None = None,
    ) -> None:
        """Record the outcome; only the claim's owner may, and only once."""
        self._ddb.update_item(
            **self.complete_op(
                tenant_id, message_key, owner, outcome, reason, crm_email_id, correlation, raw_s3_key
            )
        )

    def set_attributes(self, tenant_id: str, message_key: str, values: dict[str, Any]) -> None:
        """Update bookkeeping attributes of a finished message (e.g. the mailboxes it reached)."""
        names = {f"#v{i}": name for i, name in enumerate(values)}
        self._ddb.update_item(
            TableName=self._table,
            Key={"pk": _pk(tenant_id), "sk": {"S": f"MSG#{message_key}"}},
            UpdateExpression="SET " + ", ".join(f"#v{i} = :v{i}" for i in range(len(values))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=_values({f":v{i}": v for i, v in enumerate(values.values())}),
        )

    # ---- several items at once -----------------------------------------------------------
    def transact(self, items: list[dict[str, Any]]) -> bool:
        """Write `items` (TransactWriteItems entries) all or none; False when a condition failed."""
        for start in range(0, len(items), 100):
            try:
                self._ddb.transact_write_items(TransactItems=items[start : start + 100])
            except self._ddb.exceptions.TransactionCanceledException:
                return False
        return True

    def put_many(self, items: list[dict[str, Any]]) -> None:
        """Unconditional puts (`put_op` results), 25 per BatchWriteItem, retried while unprocessed."""
        for start in range(0, len(items), 25):
            request: dict[str, Any] = {
                self._table: [{"PutRequest": {"Item": op["Item"]}} for op in items[start : start + 25]]
            }
            for _attempt in range(8):
                response = self._ddb.batch_write_item(RequestItems=request)
                request = response.get("UnprocessedItems") or {}
                if not request:
                    break
            else:
                raise ClaimBusyError("the ledger left items unwritten after repeated attempts")

    def query_prefix(self, tenant_id: str, prefix: str, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` items of the tenant whose sk starts with `prefix`, newest sk last."""
        response = self._ddb.query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
            ExpressionAttributeValues={":pk": _pk(tenant_id), ":p": {"S": prefix}},
            Limit=limit,
        )
        return [_plain(item) for item in response.get("Items", [])]

    def _items_with_prefix(
        self, tenant_id: str, prefix: str, *, ack_pending: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Every item of the tenant whose sk starts with `prefix` (all pages); with `ack_pending`,
        only source records still owed a deletion at the source."""
        extra: dict[str, Any] = {}
        values: dict[str, Any] = {":pk": _pk(tenant_id), ":p": {"S": prefix}}
        if ack_pending:
            extra["FilterExpression"] = "ack_pending = :t"
            values[":t"] = {"BOOL": True}
        for page in self._ddb.get_paginator("query").paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
            ExpressionAttributeValues=values,
            **extra,
        ):
            yield from page.get("Items", [])

    def get_many(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """Items by (tenant_id, sk), read together (BatchGetItem, 100 keys per call)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for start in range(0, len(wanted), 100):
            request: dict[str, Any] = {
                self._table: {
                    "Keys": [{"pk": _pk(t), "sk": {"S": sk}} for t, sk in wanted[start : start + 100]],
                    "ConsistentRead": True,
                }
            }
            for _attempt in range(8):
                response = self._ddb.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self._table, []):
                    plain = _plain(item)
                    found[(plain["pk"].removeprefix("TENANT#"), plain["sk"])] = plain
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
            else:
                raise ClaimBusyError("the ledger left keys unread after repeated attempts")
        return found

    def reopen(self, tenant_id: str, message_key: str, owner: str, ttl_seconds: int) -> InboundRecord:
        """Take a finished (quarantined) message back for a replay; the replay is itself claimed once."""
        now = epoch()
        response = self._ddb.update_item(
            TableName=self._table,
            Key={"pk": _pk(tenant_id), "sk": {"S": f"MSG#{message_key}"}},
            UpdateExpression="SET #st = :claimed, claim_owner = :owner, claim_expires = :exp, updated_at = :ts",
            ConditionExpression="#st = :done AND outcome = :q AND attribute_not_exists(discarded_at)",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues=_values(
                {
                    ":claimed": "claimed",
                    ":owner": owner,
                    ":exp": now + ttl_seconds,
                    ":ts": iso(),
                    ":done": "done",
                    ":q": Outcome.QUARANTINED.value,
                }
            ),
            ReturnValues="ALL_NEW",
        )
        return self._inbound(response["Attributes"])

    def discard(self, tenant_id: str, message_key: str, reason: str) -> InboundRecord:
        """Close a quarantined message for good: no replay, its raw copy no longer referenced.
        Conditional on it still being quarantined and finished, so it runs once."""
        response = self._ddb.update_item(
            TableName=self._table,
            Key={"pk": _pk(tenant_id), "sk": {"S": f"MSG#{message_key}"}},
            UpdateExpression="SET discarded_at = :ts, updated_at = :ts, reason = :reason REMOVE raw_s3_key",
            ConditionExpression="#st = :done AND outcome = :q AND attribute_not_exists(discarded_at)",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues=_values(
                {":ts": iso(), ":reason": reason, ":done": "done", ":q": Outcome.QUARANTINED.value}
            ),
            ReturnValues="ALL_OLD",
        )
        return self._inbound(response["Attributes"])

    def get(self, tenant_id: str, message_key: str) -> InboundRecord | None:
        item = self._ddb.get_item(
            TableName=self._table,
            Key={"pk": _pk(tenant_id), "sk": {"S": f"MSG#{message_key}"}},
            ConsistentRead=True,
        ).get("Item")
        return self._inbound(item) if item else None

    def list_messages(self, tenant_id: str, outcome: Outcome | None = None) -> Iterator[InboundRecord]:
        paginator = self._ddb.get_paginator("query")
        if outcome is None:
            pages = paginator.paginate(
                TableName=self._table,
                KeyConditionExpression="pk = :pk AND begins_with(sk, :msg)",
                ExpressionAttributeValues={":pk": _pk(tenant_id), ":msg": {"S": "MSG#"}},
            )
        else:
            pages = paginator.paginate(
                TableName=self._table,
                IndexName="by_outcome",
                KeyConditionExpression="gsi1pk = :g",
                ExpressionAttributeValues={":g": {"S": f"TENANT#{tenant_id}#{outcome.value}"}},
            )
        for page in pages:
            for item in page.get("Items", []):
                yield self._inbound(item)

    @staticmethod
    def _inbound(item: dict[str, Any]) -> InboundRecord:
        data = _plain(item)
        data["message_key"] = data["sk"].removeprefix("MSG#")
        data["attempts"] = int(data.get("attempts", 0))
        fields = InboundRecord.model_fields
        return InboundRecord.model_validate({k: v for k, v in data.items() if k in fields})

    # ---- source acknowledgement ------------------------------------------------------------
    def source_op(
        self,
        tenant_id: str,
        mailbox_id: str,
        source_ref: str,
        message_key: str,
        ack_needed: bool,
        identity: str | None = None,
    ) -> dict[str, Any]:
        """The put that records which message a source ref carried, and whether to delete it there.

        `identity` (the header hash taken when it was fetched) lets the source check, before
        deleting, that the ref still names that message."""
        values: dict[str, Any] = {
            "pk": f"TENANT#{tenant_id}",
            "sk": f"SRC#{mailbox_id}#{source_ref}",
            "tenant_id": tenant_id,
            "message_key": message_key,
            "ack_pending": ack_needed,
            "updated_at": iso(),
            "expires_at": epoch() + RETENTION_SECONDS,
        }
        if identity is not None:
            values["source_identity"] = identity
        return {"TableName": self._table, "Item": _values(values)}

    def record_source(
        self,
        tenant_id: str,
        mailbox_id: str,
        source_ref: str,
        message_key: str,
        ack_needed: bool,
        identity: str | None = None,
    ) -> None:
        self._ddb.put_item(
            **self.source_op(tenant_id, mailbox_id, source_ref, message_key, ack_needed, identity)
        )

    def pending_acks(self, tenant_id: str, mailbox_id: str) -> list[str]:
        """Source refs processed to an outcome but not yet deleted at the source."""
        prefix = f"SRC#{mailbox_id}#"
        return [
            item["sk"]["S"].removeprefix(prefix)
            for item in self._items_with_prefix(tenant_id, prefix, ack_pending=True)
        ]

    def pending_deletions(self, tenant_id: str, mailbox_id: str) -> list[PendingDeletion]:
        """Like `pending_acks`, with what each message looked like when fetched. Items recorded
        before identities were kept fall back to their message's Message-ID."""
        prefix = f"SRC#{mailbox_id}#"
        items = [_plain(item) for item in self._items_with_prefix(tenant_id, prefix, ack_pending=True)]
        legacy = [
            (tenant_id, f"MSG#{item['message_key']}") for item in items if "source_identity" not in item
        ]
        messages = self.get_many(legacy) if legacy else {}
        pending: list[PendingDeletion] = []
        for item in items:
            message = messages.get((tenant_id, f"MSG#{item['message_key']}"), {})
            pending.append(
                PendingDeletion(
                    source_ref=item["sk"].removeprefix(prefix),
                    identity=item.get("source_identity"),
                    message_id=None if "source_identity" in item else message.get("message_id"),
                )
            )
        return pending

    def deletions_dropped(self, tenant_id: str, mailbox_id: str, reasons: dict[str, str]) -> None:
        """Deletions that must never run (the ref may now name another message): recorded, not retried."""
        for ref, reason in reasons.items():
            self._ddb.update_item(
                TableName=self._table,
                Key={"pk": _pk(tenant_id), "sk": {"S": f"SRC#{mailbox_id}#{ref}"}},
                UpdateExpression="SET ack_pending = :f, ack_dropped = :why, updated_at = :ts",
                ExpressionAttributeValues=_values({":f": False, ":why": reason[:500], ":ts": iso()}),
            )

    def release_source(self, tenant_id: str, mailbox_id: str, source_ref: str) -> bool:
        """Let a kept source ref be deleted at the source (a discarded quarantine); False when
        no source record exists for it."""
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key={"pk": _pk(tenant_id), "sk": {"S": f"SRC#{mailbox_id}#{source_ref}"}},
                UpdateExpression="SET ack_pending = :t, updated_at = :ts",
                ConditionExpression="attribute_exists(sk)",
                ExpressionAttributeValues=_values({":t": True, ":ts": iso()}),
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def acknowledged(self, tenant_id: str, mailbox_id: str, source_refs: list[str]) -> None:
        for ref in source_refs:
            self._ddb.update_item(
                TableName=self._table,
                Key={"pk": _pk(tenant_id), "sk": {"S": f"SRC#{mailbox_id}#{ref}"}},
                UpdateExpression="SET ack_pending = :f, acked_at = :ts",
                ExpressionAttributeValues=_values({":f": False, ":ts": iso()}),
            )

    # ---- leases ------------------------------------------------------------------------
    def take_lease(self, tenant_id: str, name: str, owner: str, ttl_seconds: int) -> bool:
        """Hold the lease `name` for `ttl_seconds`; False while another owner holds it live."""
        now = epoch()
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key={"pk": _pk(tenant_id), "sk": {"S": f"LEASE#{name}"}},
                UpdateExpression="SET lease_owner = :owner, lease_expires = :exp, expires_at = :exp, tenant_id = :t",
                ConditionExpression="attribute_not_exists(pk) OR lease_expires < :now OR lease_owner = :owner",
                ExpressionAttributeValues=_values(
                    {":owner": owner, ":exp": now + ttl_seconds, ":now": now, ":t": tenant_id}
                ),
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def release_lease(self, tenant_id: str, name: str, owner: str) -> None:
        """Give the lease back, if `owner` still holds it."""
        with contextlib.suppress(self._ddb.exceptions.ConditionalCheckFailedException):
            self._ddb.delete_item(
                TableName=self._table,
                Key={"pk": _pk(tenant_id), "sk": {"S": f"LEASE#{name}"}},
                ConditionExpression="lease_owner = :owner",
                ExpressionAttributeValues=_values({":owner": owner}),
            )

    # ---- outbound ----------------------------------------------------------------------
    def _out_key(self, tenant_id: str, email_id: str) -> dict[str, Any]:
        return {"pk": _pk(tenant_id), "sk": {"S": f"OUT#{email_id}"}}

    def get_outbound(self, tenant_id: str, email_id: str) -> OutboundRecord | None:
        item = self._ddb.get_item(
            TableName=self._table, Key=self._out_key(tenant_id, email_id), ConsistentRead=True
        ).get("Item")
        return self._outbound(item) if item else None

    def list_outbound(self, tenant_id: str) -> Iterator[OutboundRecord]:
        for item in self._items_with_prefix(tenant_id, "OUT#"):
            yield self._outbound(item)

    @staticmethod
    def _outbound(item: dict[str, Any]) -> OutboundRecord:
        data = _plain(item)
        data["attempts"] = int(data.get("attempts", 0))
        return OutboundRecord.model_validate(
            {k: v for k, v in data.items() if k in OutboundRecord.model_fields}
        )

    def enqueue_outbound(
        self, tenant_id: str, email_id: str, requeue_after_seconds: float, claim_seconds: int | None = None
    ) -> bool:
        """Record that a send job exists; False when one is already queued (no duplicate jobs).

        With `claim_seconds` the record is only a claim until `confirm_enqueued` says SQS has the
        job: a dispatch that dies before sending it holds the email back that long, not for
        `requeue_after_seconds`."""
        now = epoch()
        claim = "claim_expires = :claim" if claim_seconds is not None else "REMOVE claim_expires"
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=self._out_key(tenant_id, email_id),
                UpdateExpression=(
                    "SET #s = :queued, queued_epoch = :now, queued_at = :ts, updated_at = :ts, "
                    "tenant_id = :tenant, email_id = :email, expires_at = :ttl"
                    + (f", {claim}" if claim_seconds is not None else f" {claim}")
                ),
                ConditionExpression=(
                    "attribute_not_exists(pk) OR "
                    "(#s = :queued AND (queued_epoch < :stale OR claim_expires < :now))"
                ),
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues=_values(
                    {
                        ":queued": OutboundState.QUEUED.value,
                        ":now": now,
                        ":stale": int(now - requeue_after_seconds),
                        ":ts": iso(),
                        ":tenant": tenant_id,
                        ":email": email_id,
                        ":ttl": now + RETENTION_SECONDS,
                    }
                    | ({":claim": now + claim_seconds} if claim_seconds is not None else {})
                ),
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def confirm_enqueued(self, tenant_id: str, email_id: str) -> None:
        """SQS has the job claimed by `enqueue_outbound`: no other job for the requeue delay.
        A worker that already took the job has moved its state on: nothing to confirm then."""
        with contextlib.suppress(self._ddb.exceptions.ConditionalCheckFailedException):
            self._ddb.update_item(
                TableName=self._table,
                Key=self._out_key(tenant_id, email_id),
                UpdateExpression="SET queued_epoch = :now REMOVE claim_expires",
                ConditionExpression="#s = :queued",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues=_values({":now": epoch(), ":queued": OutboundState.QUEUED.value}),
            )

    def release_queued(self, tenant_id: str, email_id: str) -> None:
        """A queued job that will not be worked (its tenant was disabled): the next dispatch may
        queue the email again at once."""
        with contextlib.suppress(self._ddb.exceptions.ConditionalCheckFailedException):
            self._ddb.update_item(
                TableName=self._table,
                Key=self._out_key(tenant_id, email_id),
                UpdateExpression="SET claim_expires = :zero",
                ConditionExpression="#s = :queued",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues=_values({":zero": 0, ":queued": OutboundState.QUEUED.value}),
            )

    def begin_send(self, tenant_id: str, email_id: str, message_id: str) -> bool:
        """Record the intent to send, before calling SES. False when a send was already begun."""
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=self._out_key(tenant_id, email_id),
                UpdateExpression=(
                    "SET #s = :sending, message_id = :mid, intent_at = :ts, intent_epoch = :now, updated_at = :ts, "
                    "attempts = if_not_exists(attempts, :zero) + :one, tenant_id = :tenant, email_id = :email"
                ),
                ConditionExpression="attribute_not_exists(pk) OR #s = :queued",
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues=_values(
                    {
                        ":sending": OutboundState.SENDING.value,
                        ":queued": OutboundState.QUEUED.value,
                        ":mid": message_id,
                        ":ts": iso(),
                        ":now": epoch(),
                        ":zero": 0,
                        ":one": 1,
                        ":tenant": tenant_id,
                        ":email": email_id,
                    }
                ),
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def _transition(
        self, tenant_id: str, email_id: str, to: OutboundState, allowed: list[OutboundState], **attrs: Any
    ) -> bool:
        names = {"#s": "state"}
        values: dict[str, Any] = {":to": to.value, ":ts": iso()}
        sets = ["#s = :to", "updated_at = :ts"]
        for index, (key, value) in enumerate(attrs.items()):
            names[f"#k{index}"] = key
            values[f":k{index}"] = value
            sets.append(f"#k{index} = :k{index}")
        allowed_keys = []
        for index, state in enumerate(allowed):
            values[f":from{index}"] = state.value
            allowed_keys.append(f":from{index}")
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=self._out_key(tenant_id, email_id),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression=f"#s IN ({', '.join(allowed_keys)})",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=_values(values),
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def record_sent(
        self, tenant_id: str, email_id: str, ses_message_id: str, ses_header_message_id: str
    ) -> bool:
        return self._transition(
            tenant_id,
            email_id,
            OutboundState.SENT,
            [OutboundState.SENDING],
            ses_message_id=ses_message_id,
            ses_header_message_id=ses_header_message_id,
        )

    def release_send(self, tenant_id: str, email_id: str, reason: str, *, counts_as_attempt: bool) -> bool:
        """Nothing was sent (SES throttled, or proven not accepted): back to queued for a retry.
        Throttling is not a failed attempt, so it gives the attempt back."""
        if not counts_as_attempt:
            record = self.get_outbound(tenant_id, email_id)
            attempts = max(0, (record.attempts if record else 1) - 1)
            return self._transition(
                tenant_id,
                email_id,
                OutboundState.QUEUED,
                [OutboundState.SENDING],
                reason=reason,
                attempts=attempts,
            )
        return self._transition(
            tenant_id, email_id, OutboundState.QUEUED, [OutboundState.SENDING], reason=reason
        )

    def requeue_stuck(self, tenant_id: str, email_id: str, stale_after_seconds: float) -> bool:
        """A send job for an email left in Sending by an interrupted worker (intent recorded, or
        sent but not yet marked Sent) once its intent is older than the sending-status delay; at
        most one such job per delay period."""
        now = epoch()
        stale = now - stale_after_seconds
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=self._out_key(tenant_id, email_id),
                UpdateExpression="SET requeued_epoch = :now, updated_at = :ts",
                ConditionExpression=(
                    "#s IN (:sending, :sent) AND intent_epoch < :stale AND "
                    "(attribute_not_exists(requeued_epoch) OR requeued_epoch < :stale)"
                ),
                ExpressionAttributeNames={"#s": "state"},
                ExpressionAttributeValues=_values(
                    {
                        ":now": now,
                        ":ts": iso(),
                        ":sending": OutboundState.SENDING.value,
                        ":sent": OutboundState.SENT.value,
                        ":stale": Decimal(str(stale)),
                    }
                ),
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def intent_age_seconds(self, tenant_id: str, email_id: str) -> float | None:
        item = self._ddb.get_item(
            TableName=self._table, Key=self._out_key(tenant_id, email_id), ConsistentRead=True
        ).get("Item")
        if not item or "intent_epoch" not in item:
            return None
        return float(epoch() - int(item["intent_epoch"]["N"]))

    # ---- windowed counters ---------------------------------------------------------------
    @staticmethod
    def counter_key(name: str, window_seconds: int) -> tuple[str, int]:
        """(sk, expiry) of the counter `name` in the current fixed window."""
        window = epoch() // window_seconds
        return f"COUNT#{name}#{window}", (window + 2) * window_seconds

    def counter_op(self, tenant_id: str, sk: str, expires_at: int, amount: int) -> dict[str, Any]:
        """The update that adds `amount` to a windowed counter (for a transaction)."""
        return {
            "TableName": self._table,
            "Key": {"pk": _pk(tenant_id), "sk": {"S": sk}},
            "UpdateExpression": "ADD #n :n SET tenant_id = :tenant, expires_at = :ttl",
            "ExpressionAttributeNames": {"#n": "count"},
            "ExpressionAttributeValues": _values({":n": amount, ":tenant": tenant_id, ":ttl": expires_at}),
        }

    def put_op(self, tenant_id: str, sk: str, values: dict[str, Any], ttl_seconds: int) -> dict[str, Any]:
        """An unconditional put of a bookkeeping item under the tenant (for a transaction)."""
        item = {"pk": f"TENANT#{tenant_id}", "sk": sk, "tenant_id": tenant_id, **values}
        item["expires_at"] = epoch() + ttl_seconds
        return {"TableName": self._table, "Item": _values(item)}

    # ---- tracking-token numbers ----------------------------------------------------------
    def _add(self, tenant_id: str, sk: str, attribute: str, expires_at: int | None = None) -> int:
        """Atomically add one to `attribute` of an item and return the new value."""
        sets = "tenant_id = :tenant" + (", expires_at = :ttl" if expires_at is not None else "")
        values: dict[str, Any] = {":one": 1, ":tenant": tenant_id}
        if expires_at is not None:
            values[":ttl"] = expires_at
        response = self._ddb.update_item(
            TableName=self._table,
            Key={"pk": _pk(tenant_id), "sk": {"S": sk}},
            UpdateExpression=f"ADD #n :one SET {sets}",
            ExpressionAttributeNames={"#n": attribute},
            ExpressionAttributeValues=_values(values),
            ReturnValues="UPDATED_NEW",
        )
        return int(response["Attributes"][attribute]["N"])

    def token_numbers(self, tenant_id: str, sender_id: str) -> tuple[int, int]:
        """(user number, counter) for the next tracking token of a sending user or queue.

        A sender gets its number once (an atomic sequence per tenant); each token takes the
        next value of that sender's counter. Both are atomic ADDs, so concurrent senders never
        share a token."""
        item = self._ddb.get_item(
            TableName=self._table,
            Key={"pk": _pk(tenant_id), "sk": {"S": f"TOKEN#SENDER#{sender_id}"}},
            ConsistentRead=True,
        ).get("Item")
        if item:
            user_number = int(item["user_number"]["N"])
        else:
            candidate = self._add(tenant_id, "TOKEN#SEQ", "next_user")
            try:
                self._ddb.put_item(
                    TableName=self._table,
                    Item=_values(
                        {
                            "pk": f"TENANT#{tenant_id}",
                            "sk": f"TOKEN#SENDER#{sender_id}",
                            "user_number": candidate,
                        }
                    ),
                    ConditionExpression="attribute_not_exists(pk)",
                )
                user_number = candidate
            except self._ddb.exceptions.ConditionalCheckFailedException:
                return self.token_numbers(tenant_id, sender_id)
        counter = self._add(tenant_id, f"TOKEN#SENDER#{sender_id}", "counter")
        return user_number, counter

    # ---- suppression ---------------------------------------------------------------------
    def suppress(
        self, tenant_id: str, address: str, reason: str, ttl_seconds: int = SUPPRESSION_SECONDS
    ) -> bool:
        """A recipient that hard-bounced or complained: the tenant stops sending to it for
        `ttl_seconds` (a later bounce starts the time again). An address beyond RFC 5321's
        limits is no recipient (and no valid key): not stored."""
        if not within_smtp_limits(address):
            return False
        self._ddb.put_item(
            TableName=self._table,
            Item=_values(
                {
                    "pk": f"TENANT#{tenant_id}",
                    "sk": f"SUPP#{address.lower()}",
                    "tenant_id": tenant_id,
                    "reason": reason[:300],
                    "updated_at": iso(),
                    "expires_at": epoch() + ttl_seconds,  # the table's TTL attribute
                }
            ),
        )
        return True

    def suppressed(self, tenant_id: str, addresses: list[str]) -> set[str]:
        wanted = sorted({a.lower() for a in addresses})
        found: set[str] = set()
        for start in range(0, len(wanted), 100):
            chunk = wanted[start : start + 100]
            response = self._ddb.batch_get_item(
                RequestItems={
                    self._table: {
                        "Keys": [{"pk": _pk(tenant_id), "sk": {"S": f"SUPP#{a}"}} for a in chunk],
                        "ProjectionExpression": "sk, expires_at",
                    }
                }
            )
            for item in response.get("Responses", {}).get(self._table, []):
                if not _expired(item):
                    found.add(item["sk"]["S"].removeprefix("SUPP#"))
        return found

    def list_suppressions(self, tenant_id: str) -> Iterator[Suppression]:
        """The tenant's suppressed recipients that have not expired, by address."""
        for item in self._items_with_prefix(tenant_id, "SUPP#"):
            if _expired(item):
                continue
            data = _plain(item)
            yield Suppression(
                tenant_id=tenant_id,
                address=str(data["sk"]).removeprefix("SUPP#"),
                reason=str(data.get("reason", "")),
                updated_at=str(data.get("updated_at", "")),
                expires_at=int(data["expires_at"]) if "expires_at" in data else None,
            )

    def lift_suppression(self, tenant_id: str, address: str) -> bool:
        """Send to `address` again; False when it was not suppressed (or had expired)."""
        if not within_smtp_limits(address):
            return False
        old = self._ddb.delete_item(
            TableName=self._table,
            Key={"pk": _pk(tenant_id), "sk": {"S": f"SUPP#{address.lower()}"}},
            ReturnValues="ALL_OLD",
        ).get("Attributes")
        return bool(old) and not _expired(old)

    def record_failed(self, tenant_id: str, email_id: str, reason: str) -> bool:
        return self._transition(
            tenant_id,
            email_id,
            OutboundState.FAILED,
            [OutboundState.QUEUED, OutboundState.SENDING],
            reason=reason,
        )

    def record_event(
        self, tenant_id: str, email_id: str, event: str, detail: str, ses_message_id: str = ""
    ) -> bool:
        """Attach an SES event to an outbound record; False when the router has no such record.
        Any event proves SES accepted the message: its id is kept as `accepted_ses_id`."""
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=self._out_key(tenant_id, email_id),
                UpdateExpression="SET last_event = :e, event_detail = :d, updated_at = :ts, accepted_ses_id = :sid",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=_values(
                    {":e": event, ":d": detail, ":ts": iso(), ":sid": ses_message_id or "unknown"}
                ),
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True
