"""Putting rows into the emulator directly (tests, the demo), bypassing the Web API's write rules.

Seed rows may carry keys and ``_x_value`` lookups as stored data, plus ``nav@odata.bind`` and
deep-insert arrays. Columns a seed introduces become known columns of the table (like custom
columns). Every reset restores the rows a fresh organization always has: its organization row and
the application user the emulator authenticates as.
"""

from __future__ import annotations

from typing import Any

from emulators.dataverse.payload import is_guid, new_key, read_body
from emulators.dataverse.representation import LOOKUP_LOGICAL_NAME
from emulators.dataverse.schema import SYSTEM_MANAGED, Table, table_for_logical_name, table_for_set
from emulators.dataverse.service import DataverseService, ParentLink
from emulators.dataverse.store import Row, utc_now_text


class SeedError(ValueError):
    """A seed document names an unknown table or carries an unusable row."""


def default_rows(service: DataverseService, org_name: str) -> dict[str, list[dict[str, Any]]]:
    identity = service.identity
    return {
        "organizations": [
            {
                "organizationid": identity.organization_id,
                "name": org_name,
                "trackingprefix": "CRM",
                "trackingtokenidbase": 0,
                "trackingtokeniddigits": 3,
                "maximumtrackingnumber": 9999,
                "unresolveemailaddressifmultiplematch": True,
                "ignoreinternalemail": False,
                "maxuploadfilesize": 5_242_880,
                "allowunresolvedpartiesonemailsend": False,
                "emailcorrelationenabled": True,
                "hashmaxcount": 20,
                "hashminaddresscount": 2,
                "languagecode": 1033,
            }
        ],
        "systemusers": [
            {
                "systemuserid": identity.user_id,
                "fullname": "# EmailRouter",
                "firstname": "#",
                "lastname": "EmailRouter",
                "accessmode": 4,  # non-interactive application user
                "isdisabled": False,
                "_businessunitid_value": identity.business_unit_id,
                "_businessunitid_value@" + LOOKUP_LOGICAL_NAME: "businessunit",
            }
        ],
    }


def seed(service: DataverseService, data: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    """Insert (or replace, by key) rows per entity set; returns the keys per set, in order."""
    store = service.store
    inserted: dict[str, list[str]] = {}
    pending: list[tuple[Table, str, dict[str, Any]]] = []
    with store.transaction():
        for set_name, rows in data.items():
            table = table_for_set(set_name)
            if table is None:
                raise SeedError(f"unknown entity set {set_name!r}")
            if not isinstance(rows, list):
                raise SeedError(f"{set_name}: expected a list of rows")
            for raw in rows:
                if not isinstance(raw, dict):
                    raise SeedError(f"{set_name}: every row must be an object")
                key, deferred = _insert(service, table, raw)
                inserted.setdefault(set_name, []).append(key)
                pending.append((table, key, deferred))
        # Second pass, once every seeded row exists: type the lookups, apply binds and children.
        for table, key, deferred in pending:
            _finish(service, table, key, deferred)
    return inserted


def _insert(service: DataverseService, table: Table, raw: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    store = service.store
    key_value = raw.get(table.key)
    if key_value is None and table.set_name == "organizations":
        existing = store.all("organizations")
        key_value = existing[0]["organizationid"] if existing else None
    key = str(key_value or new_key()).lower()
    if not is_guid(key):
        raise SeedError(f"{table.set_name}: {table.key} {key_value!r} is not a guid")
    deferred = {k: v for k, v in raw.items() if k.endswith("@odata.bind") or k in table.collections}
    plain = {k: v for k, v in raw.items() if k not in deferred}
    known = set(store.known_columns(table.set_name))
    store.register_columns(table.set_name, {k for k in plain if "@" not in k and k not in known})
    previous = store.get(table.set_name, key) or {}
    row: Row = {**table.defaults, **previous, **plain, table.key: key}
    for column, value in plain.items():
        if column.startswith("_") and column.endswith("_value") and isinstance(value, str):
            row[column] = value.lower()
    if table.state_model is not None:
        row.setdefault("statecode", 0)
        row.setdefault("statuscode", table.state_model.default_status(int(row["statecode"])))
    now = utc_now_text()
    row.setdefault("createdon", now)
    row["modifiedon"] = plain.get("modifiedon", now)
    if "versionnumber" not in plain:
        row["versionnumber"] = store.next_version()
    store.put(table.set_name, key, row)
    return key, deferred


def _finish(service: DataverseService, table: Table, key: str, deferred: dict[str, Any]) -> None:
    store = service.store
    row = dict(store.get(table.set_name, key) or {})
    for column in list(row):
        if column.startswith("_") and column.endswith("_value") and row[column] is not None:
            annotation = f"{column}@{LOOKUP_LOGICAL_NAME}"
            if not row.get(annotation):
                row[annotation] = _infer_target(service, table, column, str(row[column]))
    binds = {k: v for k, v in deferred.items() if k.endswith("@odata.bind")}
    if binds:
        values = read_body(table, binds, store)
        row.update({k: v for k, v in values.columns.items() if k not in SYSTEM_MANAGED})
    service.derive(table, row)
    store.put(table.set_name, key, row)
    for navigation in table.collections:
        children = deferred.get(navigation)
        if not children:
            continue
        nav = table.collections[navigation]
        child_table = table_for_set(nav.child_set)
        assert child_table is not None
        for child in children:
            service.create(child_table, child, parent=ParentLink(nav.foreign_key, key, table.logical_name))


def _infer_target(service: DataverseService, table: Table, column: str, key: str) -> str | None:
    """Which table a seeded ``_x_value`` points at: the lookup's targets that hold that key."""
    targets = [t for nav in table.lookup_for_column(column) for t in nav.targets]
    sets = [t.set_name for name in targets if (t := table_for_logical_name(name)) is not None]
    found = service.store.find_logical_target(key, sets)
    if found is not None:
        target = table_for_set(found)
        return target.logical_name if target else None
    return targets[0] if len(set(targets)) == 1 else None
