"""The thread index: what the router tracked or sent, keyed the ways a later message may refer to it.

Correlating a reply must not cost a Dataverse request per message, so every email the router
creates or sends leaves small items in the ledger, under the tenant's partition:
  REF#MID#<Message-ID>        a message we tracked, the id we gave mail we sent
  REF#SES#<SES MessageId>     the id SES assigned to mail we sent (its Message-ID host varies)
  REF#TOK#<tracking token>    mail we sent with a token in its subject
  REF#CONV#<Thread-Index>     a tracked message's conversation index (base64 of the raw bytes)
  REF#SUBJ#<hash>#<email id>  smart matching: subject-word hash, with the participants' hashes
Each holds the CRM email id and its regarding record. The org's own `messageid` and
`trackingtoken` columns stay the fallback for mail the router never saw.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emailrouter.clock import epoch
from emailrouter.crm.emails import Regarding

if TYPE_CHECKING:
    from emailrouter.ledger.store import Ledger

REF_TTL_SECONDS = 400 * 24 * 3600  # replies come late; the org's columns remain the fallback


@dataclass(frozen=True, slots=True)
class ThreadRef:
    """A CRM email a later message can correlate to."""

    email_id: str
    regarding: Regarding | None = None
    addresses: tuple[str, ...] = ()  # participant hashes (smart matching only)
    checked_at: int = 0  # epoch seconds when `regarding` was last known to match the CRM

    def values(self) -> dict[str, Any]:
        values: dict[str, Any] = {"email_id": self.email_id, "checked_at": self.checked_at or epoch()}
        if self.regarding is not None:
            values["regarding"] = {
                "logical_name": self.regarding.logical_name,
                "record_id": self.regarding.record_id,
                "entity_set": self.regarding.entity_set,
            }
        if self.addresses:
            values["addresses"] = list(self.addresses)
        return values

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> ThreadRef:
        regarding = item.get("regarding")
        return cls(
            str(item["email_id"]),
            Regarding(**{k: str(v) for k, v in regarding.items()}) if isinstance(regarding, dict) else None,
            tuple(str(a) for a in item.get("addresses", ())),
            int(item.get("checked_at", 0)),
        )


def _digest(value: str) -> str:
    # Keys stay short and free of odd characters whatever the header held.
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def message_id_key(message_id: str) -> str:
    return f"REF#MID#{_digest(message_id.strip().lower())}"


def ses_key(ses_message_id: str) -> str:
    """The id SES gave mail we sent, whatever amazonses.com host its Message-ID header names."""
    return f"REF#SES#{_digest(ses_message_id.strip().lower())}"


def token_key(token: str) -> str:
    return f"REF#TOK#{token.strip().upper()}"


def conversation_key(index: bytes) -> str:
    return f"REF#CONV#{_digest(base64.b64encode(index).decode('ascii'))}"


def subject_prefix(subject_hash: str) -> str:
    return f"REF#SUBJ#{subject_hash}#"


def ref_ops(ledger: Ledger, tenant_id: str, keys: list[str], ref: ThreadRef) -> list[dict[str, Any]]:
    """Transaction entries that point each of `keys` at `ref`."""
    return [
        {"Put": ledger.put_op(tenant_id, key, ref.values(), REF_TTL_SECONDS)} for key in dict.fromkeys(keys)
    ]


def record_refs(ledger: Ledger, tenant_id: str, keys: list[str], ref: ThreadRef) -> None:
    """Point `keys` at `ref` now (the outbound path, one email at a time)."""
    ledger.put_many([op["Put"] for op in ref_ops(ledger, tenant_id, keys, ref)])


def find_subject_refs(ledger: Ledger, tenant_id: str, subject_hash: str, limit: int = 50) -> list[ThreadRef]:
    """Recent emails whose subject hashes to `subject_hash` (smart matching candidates)."""
    return [
        ThreadRef.from_item(item)
        for item in ledger.query_prefix(tenant_id, subject_prefix(subject_hash), limit)
    ]
