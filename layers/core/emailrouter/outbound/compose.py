"""Read a CRM email with its parties and attachments (one request) into an OutboundEmail."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emailrouter.crm.client import entity_path
from emailrouter.crm.emails import BCC, CC, SENDER, TO
from emailrouter.crm.query import query_path
from emailrouter.outbound.errors import NoRecipientsError, RenderError
from emailrouter.outbound.models import OutboundAttachment, OutboundEmail, Recipient

if TYPE_CHECKING:
    from emailrouter.crm.client import DataverseClient

_ANNOTATIONS = {"Prefer": 'odata.include-annotations="*"'}
_RECORD_EMAIL = {
    "systemuser": ("systemusers", "internalemailaddress", "fullname"),
    "queue": ("queues", "emailaddress", "name"),
    "contact": ("contacts", "emailaddress1", "fullname"),
    "account": ("accounts", "emailaddress1", "name"),
    "lead": ("leads", "emailaddress1", "fullname"),
}


@dataclass
class CrmEmail:
    email_id: str
    etag: str
    statecode: int
    statuscode: int
    directioncode: bool
    row: dict[str, Any]


def read_email(client: DataverseClient, email_id: str) -> CrmEmail:
    row = client.get(
        f"emails({email_id})?$select=activityid,subject,description,statecode,statuscode,directioncode,"
        "messageid,trackingtoken,modifiedon,_regardingobjectid_value"
        "&$expand=email_activity_parties($select=participationtypemask,addressused,_partyid_value),"
        "email_activity_mime_attachment($select=filename,mimetype,body,attachmentcontentid)",
        headers=_ANNOTATIONS,
    )
    return CrmEmail(
        email_id=email_id,
        etag=str(row.get("@odata.etag", "")),
        statecode=int(row.get("statecode") or 0),
        statuscode=int(row.get("statuscode") or 0),
        directioncode=bool(row.get("directioncode", True)),
        row=row,
    )


def _recipient(client: DataverseClient, party: dict[str, Any]) -> Recipient:
    """The party's `addressused`, else its record's primary email (one extra read, rare)."""
    name = str(party.get("_partyid_value@OData.Community.Display.V1.FormattedValue") or "")
    address = str(party.get("addressused") or "").strip()
    if address:
        return Recipient(address, name)
    logical = party.get("_partyid_value@Microsoft.Dynamics.CRM.lookuplogicalname")
    record_id = party.get("_partyid_value")
    if logical in _RECORD_EMAIL and record_id:
        entity_set, column, name_column = _RECORD_EMAIL[str(logical)]
        record = client.get(query_path(entity_path(entity_set, str(record_id)), select=(column, name_column)))
        address = str(record.get(column) or "").strip()
        if address:
            return Recipient(address, str(record.get(name_column) or name))
    raise RenderError(f"party {logical or 'unresolved'} {record_id or ''} has no email address".strip())


def recipients_of(client: DataverseClient, email_id: str) -> list[Recipient]:
    """The email's To, Cc and Bcc recipients as a send reads them (one request, no bodies).
    Parties without a usable address are left out."""
    row = client.get(
        f"emails({email_id})?$select=activityid"
        "&$expand=email_activity_parties($select=participationtypemask,addressused,_partyid_value)",
        headers=_ANNOTATIONS,
    )
    found: list[Recipient] = []
    for party in row.get("email_activity_parties") or []:
        if int(party.get("participationtypemask") or 0) in (TO, CC, BCC):
            try:
                found.append(_recipient(client, party))
            except RenderError:
                continue
    return found


def to_outbound(client: DataverseClient, tenant_id: str, email: CrmEmail) -> OutboundEmail:
    row = email.row
    roles: dict[int, list[Recipient]] = {SENDER: [], TO: [], CC: [], BCC: []}
    for party in row.get("email_activity_parties") or []:
        mask = int(party.get("participationtypemask") or 0)
        if mask in roles:
            roles[mask].append(_recipient(client, party))
    if not roles[SENDER]:
        raise RenderError("the email has no sender party")
    if not (roles[TO] or roles[CC] or roles[BCC]):
        raise NoRecipientsError("the email has no recipients")
    attachments = [
        OutboundAttachment(
            filename=str(att.get("filename") or "attachment"),
            mimetype=str(att.get("mimetype") or "application/octet-stream"),
            content=base64.b64decode(att.get("body") or ""),
            content_id=att.get("attachmentcontentid") or None,
        )
        for att in row.get("email_activity_mime_attachment") or []
    ]
    return OutboundEmail(
        tenant_id=tenant_id,
        email_id=email.email_id,
        sender=roles[SENDER][0],
        subject=str(row.get("subject") or ""),
        html_body=str(row.get("description") or ""),
        to=roles[TO],
        cc=roles[CC],
        bcc=roles[BCC],
        attachments=attachments,
        tracking_token=row.get("trackingtoken") or None,
    )
