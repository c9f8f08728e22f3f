"""Create a contact for an unknown sender, as CRM's "automatically create records" does.

Only the creation: whether to create (mailbox setting, never for auto-generated mail, only when
the sender resolved to nothing) is the caller's decision, and so is invalidating the party
cache for the address afterwards.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

from emailrouter.crm.errors import CrmConflictError
from emailrouter.crm.parties import PartyMatch

if TYPE_CHECKING:
    from emailrouter.crm.client import DataverseClient

NAME_MAX = 50  # contact.firstname and contact.lastname
_DUPLICATE_RECORD = "0x80040237"
_NAMESPACE = uuid.UUID("d736c6bb-f2c3-4b26-8232-21c5b5c3466a")
_LOCAL_PART_SEPARATORS = re.compile(r"[._]+")


def contact_id_for(tenant_id: str, address: str) -> str:
    """The contactid an auto-created contact gets: the same on every retry, so a retry finds the
    contact it created instead of creating a second one."""
    return str(uuid.uuid5(_NAMESPACE, f"{tenant_id}/{address.strip().lower()}"))


def split_name(display_name: str, address: str) -> tuple[str, str]:
    """(firstname, lastname) from a display name, else from the address's local part.

    The first word is the first name and the rest the last name; ``Last, First`` is read the
    other way round. The last name is never empty (CRM requires it).

    Example:
        >>> split_name("Ann van der Berg", "ann@example.com")
        ('Ann', 'van der Berg')
        >>> split_name("Lee, Ann", "ann@example.com")
        ('Ann', 'Lee')
        >>> split_name("", "ann.lee@example.com")
        ('ann', 'lee')
    """
    name = " ".join(display_name.split()).strip("\"' ")
    if "@" in name:  # a display name that is an address says nothing about the person
        name = ""
    if "," in name:
        last, _, first = (part.strip() for part in name.partition(","))
        if first and last:
            return first[:NAME_MAX], last[:NAME_MAX]
        name = first or last
    words = name.split(" ") if name else []
    if not words:
        local = address.strip().split("@", 1)[0]
        words = [word for word in _LOCAL_PART_SEPARATORS.split(local) if word] or [local or address.strip()]
    if len(words) == 1:
        return "", words[0][:NAME_MAX]
    return words[0][:NAME_MAX], " ".join(words[1:])[:NAME_MAX]


def create_contact(client: DataverseClient, tenant_id: str, address: str, display_name: str) -> PartyMatch:
    """Create an active contact with `address` as emailaddress1; returns it as a party.

    Idempotent: the contactid is derived from tenant and address, and Dataverse's answer for an
    existing id (412 0x80040237) means an earlier attempt created it.

    Example:
        >>> create_contact(client, "contoso", "ann.lee@example.com", "Ann Lee")
        PartyMatch(logical_name='contact', entity_set='contacts', record_id='…')
    """
    contact_id = contact_id_for(tenant_id, address)
    firstname, lastname = split_name(display_name, address)
    body = {"contactid": contact_id, "emailaddress1": address.strip(), "lastname": lastname}
    if firstname:
        body["firstname"] = firstname
    try:
        client.create("contacts", body)
    except CrmConflictError as conflict:
        if conflict.code.lower() != _DUPLICATE_RECORD:
            raise
    return PartyMatch("contact", "contacts", contact_id)
