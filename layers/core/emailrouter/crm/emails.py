"""Email activities in Dataverse: the deep-insert body for a tracked message, and reads by id.

Assumption ([unconfirmed] in the fact sheet): statecode/statuscode are accepted on create, so a
received email is created as Completed/Received in one request instead of POST then PATCH.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emailrouter.crm import batch
from emailrouter.crm.errors import CrmConflictError, CrmError, CrmTransientError
from emailrouter.crm.parties import PartyMatch, party_bind
from emailrouter.crm.payload import AttachmentBody, encode_body
from emailrouter.crm.query import any_of, eq, guid, in_chunks, query_path
from emailrouter.mime.models import Address

if TYPE_CHECKING:
    from emailrouter.crm.client import DataverseClient
    from emailrouter.mime.models import ParsedMessage

SUBJECT_MAX = 800
MESSAGEID_MAX = 320
SENDER_MAX = 250
TORECIPIENTS_MAX = 500
ADDRESSUSED_MAX = 200
TRACKINGTOKEN_MAX = 50
MESSAGE_ID_ROWS = 100  # emails read per Message-ID lookup; the oldest win, so later copies may be cut

# participationtypemask values
SENDER, TO, CC, BCC = 1, 2, 3, 4
# email statuses
STATE_OPEN, STATE_COMPLETED = 0, 1
STATUS_DRAFT, STATUS_SENT, STATUS_RECEIVED, STATUS_PENDING_SEND, STATUS_SENDING, STATUS_FAILED = (
    1,
    3,
    4,
    6,
    7,
    8,
)
NOTIFY_ATTACHMENTS_NOT_SAVED, NOTIFY_TRUNCATED = 1, 2

_NAMESPACE = uuid.UUID("6f1c1a52-8a55-4a4e-9b55-2f8d7e0c3a10")


def email_id_for(tenant_id: str, message_key: str) -> str:
    """The activityid a tracked message gets: the same on every retry, so a retry cannot create twice."""
    return str(uuid.uuid5(_NAMESPACE, f"{tenant_id}/{message_key}"))


@dataclass(frozen=True, slots=True)
class Regarding:
    logical_name: str
    record_id: str
    entity_set: str


def _parties(
    role: int, addresses: list[Address], resolved: dict[str, tuple[PartyMatch, ...]]
) -> list[dict[str, Any]]:
    parties: list[dict[str, Any]] = []
    for address in addresses:
        matches = resolved.get(address.email, ())
        if not matches:
            parties.append({"participationtypemask": role, "addressused": address.email[:ADDRESSUSED_MAX]})
        for match in matches:
            parties.append({"participationtypemask": role, "addressused": address.email, **party_bind(match)})
    return parties


def incoming_email_body(
    email_id: str,
    message: ParsedMessage,
    resolved: dict[str, tuple[PartyMatch, ...]],
    regarding: Regarding | None,
    dropped_attachments: bool,
    *,
    sender: PartyMatch | None = None,
    extra_bcc: list[str] | None = None,
    tracking_token: str | None = None,
) -> dict[str, Any]:
    """The deep-insert body: email, its parties and attachments in one POST.

    `sender` is the record chosen for From (None leaves it unresolved); `extra_bcc` are tracked
    mailboxes the message reached without being named in its headers (Bcc, lists, forwarding)."""
    subject = message.subject
    notifications = 0
    if len(subject) > SUBJECT_MAX:
        subject = subject[:SUBJECT_MAX]
        notifications = NOTIFY_TRUNCATED
    if dropped_attachments:
        notifications = NOTIFY_ATTACHMENTS_NOT_SAVED
    parties: list[dict[str, Any]] = []
    if message.sender is not None:
        address = message.sender.email
        parties += _parties(SENDER, [message.sender], {address: (sender,) if sender else ()})
    parties += _parties(TO, message.to, resolved)
    parties += _parties(CC, message.cc, resolved)
    bcc = list(message.bcc) + [Address(a) for a in extra_bcc or ()]
    parties += _parties(BCC, bcc, resolved)
    body: dict[str, Any] = {
        "activityid": email_id,
        "subject": subject,
        "description": message.html_body,
        "directioncode": False,
        "statecode": STATE_COMPLETED,
        "statuscode": STATUS_RECEIVED,
        "sender": (message.sender.email if message.sender else "")[:SENDER_MAX],
        "torecipients": ";".join(a.email for a in message.to)[:TORECIPIENTS_MAX],
        "notifications": notifications,
        "email_activity_parties": parties,
    }
    if message.message_id:
        body["messageid"] = message.message_id[:MESSAGEID_MAX]
    if tracking_token:  # the organization's token found in the subject
        body["trackingtoken"] = tracking_token[:TRACKINGTOKEN_MAX]
    if message.thread_index:
        body["conversationindex"] = base64.b64encode(message.thread_index).decode("ascii")
    if message.attachments:
        body["email_activity_mime_attachment"] = [
            {
                "filename": attachment.filename[:255],
                "mimetype": attachment.mimetype[:256],
                "body": AttachmentBody(attachment.content),
                "objecttypecode": "email",
                **({"attachmentcontentid": attachment.content_id[:250]} if attachment.content_id else {}),
            }
            for attachment in message.attachments
        ]
    if regarding is not None:
        nav = f"regardingobjectid_{regarding.logical_name}_email@odata.bind"
        body[nav] = f"/{regarding.entity_set}({regarding.record_id})"
    return body


def bcc_parties(addresses: list[str], resolved: dict[str, tuple[PartyMatch, ...]]) -> list[dict[str, Any]]:
    """The Bcc party list for `addresses` (used when a later mailbox is added to an email)."""
    return _parties(BCC, [Address(a) for a in addresses], resolved)


def create_incoming_email(crm: DataverseClient, body: dict[str, Any]) -> tuple[str, bool]:
    """Create the email; returns (id, created). A 412 on our deterministic id means it exists."""
    try:
        response = crm.request(
            "POST", "emails", data=encode_body(body), headers={"Content-Type": "application/json"}
        )
        return response.entity_id or str(body["activityid"]), True
    except CrmConflictError as conflict:
        if conflict.code.lower() != "0x80040237":
            raise
        return str(body["activityid"]), False


def create_incoming_emails(
    crm: DataverseClient, bodies: list[dict[str, Any]]
) -> list[tuple[str, bool] | CrmError]:
    """Create several emails: one POST for one, else one `$batch` (each create still counts as an
    API request). Per email, in order: (id, created) or the error its create met. When the batch
    itself is refused for a reason other than load, each email is created on its own, so one bad
    message cannot hold back the others."""
    if len(bodies) == 1:
        try:
            return [create_incoming_email(crm, bodies[0])]
        except CrmTransientError:
            raise
        except CrmError as error:
            return [error]
    try:
        answers = batch.execute(crm, [batch.Operation("POST", "emails", body) for body in bodies])
    except CrmTransientError:
        raise
    except CrmError:
        return [item for body in bodies for item in create_incoming_emails(crm, [body])]
    results: list[tuple[str, bool] | CrmError] = []
    for body, answer in zip(bodies, answers, strict=True):
        if isinstance(answer, CrmConflictError) and answer.code.lower() == "0x80040237":
            results.append((str(body["activityid"]), False))
        elif isinstance(answer, CrmError):
            results.append(answer)
        else:
            results.append((answer.entity_id or str(body["activityid"]), True))
    return results


def regarding_by_email_ids(crm: DataverseClient, email_ids: list[str]) -> dict[str, Regarding | None]:
    """The current regarding record of each email that still exists (one GET per 50 ids)."""
    found: dict[str, Regarding | None] = {}
    for start in range(0, len(email_ids), 50):
        ors = " or ".join(f"activityid eq {guid(i)}" for i in email_ids[start : start + 50])
        body = crm.get(
            query_path("emails", select=("activityid", "_regardingobjectid_value"), filter=ors, top=50),
            headers={"Prefer": 'odata.include-annotations="Microsoft.Dynamics.CRM.lookuplogicalname"'},
        )
        for row in body.get("value", []):
            found[str(row["activityid"]).lower()] = regarding_of(row)
    return found


def find_by_message_ids(crm: DataverseClient, message_ids: list[str]) -> list[dict[str, Any]]:
    """Emails whose `messageid` is one of `message_ids` (oldest first), with their regarding record.

    An id longer than the column cannot be stored, so it is not asked for; the rest go in as few
    requests as the URL budget allows (long or non-ASCII ids make more of them)."""
    wanted = [m for m in dict.fromkeys(message_ids) if m and len(m) <= MESSAGEID_MAX]
    rows: list[dict[str, Any]] = []
    for chunk in in_chunks(wanted):
        body = crm.get(
            query_path(
                "emails",
                select=("activityid", "messageid", "createdon", "_regardingobjectid_value"),
                filter=any_of("messageid", chunk),
                orderby="createdon asc",
                top=MESSAGE_ID_ROWS,
            ),
            headers={"Prefer": 'odata.include-annotations="Microsoft.Dynamics.CRM.lookuplogicalname"'},
        )
        rows += body.get("value", [])
    return sorted(rows, key=lambda row: str(row.get("createdon") or "")) if len(rows) > 1 else rows


def find_by_tracking_token(crm: DataverseClient, token: str) -> list[dict[str, Any]]:
    """The oldest email carrying `token` (a list of at most one), with its regarding record."""
    body = crm.get(
        query_path(
            "emails",
            select=("activityid", "trackingtoken", "_regardingobjectid_value"),
            filter=eq("trackingtoken", token),
            orderby="createdon asc",
            top=1,
        ),
        headers={"Prefer": 'odata.include-annotations="Microsoft.Dynamics.CRM.lookuplogicalname"'},
    )
    return list(body.get("value", []))


SET_FOR = {
    "account": "accounts",
    "contact": "contacts",
    "lead": "leads",
    "incident": "incidents",
    "opportunity": "opportunities",
    "systemuser": "systemusers",
    "queue": "queues",
}


def regarding_of(row: dict[str, Any]) -> Regarding | None:
    record = row.get("_regardingobjectid_value")
    logical = row.get("_regardingobjectid_value@Microsoft.Dynamics.CRM.lookuplogicalname")
    if not record or not logical or logical not in SET_FOR:
        return None
    return Regarding(str(logical), str(record), SET_FOR[str(logical)])
