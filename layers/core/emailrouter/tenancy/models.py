"""A tenant's configuration: its CRM organization and the mailboxes the router serves for it."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Literal

import regex
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from emailrouter.tenancy.errors import MailboxNotFoundError

_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

# The largest message a shared worker takes: its memory grows by at most four times the message
# (bench: peak_rss_ratio_40mb, about 3.4) over a baseline near 130 MB, and the functions have 512 MB.
MAX_MESSAGE_BYTES_CEILING = 50 * 1024 * 1024
# Outside local mode (whose clock runs fast), an interrupted send waits at least this long for
# SES's event before it counts as not accepted and is sent again: above the outbound queue's
# visibility timeout (6 minutes), with room for SES events that arrive late.
MIN_SENDING_STATUS_DELAY_MINUTES = 10


class Protocol(StrEnum):
    POP3 = "pop3"
    IMAP = "imap"
    EWS = "ews"
    GRAPH = "graph"


class TrackingOption(StrEnum):
    """Which incoming messages become CRM emails (CRM's incomingemailfilteringmethod)."""

    ALL = "all"
    RESPONSES = "responses"  # responses to CRM email: the E-mail Router's default
    FROM_CRM_RECORDS = "crm_records"  # from leads, contacts and accounts
    FROM_EMAIL_ENABLED = "email_enabled"  # from any email-enabled record
    NONE = "none"


def _check_id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise ValueError(f"{what} must be lower-case letters, digits and dashes (max 63), got {value!r}")
    return value


class MailboxConfig(BaseModel):
    """One tracked mailbox. Credentials are referenced by Secrets Manager name, never inlined."""

    model_config = ConfigDict(extra="forbid")

    mailbox_id: str
    address: str
    protocol: Protocol
    host: str = ""
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Literal["none", "ssl", "starttls"] = "ssl"
    folder: str = "INBOX"
    credential_secret: str = ""
    tracking: TrackingOption = TrackingOption.RESPONSES
    delete_after_processing: bool = False
    enabled: bool = True
    max_messages_per_poll: int = Field(default=50, ge=1, le=500)
    # CRM's "process email received after": older messages are filtered, not tracked.
    process_email_received_after: datetime | None = None
    # CRM's mailbox approval: when set, the mailbox is polled only while the CRM mailbox record
    # with this address has emailrouteraccessapproval = 1 (Approved).
    require_approval: bool = False
    # Create a contact for an unknown sender (never for auto-generated mail). Off by default.
    auto_create_contact: bool = False

    @field_validator("mailbox_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return _check_id(value, "mailbox_id")

    @field_validator("address")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        value = value.strip().lower()
        if not re.match(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$", value):
            raise ValueError(f"not an email address: {value!r}")
        return value

    @model_validator(mode="after")
    def _protocol_needs(self) -> MailboxConfig:
        if self.protocol in (Protocol.POP3, Protocol.IMAP):
            if not self.host:
                raise ValueError(f"mailbox {self.mailbox_id}: {self.protocol} needs a host")
            if not self.credential_secret:
                raise ValueError(f"mailbox {self.mailbox_id}: credential_secret is required")
        return self

    @property
    def effective_port(self) -> int:
        if self.port:
            return self.port
        defaults = {
            (Protocol.POP3, "ssl"): 995,
            (Protocol.IMAP, "ssl"): 993,
            (Protocol.POP3, "none"): 110,
            (Protocol.POP3, "starttls"): 110,
            (Protocol.IMAP, "none"): 143,
            (Protocol.IMAP, "starttls"): 143,
        }
        return defaults.get((self.protocol, self.security), 443)


class CrmConfig(BaseModel):
    """Where the tenant's Dataverse organization is and how the router signs in to it."""

    model_config = ConfigDict(extra="forbid")

    url: str  # the org URL, e.g. https://contoso.crm4.dynamics.com
    credential_secret: str  # Secrets Manager name: {"tenant_id","client_id","client_secret"} or {"token"}
    api_version: str = "v9.2"

    @field_validator("url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")


class OutboundConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # No configuration set or SES tenant here: the deployment's configuration set is used for
    # every send, and the SES tenant and sending identities are the operator's (tenancy/sending.py).
    max_attempts: int = Field(default=3, ge=1, le=20)
    sending_status_delay_minutes: float = Field(default=30, gt=0, le=1440)
    # New send jobs one dispatch run takes for this tenant: a backlog enters the queue a slice
    # per minute, so it cannot sit in front of other tenants' mail (see outbound/dispatch.py).
    max_jobs_per_dispatch: int = Field(default=100, ge=1, le=1000)
    # How long a hard-bounced or complaining recipient stays suppressed (then mail is tried again).
    suppression_days: int = Field(default=90, ge=1, le=3650)
    # Send only email whose sending mailbox has outgoingemaildeliverymethod = 2 (Server-Side
    # Synchronization or Email Router), leaving the rest to whatever else delivers this org's mail.
    # On by default; when off, every outgoing email in Pending Send is the router's to send.
    only_router_mailboxes: bool = True


class TrackingTokenConfig(BaseModel):
    """The organization's tracking-token settings (CRM's trackingprefix, trackingtokenidbase,
    trackingtokeniddigits and the counter digits); off unless the tenant uses tokens."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    prefix: str = Field(default="CRM", pattern=r"^[A-Za-z0-9]{1,20}$")
    base: int = Field(default=0, ge=0, le=999)
    user_digits: int = Field(default=3, ge=1, le=9)
    counter_digits: int = Field(default=3, ge=1, le=9)


class LoopProtectionConfig(BaseModel):
    """At most `max_messages` from one sender to one mailbox are tracked per window (the
    E-mail Router's default: 20 in 120 minutes); senders on `allow` are never limited."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_messages: int = Field(default=20, ge=1)
    window_minutes: int = Field(default=120, ge=1)
    allow: list[str] = Field(default_factory=list)


DEFAULT_NOISE_REGEX = r"^\s*(?:(?:re|fw|fwd|aw|wg|sv|vs|antw|tr|rif|r|enc|doorst)\s*(?:\[\d+\]\s*)?:\s*)+"
NOISE_REGEX_MAX_LENGTH = 200


class CorrelationConfig(BaseModel):
    """Which correlation methods run, first match wins, in Dynamics 365's order: In-Reply-To /
    References, the tracking token, the conversation index (Thread-Index), smart matching."""

    model_config = ConfigDict(extra="forbid")

    in_reply_to: bool = True
    tracking_token: bool = True  # also needs tracking_token.enabled
    conversation_index: bool = True
    smart_matching: bool = False
    # Forwards (FW:/Fwd:/WG: …) start a new thread unless this is set.
    correlate_forwards: bool = False
    hash_max_count: int = Field(default=20, ge=1, le=100)
    hash_min_address_count: int = Field(default=2, ge=1, le=100)
    hash_delta_subject_count: Literal[0] = 0
    # Runs on every subject under a time limit (routing/smart_match.py); bounded in length here.
    hash_filter_keywords: str = Field(default=DEFAULT_NOISE_REGEX, max_length=NOISE_REGEX_MAX_LENGTH)

    @field_validator("hash_filter_keywords")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        try:
            re.compile(value)
            regex.compile(value, regex.VERSION0)  # the engine it runs under
        except (re.error, regex.error) as error:
            raise ValueError(f"hash_filter_keywords is not a valid regular expression: {error}") from error
        return value


class AutoGeneratedConfig(BaseModel):
    """Auto-generated mail (Auto-Submitted, X-Auto-Response-Suppress, autoresponder markers,
    X-Loop; Precedence bulk/junk/list on mail without list headers; and, when `list_id` is set,
    mailing-list mail: List-Id, List-Post or Mailing-List) is never answered; it is tracked only
    when `track` is set (routing/filters.py has the rule)."""

    model_config = ConfigDict(extra="forbid")

    track: bool = False
    list_id: bool = False


class PartyConfig(BaseModel):
    """Party resolution: CRM's unresolveemailaddressifmultiplematch, the cache's lifetime and how
    many recipients of one message are looked up (the rest stay unresolved parties)."""

    model_config = ConfigDict(extra="forbid")

    unresolve_ambiguous_sender: bool = False
    cache_ttl_seconds: int = Field(default=900, ge=0, le=86400)
    max_resolved_per_message: int = Field(default=50, ge=1, le=500)


class TenantConfig(BaseModel):
    """Everything the router knows about one tenant; stored in the tenants table."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: str
    name: str = ""
    enabled: bool = True
    crm: CrmConfig
    mailboxes: list[MailboxConfig] = Field(default_factory=list)
    outbound: OutboundConfig = Field(default_factory=OutboundConfig)
    tracking_token: TrackingTokenConfig = Field(default_factory=TrackingTokenConfig)
    loop_protection: LoopProtectionConfig = Field(default_factory=LoopProtectionConfig)
    correlation: CorrelationConfig = Field(default_factory=CorrelationConfig)
    auto_generated: AutoGeneratedConfig = Field(default_factory=AutoGeneratedConfig)
    parties: PartyConfig = Field(default_factory=PartyConfig)
    max_message_bytes: int = Field(default=25 * 1024 * 1024, ge=1024, le=MAX_MESSAGE_BYTES_CEILING)
    max_attachment_bytes: int = Field(default=5 * 1024 * 1024, ge=0, le=128 * 1024 * 1024)
    # None: Dynamics' default list (routing/attachments.py); [] blocks nothing.
    blocked_attachment_extensions: list[str] | None = None

    @field_validator("tenant_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return _check_id(value, "tenant_id")

    @model_validator(mode="after")
    def _unique_mailboxes(self) -> TenantConfig:
        seen: set[str] = set()
        for mailbox in self.mailboxes:
            if mailbox.mailbox_id in seen:
                raise ValueError(f"duplicate mailbox_id {mailbox.mailbox_id!r}")
            seen.add(mailbox.mailbox_id)
        return self

    @model_validator(mode="after")
    def _deployed_rules(self, info: ValidationInfo) -> TenantConfig:
        """Rules for a deployed router; the importer validates with `context={"local_mode": …}`
        (configurations read back from the table were checked when they were imported)."""
        if (info.context or {}).get("local_mode", True):
            return self
        for mailbox in self.mailboxes:
            if mailbox.security == "none" and mailbox.protocol in (Protocol.POP3, Protocol.IMAP):
                raise ValueError(
                    f"mailbox {mailbox.mailbox_id}: security none sends the password in cleartext; "
                    "use ssl or starttls (none is for the local stack only)"
                )
        if self.outbound.sending_status_delay_minutes < MIN_SENDING_STATUS_DELAY_MINUTES:
            raise ValueError(
                f"outbound.sending_status_delay_minutes must be at least {MIN_SENDING_STATUS_DELAY_MINUTES} "
                "outside local mode (a shorter wait resends mail SES may have accepted)"
            )
        return self

    def mailbox(self, mailbox_id: str) -> MailboxConfig:
        for mailbox in self.mailboxes:
            if mailbox.mailbox_id == mailbox_id:
                return mailbox
        raise MailboxNotFoundError(f"tenant {self.tenant_id} has no mailbox {mailbox_id!r}")


class MailboxHealth(BaseModel):
    """The last poll's result for one mailbox, shown to operators and tenant admins."""

    state: Literal["ok", "failing", "unknown"] = "unknown"
    reason: str = ""
    last_poll_at: str | None = None
    last_success_at: str | None = None
    consecutive_failures: int = 0
