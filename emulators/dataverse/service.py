"""The Web API operations: route a request below ``/api/data/v9.2/`` to create, retrieve, query,
update/upsert, delete, property access or ``WhoAmI`` — everything except ``$batch`` framing.

Behaviour follows the fact sheet: 204 + ``OData-EntityId`` vs 201/200 with ``return=representation``
(§3, §5), conditional headers (§5, checklist 10), deep insert as one transaction (§3.2), paging
with an opaque ``$skiptoken`` (§4), closed emails read-only and state/status pairs (§5.1).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

from emulators.dataverse.errors import (
    DataverseError,
    duplicate_record,
    invalid_argument,
    invalid_payload,
    method_not_allowed,
    query_error,
    record_not_found,
    resource_not_found,
    version_mismatch,
)
from emulators.dataverse.payload import WriteValues, new_key, normalise_key, parse_reference, read_body
from emulators.dataverse.protocol import MAX_PAGE_SIZE, ApiRequest, ApiResponse, Preferences
from emulators.dataverse.query import QueryOptions, parse_options, query_string_options
from emulators.dataverse.representation import (
    LOOKUP_LOGICAL_NAME,
    Representer,
    apply_options,
    context_fragment,
    etag,
    validate_options,
)
from emulators.dataverse.schema import TABLES, Table, table_for_logical_name, table_for_set
from emulators.dataverse.store import Row, Store, utc_now_text

_SEGMENT = re.compile(r"^([A-Za-z_$][A-Za-z0-9_.]*)(?:\((.*)\))?$")
_PAGE_NUMBER = re.compile(r'pagenumber="(\d+)"')
_STATE_COLUMNS = frozenset({"statecode", "statuscode"})


@dataclass(frozen=True)
class Identity:
    """Who the caller is (``WhoAmI``) and which organization this is."""

    organization_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    business_unit_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    user_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class ParentLink:
    """How a deep-inserted child points at the row it was created under."""

    foreign_key: str
    key: str
    logical_name: str


class DataverseService:
    """Executes one Web API operation against the store. ``service_root`` ends with ``/v9.2/``."""

    def __init__(self, store: Store, identity: Identity, service_root: str = "") -> None:
        self.store = store
        self.identity = identity
        self.service_root = service_root
        self.next_link_root: str | None = None  # another root for @odata.nextLink (a test's foreign host)

    # ------------------------------------------------------------ routing

    def handle(self, request: ApiRequest) -> ApiResponse:
        try:
            return self._route(request)
        except DataverseError as error:
            return ApiResponse.error(error)

    def _route(self, request: ApiRequest) -> ApiResponse:
        segments = [s for s in request.path.split("/") if s != ""]
        if not segments and request.method == "GET":
            return self._service_document()
        if not segments:
            raise method_not_allowed(request.method, "service document")
        first = _SEGMENT.match(segments[0])
        if first is None:
            raise resource_not_found(segments[0])
        name, key_text = first.group(1), first.group(2)
        if name == "WhoAmI" and len(segments) == 1 and key_text in (None, ""):
            if request.method != "GET":
                raise method_not_allowed(request.method, "WhoAmI")
            return self._who_am_i()
        table = table_for_set(name)
        if table is None:
            raise resource_not_found(name)
        rest = segments[1:]
        if key_text is None:
            return self._on_collection(request, table, rest)
        key = normalise_key(table, urllib.parse.unquote(key_text))
        return self._on_entity(request, table, key, rest)

    def _on_collection(self, request: ApiRequest, table: Table, rest: list[str]) -> ApiResponse:
        if not rest:
            if request.method == "GET":
                return self._query(request, table)
            if request.method == "POST":
                return self._create_request(request, table)
            raise method_not_allowed(request.method, table.logical_name)
        if rest == ["$count"] and request.method == "GET":
            return ApiResponse.text(str(min(len(self.store.all(table.set_name)), MAX_PAGE_SIZE)))
        raise resource_not_found(rest[0])

    def _on_entity(self, request: ApiRequest, table: Table, key: str, rest: list[str]) -> ApiResponse:
        method = request.method
        if not rest:
            if method == "GET":
                return self._retrieve(request, table, key)
            if method == "PATCH":
                return self._update_request(request, table, key)
            if method == "DELETE":
                return self._delete(request, table, key)
            raise method_not_allowed(method, table.logical_name)
        name = rest[0]
        if name in table.collections and len(rest) == 1 and method == "GET":
            return self._related(request, table, key, name)
        if len(rest) == 2 and rest[1] == "$ref":
            return self._reference(request, table, key, name)
        if name in self.store.known_columns(table.set_name):
            if len(rest) == 1:
                return self._property(request, table, key, name, raw=False)
            if rest[1:] == ["$value"] and method == "GET":
                return self._property(request, table, key, name, raw=True)
        raise resource_not_found(rest[-1])

    # ------------------------------------------------------------ reads

    def _service_document(self) -> ApiResponse:
        sets = [{"name": name, "kind": "EntitySet", "url": name} for name in TABLES]
        return ApiResponse.json(200, {"@odata.context": f"{self.service_root}$metadata", "value": sets})

    def _who_am_i(self) -> ApiResponse:
        return ApiResponse.json(
            200,
            {
                "@odata.context": f"{self.service_root}$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse",
                "BusinessUnitId": self.identity.business_unit_id,
                "UserId": self.identity.user_id,
                "OrganizationId": self.identity.organization_id,
            },
        )

    def _options(self, request: ApiRequest) -> tuple[QueryOptions, dict[str, str]]:
        raw = query_string_options(request.query)
        return parse_options(raw), raw

    def _query(self, request: ApiRequest, table: Table) -> ApiResponse:
        options, raw = self._options(request)
        validate_options(self.store, table, options)
        prefs = Preferences.parse(request.headers.value("Prefer"))
        with self.store.lock:
            rows = apply_options(self.store.all(table.set_name), options)
            page_size = prefs.max_page_size
            if page_size is None:
                if options.top is not None:
                    rows = rows[: options.top]
                size = MAX_PAGE_SIZE
            else:
                size = page_size  # $top is ignored when a page size is requested (fact sheet §4)
            offset = _page_offset(raw.get("$skiptoken"), size)
            page = rows[offset : offset + size]
            representer = Representer(self.store, prefs)
            values = [representer.entity(table, row, options) for row in page]
        body: dict[str, Any] = {
            "@odata.context": f"{self.service_root}$metadata#{context_fragment(table, options)}"
        }
        if options.count:
            body["@odata.count"] = min(len(rows), MAX_PAGE_SIZE)
        body["value"] = values
        if offset + size < len(rows):
            body["@odata.nextLink"] = self._next_link(table, request.query, offset // size + 2, page)
        applied = _applied(prefs, page_size=True)
        return ApiResponse.json(200, body, applied)

    def _next_link(self, table: Table, query: str, page_number: int, page: list[Row]) -> str:
        inner = (
            f'<cookie page="{page_number - 1}"><{table.key} last="{{{page[-1][table.key].upper()}}}" '
            f'first="{{{page[0][table.key].upper()}}}" /></cookie>'
        )
        cookie = (
            f'<cookie pagenumber="{page_number}" '
            f'pagingcookie="{urllib.parse.quote(urllib.parse.quote(inner, safe=""), safe="")}" istracking="False" />'
        )
        kept = [p for p in query.split("&") if p and not p.startswith("$skiptoken=")]
        kept.append("$skiptoken=" + urllib.parse.quote(cookie, safe=""))
        return f"{self.next_link_root or self.service_root}{table.set_name}?{'&'.join(kept)}"

    def _retrieve(self, request: ApiRequest, table: Table, key: str) -> ApiResponse:
        options, _ = self._options(request)
        validate_options(self.store, table, options)
        prefs = Preferences.parse(request.headers.value("Prefer"))
        with self.store.lock:
            row = self._existing(table, key)
            if_none_match = request.headers.value("If-None-Match")
            if if_none_match == etag(row) and not options.expand:
                return ApiResponse.empty(304, {"ETag": etag(row)})
            entity = Representer(self.store, prefs).entity(table, row, options)
        context = f"{self.service_root}$metadata#{context_fragment(table, options)}/$entity"
        return ApiResponse.json(
            200, {"@odata.context": context, **entity}, {"ETag": etag(row), **_applied(prefs)}
        )

    def _related(self, request: ApiRequest, table: Table, key: str, navigation: str) -> ApiResponse:
        nav = table.collections[navigation]
        child = table_for_set(nav.child_set)
        assert child is not None
        options, _ = self._options(request)
        validate_options(self.store, child, options)
        prefs = Preferences.parse(request.headers.value("Prefer"))
        with self.store.lock:
            self._existing(table, key)
            rows = [r for r in self.store.all(child.set_name) if r.get(nav.foreign_key) == key]
            rows = apply_options(rows, options)[: options.top]
            representer = Representer(self.store, prefs)
            values = [representer.entity(child, r, options) for r in rows]
        context = f"{self.service_root}$metadata#{context_fragment(child, options)}"
        return ApiResponse.json(200, {"@odata.context": context, "value": values}, _applied(prefs))

    def _property(self, request: ApiRequest, table: Table, key: str, column: str, raw: bool) -> ApiResponse:
        with self.store.transaction():
            row = self._existing(table, key)
            if request.method == "GET":
                value = row.get(column)
                if value is None:
                    return ApiResponse.empty(204)
                if raw:
                    return ApiResponse.text(value if isinstance(value, str) else json.dumps(value))
                context = f"{self.service_root}$metadata#{table.set_name}({key})/{column}"
                return ApiResponse.json(200, {"@odata.context": context, "value": value})
            if request.method == "PUT":
                body = _json_body(request, table)
                if not isinstance(body, dict) or "value" not in body:
                    raise invalid_payload(table.set_name, 'A property value must be sent as {"value": ...}.')
                self._update(table, row, {column: body["value"]})
            elif request.method == "DELETE":
                self._update(table, row, {column: None})
            else:
                raise method_not_allowed(request.method, table.logical_name)
        return ApiResponse.empty(204)

    def _reference(self, request: ApiRequest, table: Table, key: str, navigation: str) -> ApiResponse:
        """``PUT``/``DELETE set(id)/nav/$ref``: set or clear a single-valued lookup."""
        candidates = [
            n for n in table.lookups.values() if n.name == navigation or n.column == f"_{navigation}_value"
        ]
        if not candidates:
            raise resource_not_found(navigation)
        with self.store.transaction():
            row = self._existing(table, key)
            if request.method == "DELETE":
                self._update(table, row, {f"{candidates[0].name}@odata.bind": None})
            elif request.method == "PUT":
                body = _json_body(request, table)
                target = body.get("@odata.id") if isinstance(body, dict) else None
                nav = _nav_for_reference(candidates, str(target or ""))
                self._update(table, row, {f"{nav}@odata.bind": target})
            else:
                raise method_not_allowed(request.method, table.logical_name)
        return ApiResponse.empty(204)

    # ------------------------------------------------------------ writes

    def _create_request(self, request: ApiRequest, table: Table) -> ApiResponse:
        if not table.creatable:
            raise method_not_allowed("POST", table.logical_name)
        body = _json_body(request, table)
        prefs = Preferences.parse(request.headers.value("Prefer"))
        options, _ = self._options(request)
        if prefs.return_representation:
            validate_options(self.store, table, options)
        with self.store.transaction():
            key = self.create(table, body)
        return self._written(table, key, prefs, options, created=True)

    def _written(
        self, table: Table, key: str, prefs: Preferences, options: QueryOptions, created: bool
    ) -> ApiResponse:
        url = f"{self.service_root}{table.set_name}({key})"
        if prefs.return_representation:
            with self.store.lock:
                row = self._existing(table, key)
                entity = Representer(self.store, prefs).entity(table, row, options)
            context = f"{self.service_root}$metadata#{context_fragment(table, options)}/$entity"
            response = ApiResponse.json(
                201 if created else 200,
                {"@odata.context": context, **entity},
                {"ETag": etag(row), **_applied(prefs)},
            )
        else:
            response = ApiResponse.empty(204, {"OData-EntityId": url})
        response.entity_url = url
        return response

    def create(
        self, table: Table, body: Any, key: str | None = None, parent: ParentLink | None = None
    ) -> str:
        """Insert one row (and its deep-insert children). Call inside ``store.transaction()``."""
        values = read_body(table, body, self.store)
        body_key = values.columns.pop(table.key, None)
        key = (key or body_key or new_key()).lower()
        if self.store.get(table.set_name, key) is not None:
            raise duplicate_record()
        row: Row = {table.key: key, **table.defaults}
        row.update(values.columns)
        if parent is not None:
            row[parent.foreign_key] = parent.key
            row[f"{parent.foreign_key}@{LOOKUP_LOGICAL_NAME}"] = parent.logical_name
        self._apply_state(table, row, values.columns, previous=None)
        self.derive(table, row)
        now = utc_now_text()
        row["createdon"] = row["modifiedon"] = now
        self._stamp_owner(table, row)
        row["versionnumber"] = self.store.next_version()
        self.store.put(table.set_name, key, row)
        self._insert_children(table, key, values)
        return key

    def _insert_children(self, table: Table, key: str, values: WriteValues) -> None:
        for navigation, children in values.children.items():
            nav = table.collections[navigation]
            child_table = table_for_set(nav.child_set)
            assert child_table is not None
            link = ParentLink(nav.foreign_key, key, table.logical_name)
            for child in children:
                self.create(child_table, child, parent=link)

    def _update_request(self, request: ApiRequest, table: Table, key: str) -> ApiResponse:
        if not table.updatable:
            raise method_not_allowed("PATCH", table.logical_name)
        body = _json_body(request, table)
        prefs = Preferences.parse(request.headers.value("Prefer"))
        options, _ = self._options(request)
        options.expand = []  # $expand is ignored on update (fact sheet §5)
        if prefs.return_representation:
            validate_options(self.store, table, options)
        if_match = request.headers.value("If-Match")
        if_none_match = request.headers.value("If-None-Match")
        with self.store.transaction():
            existing = self.store.get(table.set_name, key)
            if existing is None:
                if if_match is not None:
                    raise record_not_found(table.logical_name, key)
                if not table.creatable:
                    raise method_not_allowed("POST", table.logical_name)
                self.create(table, body, key=key)
                created = True
            else:
                if if_none_match == "*":
                    raise duplicate_record()
                if if_match not in (None, "*") and if_match != etag(existing):
                    raise version_mismatch()
                self._update(table, existing, body)
                created = False
        response = self._written(table, key, prefs, options, created=created)
        if not prefs.return_representation:
            response.headers["OData-EntityId"] = f"{self.service_root}{table.set_name}({key})"
        return response

    def _update(self, table: Table, existing: Row, body: Any) -> None:
        values = read_body(table, body, self.store)
        values.columns.pop(table.key, None)
        changes = values.columns
        # [unconfirmed] Email in Pending Send (6) or Sending (7) is mail in transit: the send
        # path (the E-mail Router, server-side sync) writes messageid and senton on it, so those
        # states accept edits; Sent, Received, Completed and Canceled emails do not.
        in_transit = table.logical_name == "email" and existing.get("statuscode") in (6, 7)
        if table.read_only_when_closed and existing.get("statecode") not in (0, None) and not in_transit:
            edits = [c for c in changes if c not in _STATE_COLUMNS and "@" not in c]
            if (edits or values.children) and changes.get("statecode") != 0:
                state = (
                    table.state_model.labels.get(existing["statecode"], "closed")
                    if table.state_model
                    else "closed"
                )
                raise invalid_argument(
                    f"This {table.logical_name} is {state.lower()} and therefore read-only: it cannot be "
                    f"modified. Reopen it (statecode 0) before changing {', '.join(edits) or 'its related rows'}."
                )
        row: Row = {**existing, **changes}
        self._apply_state(table, row, changes, previous=existing)
        self.derive(table, row)
        row["modifiedon"] = utc_now_text()
        row["versionnumber"] = self.store.next_version()
        key = existing[table.key]
        self.store.put(table.set_name, key, row)
        self._replace_parties(table, key, values)

    def _replace_parties(self, table: Table, key: str, values: WriteValues) -> None:
        """On update, ``email_activity_parties`` replaces the parties of the participation types it
        names (as setting the ``to``/``cc`` PartyList columns does); attachments are appended."""
        parties = values.children.get("email_activity_parties")
        if parties:
            masks = {p.get("participationtypemask") for p in parties}
            for row in self.store.all("activityparties"):
                if row.get("_activityid_value") == key and row.get("participationtypemask") in masks:
                    self.store.delete("activityparties", row["activitypartyid"])
        self._insert_children(table, key, values)

    def _delete(self, request: ApiRequest, table: Table, key: str) -> ApiResponse:
        if not table.updatable:
            raise method_not_allowed("DELETE", table.logical_name)
        if_match = request.headers.value("If-Match")
        with self.store.transaction():
            existing = self._existing(table, key)
            if if_match not in (None, "*") and if_match != etag(existing):
                raise version_mismatch()
            self.store.delete(table.set_name, key)
            for nav in table.collections.values():  # activity parties and attachments cascade
                for child in self.store.all(nav.child_set):
                    if child.get(nav.foreign_key) == key:
                        child_table = table_for_set(nav.child_set)
                        assert child_table is not None
                        self.store.delete(nav.child_set, child[child_table.key])
        return ApiResponse.empty(204)

    # ------------------------------------------------------------ rules

    def _existing(self, table: Table, key: str) -> Row:
        row = self.store.get(table.set_name, key)
        if row is None:
            raise record_not_found(table.logical_name, key)
        return row

    @staticmethod
    def _apply_state(table: Table, row: Row, changes: dict[str, Any], previous: Row | None) -> None:
        """Fill the default status for a state (or the state of a status) and reject invalid pairs."""
        model = table.state_model
        if model is None:
            return
        state, status = changes.get("statecode"), changes.get("statuscode")
        if state is None and status is None:
            if previous is None:
                row["statecode"], row["statuscode"] = 0, model.default_status(0)
            return
        if state is None:
            state = model.state_of(status) if status is not None else None
            if state is None:
                raise invalid_argument(f"{status} is not a valid status code for {table.logical_name}.")
        if status is None:
            status = model.default_status(state)
            if status is None:
                raise invalid_argument(f"{state} is not a valid state code on {table.logical_name}.")
        if not model.is_valid(state, status):
            raise invalid_argument(
                f"{status} is not a valid status code for state code {table.logical_name}State.{state} "
                f"on {table.logical_name} with Id {row[table.key]}."
            )
        row["statecode"], row["statuscode"] = state, status

    def derive(self, table: Table, row: Row) -> None:
        """Columns the platform computes: full names, attachment size and subject, party address."""
        if "fullname" in table.columns and not row.get("fullname"):
            name = " ".join(p for p in (row.get("firstname"), row.get("lastname")) if p)
            if name:
                row["fullname"] = name
        if table.logical_name == "activitymimeattachment":
            row.setdefault("objecttypecode", "email")
            body = row.get("body")
            if isinstance(body, str):
                try:
                    row["filesize"] = len(base64.b64decode(body, validate=False))
                except (binascii.Error, ValueError):
                    row["filesize"] = len(body)
            parent = self.store.get("emails", str(row.get("_objectid_value") or ""))
            if parent is not None:
                row["activitysubject"] = parent.get("subject")
        if table.logical_name == "activityparty" and not row.get("addressused") and row.get("_partyid_value"):
            target = table_for_logical_name(str(row.get(f"_partyid_value@{LOOKUP_LOGICAL_NAME}")))
            party = self.store.get(target.set_name, row["_partyid_value"]) if target else None
            if target is not None and party is not None and target.email_column:
                row["addressused"] = party.get(target.email_column)

    def _stamp_owner(self, table: Table, row: Row) -> None:
        user = self.identity.user_id
        for column in ("_createdby_value", "_modifiedby_value", "_ownerid_value"):
            if column in table.columns and row.get(column) is None:
                row[column] = user
                row[f"{column}@{LOOKUP_LOGICAL_NAME}"] = "systemuser"


def _page_offset(skiptoken: str | None, size: int) -> int:
    if skiptoken is None:
        return 0
    match = _PAGE_NUMBER.search(skiptoken)
    if match is None:
        raise query_error("The $skiptoken value is not a valid paging cookie.")
    return (int(match.group(1)) - 1) * size


def _applied(prefs: Preferences, page_size: bool = False) -> dict[str, str]:
    """``Preference-Applied`` lists the preferences the service honoured."""
    applied: list[str] = []
    if prefs.return_representation:
        applied.append("return=representation")
    if prefs.annotations_raw is not None:
        applied.append(f"odata.include-annotations={prefs.annotations_raw}")
    if page_size and prefs.max_page_size is not None:
        applied.append(f"odata.maxpagesize={prefs.max_page_size}")
    return {"Preference-Applied": ",".join(applied)} if applied else {}


def _json_body(request: ApiRequest, table: Table) -> Any:
    try:
        return json.loads(request.body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise invalid_payload(table.set_name, f"Invalid JSON. {error}") from None


def _nav_for_reference(candidates: list[Any], target: str) -> str:
    reference = parse_reference(target)
    if reference is not None:
        target_table = table_for_set(reference[0])
        for nav in candidates:
            if target_table is not None and target_table.logical_name in nav.targets:
                return str(nav.name)
    return str(candidates[0].name)
