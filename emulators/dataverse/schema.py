"""The tables the emulator serves: entity sets, keys, columns, navigation properties, state models.

This is the emulator's ``$metadata``: which properties exist (unknown ones are rejected as Dataverse
rejects them), which ``nav@odata.bind`` names map to which ``_x_value`` lookup column and target
tables, which collection-valued navigation properties carry child rows, and which statecode /
statuscode pairs are valid (fact sheet §3, §4.1, §5.1, §11).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

ColumnKind = Literal["string", "memo", "int", "decimal", "bool", "guid", "datetime", "lookup", "choice"]

_KIND_BY_CODE: dict[str, ColumnKind] = {
    "s": "string",
    "m": "memo",
    "i": "int",
    "n": "decimal",
    "b": "bool",
    "g": "guid",
    "d": "datetime",
    "l": "lookup",
    "c": "choice",
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: ColumnKind
    max_length: int | None = None


@dataclass(frozen=True)
class LookupNav:
    """A single-valued navigation property: bound via ``<name>@odata.bind``, read as ``column``."""

    name: str
    column: str
    targets: tuple[str, ...]


@dataclass(frozen=True)
class CollectionNav:
    """A collection-valued navigation property: child rows in ``child_set`` pointing back via ``foreign_key``."""

    name: str
    child_set: str
    foreign_key: str


@dataclass(frozen=True)
class StateModel:
    """Valid statuscode values per statecode, the first of each tuple being the default."""

    statuses: dict[int, tuple[int, ...]]
    labels: dict[int, str] = field(default_factory=dict)
    status_labels: dict[int, str] = field(default_factory=dict)

    def default_status(self, statecode: int) -> int | None:
        values = self.statuses.get(statecode)
        return values[0] if values else None

    def state_of(self, statuscode: int) -> int | None:
        for state, values in self.statuses.items():
            if statuscode in values:
                return state
        return None

    def is_valid(self, statecode: int, statuscode: int) -> bool:
        return statuscode in self.statuses.get(statecode, ())


@dataclass(frozen=True)
class Table:
    set_name: str
    logical_name: str
    key: str
    primary_name: str | None
    columns: MappingProxyType[str, Column]
    lookups: MappingProxyType[str, LookupNav]
    collections: MappingProxyType[str, CollectionNav]
    state_model: StateModel | None = None
    creatable: bool = True
    updatable: bool = True
    read_only_when_closed: bool = False
    email_column: str | None = None
    defaults: MappingProxyType[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def lookup_for_column(self, column: str) -> list[LookupNav]:
        return [nav for nav in self.lookups.values() if nav.column == column]


def _columns(spec: str) -> dict[str, Column]:
    """Parse ``"name:s100 other:i"`` (kind code, optional max length) into columns."""
    columns: dict[str, Column] = {}
    for item in spec.split():
        name, code = item.split(":")
        length = int(code[1:]) if len(code) > 1 else None
        columns[name] = Column(name, _KIND_BY_CODE[code[0]], length)
    return columns


def _polymorphic(base: str, targets: tuple[str, ...], suffix: str = "") -> dict[str, LookupNav]:
    """``regardingobjectid_<table>_email``-style navigation names, one per target table."""
    return {
        f"{base}_{target}{suffix}": LookupNav(f"{base}_{target}{suffix}", f"_{base}_value", (target,))
        for target in targets
    }


def _single(name: str, *targets: str) -> dict[str, LookupNav]:
    return {name: LookupNav(name, f"_{name}_value", targets)}


_SYSTEM = (
    "createdon:d modifiedon:d overriddencreatedon:d versionnumber:i importsequencenumber:i "
    "_createdby_value:l _modifiedby_value:l _createdonbehalfby_value:l _modifiedonbehalfby_value:l "
    "timezoneruleversionnumber:i utcconversiontimezonecode:i"
)
_OWNED = _SYSTEM + " _ownerid_value:l _owninguser_value:l _owningteam_value:l _owningbusinessunit_value:l"
_STATE = " statecode:c statuscode:c"
_OWNER = _single("ownerid", "systemuser")
_EMAIL_ADDRESSES = " emailaddress1:s100 emailaddress2:s100 emailaddress3:s100 donotemail:b"

REGARDING_TARGETS = ("account", "contact", "lead", "incident", "opportunity")
PARTY_TARGETS = ("systemuser", "contact", "account", "lead", "queue")
CUSTOMER_TARGETS = ("account", "contact")

EMAIL_STATES = StateModel(
    statuses={0: (1, 8), 1: (2, 3, 4, 6, 7), 2: (5,)},
    labels={0: "Open", 1: "Completed", 2: "Canceled"},
    status_labels={
        1: "Draft",
        2: "Completed",
        3: "Sent",
        4: "Received",
        5: "Canceled",
        6: "Pending Send",
        7: "Sending",
        8: "Failed",
    },
)
_ACTIVE_INACTIVE = StateModel(
    statuses={0: (1,), 1: (2,)},
    labels={0: "Active", 1: "Inactive"},
    status_labels={1: "Active", 2: "Inactive"},
)
_LEAD_STATES = StateModel(statuses={0: (1, 2), 1: (3,), 2: (4, 5, 6, 7)})
_INCIDENT_STATES = StateModel(statuses={0: (1, 2, 3, 4), 1: (5, 1000), 2: (6, 2000)})
_OPPORTUNITY_STATES = StateModel(statuses={0: (1, 2), 1: (3,), 2: (4, 5)})


def _table(
    set_name: str,
    logical_name: str,
    key: str,
    primary_name: str | None,
    columns: str,
    lookups: dict[str, LookupNav] | None = None,
    collections: tuple[CollectionNav, ...] = (),
    **options: object,
) -> Table:
    cols = _columns(f"{key}:g {columns}")
    navs = lookups or {}
    for nav in navs.values():
        cols.setdefault(nav.column, Column(nav.column, "lookup"))
    return Table(
        set_name=set_name,
        logical_name=logical_name,
        key=key,
        primary_name=primary_name,
        columns=MappingProxyType(cols),
        lookups=MappingProxyType(navs),
        collections=MappingProxyType({c.name: c for c in collections}),
        **options,  # type: ignore[arg-type]
    )


_ATTACHMENTS = CollectionNav("email_activity_mime_attachment", "activitymimeattachments", "_objectid_value")

TABLES: dict[str, Table] = {
    t.set_name: t
    for t in (
        _table(
            "systemusers",
            "systemuser",
            "systemuserid",
            "fullname",
            _SYSTEM + " fullname:s200 firstname:s256 lastname:s256 internalemailaddress:s100 "
            "personalemailaddress:s100 domainname:s1024 windowsliveid:s1024 isdisabled:b accessmode:c "
            "incomingemaildeliverymethod:c outgoingemaildeliverymethod:c emailrouteraccessapproval:c "
            "azureactivedirectoryobjectid:g applicationid:g title:s128 _businessunitid_value:l "
            "_defaultmailbox_value:l _queueid_value:l islicensed:b",
            {**_single("businessunitid", "businessunit"), **_single("defaultmailbox", "mailbox")},
            email_column="internalemailaddress",
            defaults=MappingProxyType({"isdisabled": False, "accessmode": 0}),
        ),
        _table(
            "contacts",
            "contact",
            "contactid",
            "fullname",
            _OWNED + _STATE + _EMAIL_ADDRESSES + " fullname:s160 firstname:s50 lastname:s50 jobtitle:s100 "
            "telephone1:s50 mobilephone:s50 description:m _parentcustomerid_value:l",
            {**_polymorphic("parentcustomerid", CUSTOMER_TARGETS), **_OWNER},
            state_model=_ACTIVE_INACTIVE,
            email_column="emailaddress1",
        ),
        _table(
            "accounts",
            "account",
            "accountid",
            "name",
            _OWNED + _STATE + _EMAIL_ADDRESSES + " name:s160 accountnumber:s20 telephone1:s50 "
            "websiteurl:s200 description:m",
            {**_single("primarycontactid", "contact"), **_single("parentaccountid", "account"), **_OWNER},
            state_model=_ACTIVE_INACTIVE,
            email_column="emailaddress1",
        ),
        _table(
            "leads",
            "lead",
            "leadid",
            "fullname",
            _OWNED + _STATE + _EMAIL_ADDRESSES + " fullname:s160 firstname:s50 lastname:s50 subject:s300 "
            "companyname:s100 telephone1:s50 description:m",
            {
                **_single("parentcontactid", "contact"),
                **_single("parentaccountid", "account"),
                **_polymorphic("customerid", CUSTOMER_TARGETS),
                **_OWNER,
            },
            state_model=_LEAD_STATES,
            email_column="emailaddress1",
        ),
        _table(
            "queues",
            "queue",
            "queueid",
            "name",
            _OWNED + _STATE + " name:s400 emailaddress:s100 description:m incomingemaildeliverymethod:c "
            "outgoingemaildeliverymethod:c incomingemailfilteringmethod:c emailrouteraccessapproval:c "
            "queuetypecode:c queueviewtype:c isemailaddressapprovedbyo365admin:b",
            {
                **_single("primaryuserid", "systemuser"),
                **_single("defaultmailbox", "mailbox"),
                **_single("businessunitid", "businessunit"),
                **_OWNER,
            },
            state_model=_ACTIVE_INACTIVE,
            email_column="emailaddress",
        ),
        _table(
            "mailboxes",
            "mailbox",
            "mailboxid",
            "name",
            _OWNED + _STATE + " name:s250 emailaddress:s100 incomingemaildeliverymethod:c "
            "outgoingemaildeliverymethod:c actdeliverymethod:c emailrouteraccessapproval:c "
            "incomingemailstatus:c outgoingemailstatus:c actstatus:c enabledforincomingemail:b "
            "enabledforoutgoingemail:b enabledforact:b isforwardmailbox:b ewsurl:s1024 "
            "processemailreceivedafter:d processanddeleteemails:b mailboxstatus:c "
            "testemailconfigurationscheduled:b isemailaddressapprovedbyo365admin:b "
            "lastsuccessfulsynccompletedon:d _emailserverprofile_value:l _regardingobjectid_value:l",
            {
                **_polymorphic("regardingobjectid", ("systemuser", "queue")),
                **_single("emailserverprofile", "emailserverprofile"),
                **_OWNER,
            },
            state_model=_ACTIVE_INACTIVE,
            email_column="emailaddress",
            defaults=MappingProxyType({"enabledforincomingemail": True, "enabledforoutgoingemail": True}),
        ),
        _table(
            "emails",
            "email",
            "activityid",
            "subject",
            _OWNED + _STATE + " subject:s800 description:m directioncode:b messageid:s320 inreplyto:s320 "
            "internetmessageheaders:s500 trackingtoken:s50 conversationindex:s2048 sender:s250 "
            "torecipients:s500 submittedby:s250 prioritycode:c deliveryprioritycode:c correlationmethod:c "
            "notifications:c senton:d actualstart:d actualend:d scheduledstart:d scheduledend:d "
            "activitytypecode:s100 isworkflowcreated:b readreceiptrequested:b deliveryreceiptrequested:b "
            "compressed:b mimetype:s256 category:s250 subcategory:s250 attachmentcount:i "
            "baseconversationindexhash:i postponeemailprocessinguntil:d emailremindertype:c "
            "_regardingobjectid_value:l _sendermailboxid_value:l _parentactivityid_value:l "
            "_emailsender_value:l _sendersaccount_value:l _transactioncurrencyid_value:l",
            {
                **_polymorphic("regardingobjectid", REGARDING_TARGETS, "_email"),
                **_single("sendermailboxid", "mailbox"),
                **_single("parentactivityid", "email"),
                **_OWNER,
            },
            (
                CollectionNav("email_activity_parties", "activityparties", "_activityid_value"),
                _ATTACHMENTS,
                CollectionNav(
                    "activity_pointer_activity_mime_attachment", "activitymimeattachments", "_objectid_value"
                ),
            ),
            state_model=EMAIL_STATES,
            read_only_when_closed=True,
            defaults=MappingProxyType(
                {"directioncode": True, "activitytypecode": "email", "prioritycode": 1}
            ),
        ),
        _table(
            "activitymimeattachments",
            "activitymimeattachment",
            "activitymimeattachmentid",
            "filename",
            _SYSTEM + " body:m filename:s255 mimetype:s256 subject:s2000 attachmentcontentid:s250 "
            "objecttypecode:s100 filesize:i activitysubject:s800 attachmentnumber:i isfollowed:b "
            "_objectid_value:l _attachmentid_value:l",
            {
                "objectid_email": LookupNav("objectid_email", "_objectid_value", ("email",)),
                "objectid_activitypointer": LookupNav(
                    "objectid_activitypointer", "_objectid_value", ("email",)
                ),
                **_single("attachmentid", "attachment"),
            },
        ),
        _table(
            "activityparties",
            "activityparty",
            "activitypartyid",
            None,
            "versionnumber:i participationtypemask:c addressused:s200 addressusedemailcolumnnumber:i "
            "ispartydeleted:b donotemail:b donotfax:b donotphone:b donotpostalmail:b effort:n "
            "exchangeentryid:s1024 instancetypecode:c scheduledstart:d scheduledend:d "
            "_activityid_value:l _partyid_value:l _ownerid_value:l _resourcespecid_value:l",
            {
                **_polymorphic("partyid", PARTY_TARGETS),
                "activityid_email": LookupNav("activityid_email", "_activityid_value", ("email",)),
            },
            creatable=False,
            updatable=False,
        ),
        _table(
            "incidents",
            "incident",
            "incidentid",
            "title",
            _OWNED + _STATE + " title:s200 ticketnumber:s100 description:m emailaddress:s100 "
            "_customerid_value:l _primarycontactid_value:l",
            {
                **_polymorphic("customerid", CUSTOMER_TARGETS),
                **_single("primarycontactid", "contact"),
                **_OWNER,
            },
            state_model=_INCIDENT_STATES,
            email_column="emailaddress",
        ),
        _table(
            "opportunities",
            "opportunity",
            "opportunityid",
            "name",
            _OWNED + _STATE + " name:s300 description:m emailaddress:s100 _customerid_value:l "
            "_parentaccountid_value:l _parentcontactid_value:l",
            {
                **_polymorphic("customerid", CUSTOMER_TARGETS),
                **_single("parentaccountid", "account"),
                **_single("parentcontactid", "contact"),
                **_OWNER,
            },
            state_model=_OPPORTUNITY_STATES,
            email_column="emailaddress",
        ),
        _table(
            "organizations",
            "organization",
            "organizationid",
            "name",
            _SYSTEM + " name:s160 trackingprefix:m trackingtokenidbase:i trackingtokeniddigits:i "
            "maximumtrackingnumber:i unresolveemailaddressifmultiplematch:b ignoreinternalemail:b "
            "maxuploadfilesize:i allowunresolvedpartiesonemailsend:b blockedattachments:m "
            "emailcorrelationenabled:b emailconnectionchannel:c hashmaxcount:i hashminaddresscount:i "
            "hashdeltasubjectcount:i hashfilterkeywords:m languagecode:i _basecurrencyid_value:l",
            creatable=False,
        ),
    )
}

TABLES_BY_LOGICAL_NAME: dict[str, Table] = {t.logical_name: t for t in TABLES.values()}

# Columns the platform maintains; values a client sends for them are ignored, as Dataverse does.
SYSTEM_MANAGED = frozenset({"createdon", "modifiedon", "versionnumber", "filesize", "attachmentnumber"})


def table_for_set(set_name: str) -> Table | None:
    return TABLES.get(set_name)


def table_for_logical_name(logical_name: str) -> Table | None:
    return TABLES_BY_LOGICAL_NAME.get(logical_name)
