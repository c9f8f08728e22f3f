"""Which messages are tracked: auto-generated mail, and the mailbox's tracking option."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emailrouter.tenancy.models import TrackingOption

if TYPE_CHECKING:
    from emailrouter.crm.parties import PartyMatch
    from emailrouter.mime.models import ParsedMessage

CRM_RECORD_KINDS = {"contact", "account", "lead"}


def auto_generated_reason(message: ParsedMessage) -> str | None:
    """RFC 3834 Auto-Submitted, Exchange's X-Auto-Response-Suppress, bulk Precedence."""
    headers = {key.lower(): value.strip().lower() for key, value in message.headers.items()}
    auto = headers.get("auto-submitted", "")
    if auto and auto != "no":
        return f"auto-generated (Auto-Submitted: {auto})"
    if headers.get("precedence") in {"bulk", "junk", "list"}:
        return f"auto-generated (Precedence: {headers['precedence']})"
    return None


def tracking_reason(
    option: TrackingOption, is_response: bool, sender_matches: tuple[PartyMatch, ...]
) -> str | None:
    """None when the message is tracked under `option`; otherwise the filter reason."""
    match option:
        case TrackingOption.ALL:
            return None
        case TrackingOption.NONE:
            return "tracking option: none"
        case TrackingOption.RESPONSES:
            return None if is_response else "not a response to CRM email"
        case TrackingOption.FROM_CRM_RECORDS:
            if any(m.logical_name in CRM_RECORD_KINDS for m in sender_matches):
                return None
            return "sender is not a CRM lead, contact or account"
        case TrackingOption.FROM_EMAIL_ENABLED:
            return None if sender_matches else "sender is not an email-enabled CRM record"
    return None
