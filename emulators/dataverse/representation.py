"""Rows as the Web API shows them: ``@odata.etag``, ``_x_value`` lookups, annotations on request,
``$select``/``$expand``/nested options, and the ``@odata.context`` URL (fact sheet §4, §4.1)."""

from __future__ import annotations

from typing import Any

from emulators.dataverse.errors import property_not_found
from emulators.dataverse.protocol import Preferences
from emulators.dataverse.query import QueryOptions, evaluate, properties_in, sort_rows
from emulators.dataverse.schema import Table, table_for_logical_name, table_for_set
from emulators.dataverse.store import Row, Store

FORMATTED = "OData.Community.Display.V1.FormattedValue"
LOOKUP_LOGICAL_NAME = "Microsoft.Dynamics.CRM.lookuplogicalname"
ASSOCIATED_NAVIGATION = "Microsoft.Dynamics.CRM.associatednavigationproperty"


def etag(row: Row) -> str:
    return f'W/"{row["versionnumber"]}"'


def validate_options(store: Store, table: Table, options: QueryOptions) -> None:
    """Reject unknown columns and navigation properties the way Dataverse does (400 0x80060888)."""
    known = set(store.known_columns(table.set_name))
    names = list(options.select or [])
    names += [k.column for k in options.orderby]
    if options.filter is not None:
        names += list(properties_in(options.filter))
    for name in names:
        if name not in known:
            raise property_not_found(name, table.logical_name)
    for item in options.expand:
        target = expand_target(table, item.navigation)
        if target is None:
            raise property_not_found(item.navigation, table.logical_name)
        validate_options(store, target, item.options)


def expand_target(table: Table, navigation: str) -> Table | None:
    if navigation in table.collections:
        return table_for_set(table.collections[navigation].child_set)
    if navigation in table.lookups:
        nav = table.lookups[navigation]
        return table_for_logical_name(nav.targets[0]) if len(nav.targets) == 1 else None
    return None


def apply_options(rows: list[Row], options: QueryOptions) -> list[Row]:
    """``$filter`` then ``$orderby`` (``$top`` is applied by the caller, which also pages)."""
    if options.filter is not None:
        expr = options.filter
        rows = [row for row in rows if evaluate(expr, row)]
    if options.orderby:
        rows = sort_rows(rows, options.orderby)
    return rows


def context_fragment(table: Table, options: QueryOptions) -> str:
    parts = list(options.select or [])
    for item in options.expand:
        inner = ",".join(item.options.select or [])
        parts.append(f"{item.navigation}({inner})")
    return f"{table.set_name}({','.join(parts)})" if parts else table.set_name


class Representer:
    """Turns stored rows into response JSON for one request (its preferences decide annotations)."""

    def __init__(self, store: Store, prefs: Preferences) -> None:
        self.store = store
        self.prefs = prefs
        # parent key -> child rows, built once per (child set, foreign key) for this response, so
        # expanding a page of emails is not a scan of every party per email.
        self._children: dict[tuple[str, str], dict[str, list[Row]]] = {}

    def entity(self, table: Table, row: Row, options: QueryOptions) -> dict[str, Any]:
        out: dict[str, Any] = {"@odata.etag": etag(row)}
        columns = options.select if options.select else self.store.known_columns(table.set_name)
        for column in columns:
            self._emit(out, table, row, column)
        if table.key not in out:
            out[table.key] = row[table.key]
        for item in options.expand:
            out[item.navigation] = self._expanded(table, row, item.navigation, item.options)
        return out

    def _emit(self, out: dict[str, Any], table: Table, row: Row, column: str) -> None:
        value = row.get(column)
        spec = table.columns.get(column)
        if value is not None and spec is not None:
            if spec.kind == "lookup":
                self._lookup_annotations(out, row, column, value)
            elif spec.kind == "choice":
                label = self._choice_label(table, column, value)
                if label is not None and self.prefs.wants_annotation(FORMATTED):
                    out[f"{column}@{FORMATTED}"] = label
        out[column] = value

    def _lookup_annotations(self, out: dict[str, Any], row: Row, column: str, value: str) -> None:
        logical_name = row.get(f"{column}@{LOOKUP_LOGICAL_NAME}")
        if logical_name and self.prefs.wants_annotation(FORMATTED):
            name = self._primary_name(str(logical_name), value)
            if name is not None:
                out[f"{column}@{FORMATTED}"] = name
        navigation = row.get(f"{column}@{ASSOCIATED_NAVIGATION}")
        if navigation and self.prefs.wants_annotation(ASSOCIATED_NAVIGATION):
            out[f"{column}@{ASSOCIATED_NAVIGATION}"] = navigation
        if logical_name and self.prefs.wants_annotation(LOOKUP_LOGICAL_NAME):
            out[f"{column}@{LOOKUP_LOGICAL_NAME}"] = logical_name

    def _primary_name(self, logical_name: str, key: str) -> str | None:
        target = table_for_logical_name(logical_name)
        if target is None or target.primary_name is None:
            return None
        row = self.store.get(target.set_name, key)
        return None if row is None else row.get(target.primary_name)

    @staticmethod
    def _choice_label(table: Table, column: str, value: Any) -> str | None:
        model = table.state_model
        if model is None or not isinstance(value, int):
            return None
        if column == "statecode":
            return model.labels.get(value)
        if column == "statuscode":
            return model.status_labels.get(value)
        return None

    def _children_of(self, set_name: str, foreign_key: str, key: str) -> list[Row]:
        index = self._children.get((set_name, foreign_key))
        if index is None:
            index = {}
            for child in self.store.all(set_name):
                parent = child.get(foreign_key)
                if parent is not None:
                    index.setdefault(str(parent).lower(), []).append(child)
            self._children[(set_name, foreign_key)] = index
        return list(index.get(str(key).lower(), []))

    def _expanded(self, table: Table, row: Row, navigation: str, options: QueryOptions) -> Any:
        if navigation in table.collections:
            nav = table.collections[navigation]
            child = table_for_set(nav.child_set)
            assert child is not None
            children = apply_options(
                self._children_of(nav.child_set, nav.foreign_key, row[table.key]), options
            )
            if options.top is not None:
                children = children[: options.top]
            return [self.entity(child, r, options) for r in children]
        lookup = table.lookups[navigation]
        target_key = row.get(lookup.column)
        target = table_for_logical_name(lookup.targets[0])
        if target_key is None or target is None:
            return None
        if row.get(f"{lookup.column}@{LOOKUP_LOGICAL_NAME}") not in (None, target.logical_name):
            return None
        target_row = self.store.get(target.set_name, str(target_key))
        return None if target_row is None else self.entity(target, target_row, options)
