"""Reading a create/update body the way the Web API's OData reader does.

Columns must exist and have the right JSON type; strings respect their maximum length; lookups are
written only through ``navigation@odata.bind`` (never ``_x_value``) and must point at an existing
row of an allowed table; collection-valued navigation properties carry child rows (deep insert).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from emulators.dataverse.errors import (
    DataverseError,
    invalid_payload,
    record_not_found,
    resource_not_found,
    string_too_long,
)
from emulators.dataverse.query import parse_datetime
from emulators.dataverse.representation import ASSOCIATED_NAVIGATION, LOOKUP_LOGICAL_NAME
from emulators.dataverse.schema import SYSTEM_MANAGED, Column, Table, table_for_set
from emulators.dataverse.store import Store

_REFERENCE = re.compile(r"^(?:https?://[^/]+)?(?:/?api/data/v9\.\d/)?/?([A-Za-z_][A-Za-z0-9_]*)\(([^)]*)\)$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_EDM_TYPE = {
    "string": "Edm.String",
    "memo": "Edm.String",
    "int": "Edm.Int32",
    "choice": "Edm.Int32",
    "decimal": "Edm.Decimal",
    "bool": "Edm.Boolean",
    "guid": "Edm.Guid",
    "datetime": "Edm.DateTimeOffset",
}


@dataclass
class WriteValues:
    """A body split into column values (lookups already resolved) and deep-insert children."""

    columns: dict[str, Any] = field(default_factory=dict)
    children: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def is_guid(text: str) -> bool:
    return bool(_GUID.match(text))


def normalise_key(table: Table, text: str) -> str:
    """A URL or body key must be a guid (alternate keys are not defined on these tables)."""
    text = text.strip()
    if text.startswith(f"{table.key}="):
        text = text.split("=", 1)[1]
    if not is_guid(text):
        raise DataverseError(
            "0x80060888",
            f"The key in the request URI is not valid for resource 'Microsoft.Dynamics.CRM.{table.logical_name}'. "
            "Ensure that the names and number of key properties match the declared or alternate key "
            "properties for the resource.",
            status=400,
        )
    return text.lower()


def new_key() -> str:
    return str(uuid.uuid4())


def read_body(table: Table, body: Any, store: Store) -> WriteValues:
    if not isinstance(body, dict):
        raise invalid_payload(table.set_name, "The request body must be a JSON object.")
    result = WriteValues()
    known = set(store.known_columns(table.set_name))
    for name, value in body.items():
        if name.endswith("@odata.bind"):
            _bind(table, name[: -len("@odata.bind")], value, store, result)
        elif "@" in name:
            continue  # instance annotations such as @odata.type carry no data
        elif name in table.collections:
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise invalid_payload(
                    table.set_name, f"A collection was expected for the navigation property '{name}'."
                )
            result.children[name] = value
        elif name.startswith("_") and name.endswith("_value"):
            raise invalid_payload(
                table.set_name,
                f"The property '{name}' is a read-only lookup value; set it with the navigation "
                "property and @odata.bind.",
            )
        elif name in known:
            if name in SYSTEM_MANAGED:
                continue
            spec = table.columns.get(name)
            result.columns[name] = _coerce(table, spec, name, value)
        else:
            raise invalid_payload(
                table.set_name,
                f"The property '{name}' does not exist on type 'Microsoft.Dynamics.CRM.{table.logical_name}'. "
                "Make sure to only use property names that are defined by the type or mark the type as open type.",
            )
    return result


def _coerce(table: Table, spec: Column | None, name: str, value: Any) -> Any:
    if value is None or spec is None:
        return value
    kind = spec.kind
    ok = {
        "string": isinstance(value, str),
        "memo": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "choice": isinstance(value, int) and not isinstance(value, bool),
        "decimal": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "guid": isinstance(value, str) and is_guid(value),
        "datetime": isinstance(value, str),
    }.get(kind, True)
    if not ok:
        raise invalid_payload(
            table.set_name, f"Cannot convert the literal '{value}' to the expected type '{_EDM_TYPE[kind]}'."
        )
    if kind in ("string", "memo") and spec.max_length is not None and len(value) > spec.max_length:
        raise string_too_long(name, table.logical_name, spec.max_length)
    if kind == "guid":
        return str(value).lower()
    if kind == "datetime":
        try:
            return parse_datetime(value).strftime("%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            raise invalid_payload(
                table.set_name,
                f"Cannot convert the literal '{value}' to the expected type 'Edm.DateTimeOffset'.",
            ) from None
    return value


def parse_reference(text: str) -> tuple[str, str] | None:
    """``/contacts(<guid>)``, ``contacts(<guid>)`` or an absolute entity URL -> (set, key text)."""
    match = _REFERENCE.match(text.strip())
    return (match.group(1), match.group(2)) if match else None


def _bind(table: Table, navigation: str, value: Any, store: Store, result: WriteValues) -> None:
    nav = table.lookups.get(navigation)
    if nav is None:
        raise invalid_payload(
            table.set_name,
            f"An undeclared property '{navigation}' which only has property annotations in the payload "
            "but no property value was found in the payload. In OData, only declared navigation "
            "properties and declared named streams can be represented as properties without values.",
        )
    if value is None:
        result.columns[nav.column] = None
        result.columns[f"{nav.column}@{LOOKUP_LOGICAL_NAME}"] = None
        result.columns[f"{nav.column}@{ASSOCIATED_NAVIGATION}"] = None
        return
    reference = parse_reference(value) if isinstance(value, str) else None
    if reference is None:
        raise invalid_payload(
            table.set_name, f"The value '{value}' of '{navigation}@odata.bind' is not an entity URI."
        )
    set_name, key_text = reference
    target = table_for_set(set_name)
    if target is None:
        raise resource_not_found(set_name)
    if target.logical_name not in nav.targets:
        raise invalid_payload(
            table.set_name,
            f"The navigation property '{navigation}' expects an entity of type "
            f"'Microsoft.Dynamics.CRM.{nav.targets[0]}' but the URI refers to '{target.logical_name}'.",
        )
    key = normalise_key(target, key_text)
    if store.get(target.set_name, key) is None:
        raise record_not_found(target.logical_name, key)
    result.columns[nav.column] = key
    result.columns[f"{nav.column}@{LOOKUP_LOGICAL_NAME}"] = target.logical_name
    result.columns[f"{nav.column}@{ASSOCIATED_NAVIGATION}"] = navigation
