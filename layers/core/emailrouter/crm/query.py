"""Web API query URLs, built in one place: OData literals and the query string's encoding.

Values that come from mail (addresses, Message-IDs, tracking tokens) reach a `$filter` only as
:func:`literal` text, and every option value is percent-encoded once, by :func:`query_path`.
Dataverse decodes the query string as ASP.NET does (``+`` is a space, ``%27`` a quote, a raw
``&`` or ``#`` ends the option or the URL) before it parses the filter, so text concatenated into
a URL unencoded changes the query.

Example:
    >>> query_path("contacts", select=("contactid",), filter=eq("emailaddress1", "ann+crm@x.org"), top=5)
    "contacts?$select=contactid&$filter=emailaddress1%20eq%20'ann%2Bcrm%40x.org'&$top=5"
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

IN_FUNCTION = "Microsoft.Dynamics.CRM.In"
# Encoded characters of values in one $filter: half the Web API's ~32 KB URL limit, leaving room
# for the rest of the URL.
FILTER_BUDGET = 16_000
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Left as they are in option values: OData's own punctuation, which the query string does not
# give a meaning to. Everything else (& # + % = ? / space, non-ASCII) is percent-encoded.
_SAFE = "$,()'*:"


def literal(value: str) -> str:
    """A string literal for `$filter`: single quotes, embedded quotes doubled.

    >>> literal("O'Brien")
    "'O''Brien'"
    """
    return "'" + value.replace("'", "''") + "'"


def guid(value: str) -> str:
    """A GUID for a `$filter` or a key, unquoted as OData writes them; anything else is refused.

    >>> guid("6F9619FF-8B86-D011-B42D-00CF4FC964FF")
    '6f9619ff-8b86-d011-b42d-00cf4fc964ff'
    """
    return str(uuid.UUID(value))


def eq(column: str, value: str) -> str:
    """`column eq 'value'`, the value as a literal."""
    return f"{_column(column)} eq {literal(value)}"


def any_of(column: str, values: Sequence[str]) -> str:
    """`column` equals one of `values`: Dataverse's In query function (one clause however many).

    >>> any_of("emailaddress1", ["a@x.org", "b@x.org"])
    "Microsoft.Dynamics.CRM.In(PropertyName='emailaddress1',PropertyValues=['a@x.org','b@x.org'])"
    """
    if not values:
        raise ValueError("an In clause needs at least one value")
    listed = ",".join(literal(v) for v in values)
    return f"{IN_FUNCTION}(PropertyName={literal(_column(column))},PropertyValues=[{listed}])"


def in_chunks(
    values: Sequence[str], *, columns: int = 1, max_values: int | None = None
) -> Iterator[list[str]]:
    """`values` in runs whose In lists, one per column on `columns` columns, fit FILTER_BUDGET
    encoded characters and hold at most `max_values` each (long or non-ASCII values make shorter
    runs)."""
    run: list[str] = []
    size = 0
    for value in values:
        cost = columns * (encoded_length(literal(value)) + 1)  # the literal and its comma
        if run and (len(run) == max_values or size + cost > FILTER_BUDGET):
            yield run
            run, size = [], 0
        run.append(value)
        size += cost
    if run:
        yield run


def query_path(
    entity_set: str,
    *,
    select: Iterable[str] = (),
    filter: str | None = None,
    orderby: str | None = None,
    top: int | None = None,
    expand: str | None = None,
) -> str:
    """`entity_set?$select=…&$filter=…`, relative to the service root, each option encoded once."""
    options: list[tuple[str, str]] = []
    columns = [_column(c) for c in select]
    if columns:
        options.append(("$select", ",".join(columns)))
    if filter:
        options.append(("$filter", filter))
    if orderby:
        options.append(("$orderby", orderby))
    if top is not None:
        if top < 1:
            raise ValueError(f"$top must be at least 1, not {top}")
        options.append(("$top", str(top)))
    if expand:
        options.append(("$expand", expand))
    query = "&".join(f"{name}={quote(value, safe=_SAFE)}" for name, value in options)
    return f"{entity_set}?{query}" if query else entity_set


def encoded_length(text: str) -> int:
    """How long `text` is once percent-encoded in a query string (for keeping URLs in bounds)."""
    return len(quote(text, safe=_SAFE))


def _column(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a column name: {name!r}")
    return name
