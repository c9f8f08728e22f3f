"""OData system query options: ``$filter`` (tokenizer + recursive-descent parser + evaluator),
``$orderby``, ``$select`` and ``$expand``.

Semantics follow Dataverse rather than bare OData where they differ: string comparisons are
case-insensitive (SQL Server collation), ``null`` sorts first ascending, guids compare without case.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cmp_to_key
from typing import Any

from emulators.dataverse.errors import query_error

# ---------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Token:
    kind: str  # name, string, number, guid, datetime, lparen, rparen, lbracket, rbracket, comma, equals, end
    value: Any
    position: int


_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![\w-])")
_DATETIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?(?![\w:.-])"
)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[mMdDlLfF]?(?![\w.])")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char.isspace():
            pos += 1
            continue
        if char in "(),[]=":
            kind = {
                "(": "lparen",
                ")": "rparen",
                ",": "comma",
                "[": "lbracket",
                "]": "rbracket",
                "=": "equals",
            }[char]
            tokens.append(Token(kind, char, pos))
            pos += 1
            continue
        if char == "'":
            value, pos = _read_string(text, pos)
            tokens.append(Token("string", value, pos))
            continue
        for kind, pattern in (("guid", _GUID), ("datetime", _DATETIME), ("number", _NUMBER), ("name", _NAME)):
            match = pattern.match(text, pos)
            if match:
                tokens.append(Token(kind, match.group(0), pos))
                pos = match.end()
                break
        else:
            raise query_error(f"Syntax error: character '{char}' is not valid at position {pos} in '{text}'.")
    tokens.append(Token("end", None, len(text)))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    """A single-quoted literal; an embedded quote is written twice (``'O''Brien'``)."""
    out: list[str] = []
    pos = start + 1
    while pos < len(text):
        if text[pos] == "'":
            if text.startswith("''", pos):
                out.append("'")
                pos += 2
                continue
            return "".join(out), pos + 1
        out.append(text[pos])
        pos += 1
    raise query_error(
        f"Syntax error: there is an unterminated string literal at position {start} in '{text}'."
    )


# ---------------------------------------------------------------- AST


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Property:
    name: str


@dataclass(frozen=True)
class Compare:
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Logical:
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Not:
    operand: Expr


@dataclass(frozen=True)
class Call:
    function: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class InValues:
    """``Microsoft.Dynamics.CRM.In(PropertyName='col',PropertyValues=['a','b'])``: ``col`` equals one of them."""

    column: str
    values: tuple[Any, ...]


Expr = Literal | Property | Compare | Logical | Not | Call | InValues

COMPARISONS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
STRING_FUNCTIONS = frozenset({"contains", "startswith", "endswith"})
IN_FUNCTION = "Microsoft.Dynamics.CRM.In"


class FilterParser:
    """``or`` < ``and`` < ``not`` < comparison < primary, as in OData's operator precedence."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0

    def parse(self) -> Expr:
        expr = self._or()
        if self._peek().kind != "end":
            self._fail(self._peek())
        return expr

    def _peek(self) -> Token:
        return self.tokens[self.index]

    def _next(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def _keyword(self, *words: str) -> str | None:
        token = self._peek()
        if token.kind == "name" and token.value in words:
            self.index += 1
            return str(token.value)
        return None

    def _expect(self, kind: str) -> Token:
        token = self._next()
        if token.kind != kind:
            self._fail(token)
        return token

    def _fail(self, token: Token) -> None:
        shown = "end of input" if token.kind == "end" else repr(token.value)
        raise query_error(f"Syntax error at position {token.position} ({shown}) in '{self.text}'.")

    def _or(self) -> Expr:
        expr = self._and()
        while self._keyword("or"):
            expr = Logical("or", expr, self._and())
        return expr

    def _and(self) -> Expr:
        expr = self._not()
        while self._keyword("and"):
            expr = Logical("and", expr, self._not())
        return expr

    def _not(self) -> Expr:
        if self._keyword("not"):
            return Not(self._not())
        return self._comparison()

    def _comparison(self) -> Expr:
        left = self._primary()
        op = self._keyword(*COMPARISONS)
        if op is None:
            return left
        return Compare(op, left, self._primary())

    def _primary(self) -> Expr:
        token = self._next()
        if token.kind == "lparen":
            expr = self._or()
            self._expect("rparen")
            return expr
        if token.kind == "string":
            return Literal(token.value)
        if token.kind == "guid":
            return Literal(str(token.value).lower())
        if token.kind == "datetime":
            return Literal(parse_datetime(str(token.value)))
        if token.kind == "number":
            raw = str(token.value).rstrip("mMdDlLfF")
            return Literal(float(raw) if any(c in raw for c in ".eE") else int(raw))
        if token.kind == "name":
            name = str(token.value)
            if self._peek().kind == "lparen":
                return self._call(name, token)
            if name in ("true", "false"):
                return Literal(name == "true")
            if name == "null":
                return Literal(None)
            if name in COMPARISONS or name in ("and", "or"):
                self._fail(token)
            return Property(name)
        self._fail(token)
        raise AssertionError("unreachable")

    def _call(self, name: str, token: Token) -> Expr:
        if name == IN_FUNCTION:
            return self._in_values()
        if name not in STRING_FUNCTIONS:
            raise query_error(f"The function '{name}' is not supported in $filter in this emulator.")
        self._expect("lparen")
        args: list[Expr] = [self._primary()]
        while self._peek().kind == "comma":
            self._next()
            args.append(self._primary())
        self._expect("rparen")
        if len(args) != 2:
            raise query_error(f"The function '{name}' takes 2 arguments, {len(args)} given in '{self.text}'.")
        return Call(name, tuple(args))

    def _in_values(self) -> Expr:
        """The query function's two named parameters, PropertyName first, as Dataverse takes them."""
        self._expect("lparen")
        self._parameter_name("PropertyName")
        column = self._literal()
        if not isinstance(column, str):
            raise query_error(f"PropertyName of {IN_FUNCTION} must be a string in '{self.text}'.")
        self._expect("comma")
        self._parameter_name("PropertyValues")
        self._expect("lbracket")
        values: list[Any] = []
        if self._peek().kind != "rbracket":
            values.append(self._literal())
            while self._peek().kind == "comma":
                self._next()
                values.append(self._literal())
        self._expect("rbracket")
        self._expect("rparen")
        return InValues(column, tuple(values))

    def _parameter_name(self, name: str) -> None:
        token = self._expect("name")
        if token.value != name:
            raise query_error(
                f"Syntax error: expected the parameter {name} at position {token.position} in '{self.text}'."
            )
        self._expect("equals")

    def _literal(self) -> Any:
        token = self._peek()
        expr = self._primary()
        if not isinstance(expr, Literal):
            self._fail(token)
        assert isinstance(expr, Literal)
        return expr.value


def parse_filter(text: str) -> Expr:
    return FilterParser(text).parse()


def properties_in(expr: Expr) -> Iterable[str]:
    """Every column an expression reads, for validating them against the table."""
    match expr:
        case Property(name):
            yield name
        case Compare(_, left, right) | Logical(_, left, right):
            yield from properties_in(left)
            yield from properties_in(right)
        case Not(operand):
            yield from properties_in(operand)
        case Call(_, args):
            for arg in args:
                yield from properties_in(arg)
        case InValues(column, _):
            yield column
        case _:
            return


# ---------------------------------------------------------------- evaluation


def parse_datetime(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _normalise(value: Any, other: Any) -> Any:
    """Bring a stored value and a literal to comparable Python values (the CI collation included)."""
    if isinstance(value, str):
        if isinstance(other, datetime):
            try:
                return parse_datetime(value)
            except ValueError:
                return value
        return value.casefold()
    return value


def compare_values(op: str, left: Any, right: Any) -> bool:
    if left is None or right is None:
        if op == "eq":
            return left is None and right is None
        if op == "ne":
            return not (left is None and right is None)
        return False
    a, b = _normalise(left, right), _normalise(right, left)
    try:
        if op == "eq":
            return bool(a == b)
        if op == "ne":
            return bool(a != b)
        if op == "gt":
            return bool(a > b)
        if op == "ge":
            return bool(a >= b)
        if op == "lt":
            return bool(a < b)
        return bool(a <= b)
    except TypeError:
        return False


def evaluate(expr: Expr, row: dict[str, Any]) -> Any:
    match expr:
        case Literal(value):
            return value
        case Property(name):
            return row.get(name)
        case Compare(op, left, right):
            return compare_values(op, evaluate(left, row), evaluate(right, row))
        case Logical("and", left, right):
            return bool(evaluate(left, row)) and bool(evaluate(right, row))
        case Logical(_, left, right):
            return bool(evaluate(left, row)) or bool(evaluate(right, row))
        case Not(operand):
            return not bool(evaluate(operand, row))
        case InValues(column, candidates):
            return any(compare_values("eq", row.get(column), value) for value in candidates)
        case Call(function, (haystack_expr, needle_expr)):
            haystack, needle = evaluate(haystack_expr, row), evaluate(needle_expr, row)
            if not isinstance(haystack, str) or not isinstance(needle, str):
                return False
            haystack, needle = haystack.casefold(), needle.casefold()
            if function == "contains":
                return needle in haystack
            if function == "startswith":
                return haystack.startswith(needle)
            return haystack.endswith(needle)
    raise AssertionError(f"unknown expression {expr!r}")


# ---------------------------------------------------------------- $orderby / $select / $expand


@dataclass(frozen=True)
class OrderKey:
    column: str
    descending: bool = False


def parse_orderby(text: str) -> list[OrderKey]:
    keys: list[OrderKey] = []
    for item in split_top_level(text, ","):
        parts = item.split()
        if not parts or len(parts) > 2 or (len(parts) == 2 and parts[1].lower() not in ("asc", "desc")):
            raise query_error(f"Syntax error in $orderby '{text}'.")
        keys.append(OrderKey(parts[0], len(parts) == 2 and parts[1].lower() == "desc"))
    return keys


def _sort_compare(a: Any, b: Any) -> int:
    if a is None or b is None:
        return (a is not None) - (b is not None)  # nulls first, as SQL Server sorts them
    a, b = _normalise(a, b), _normalise(b, a)
    try:
        return (a > b) - (a < b)
    except TypeError:
        return (str(a) > str(b)) - (str(a) < str(b))


def sort_rows(rows: list[dict[str, Any]], keys: list[OrderKey]) -> list[dict[str, Any]]:
    ordered = list(rows)
    for key in reversed(keys):  # stable sorts, least significant key first
        column = key.column

        def by_column(x: dict[str, Any], y: dict[str, Any], column: str = column) -> int:
            return _sort_compare(x.get(column), y.get(column))

        ordered.sort(key=cmp_to_key(by_column), reverse=key.descending)
    return ordered


def parse_select(text: str) -> list[str]:
    columns = [c.strip() for c in text.split(",")]
    if any(not _NAME.fullmatch(c) for c in columns):
        raise query_error(f"Syntax error in $select '{text}'.")
    return columns


@dataclass
class QueryOptions:
    """The options one (sub)query carries; ``$expand`` items nest their own."""

    select: list[str] | None = None
    filter: Expr | None = None
    orderby: list[OrderKey] = field(default_factory=list)
    top: int | None = None
    expand: list[ExpandItem] = field(default_factory=list)
    count: bool = False


@dataclass
class ExpandItem:
    navigation: str
    options: QueryOptions


def parse_top(text: str) -> int:
    if not text.isdigit():
        raise query_error(f"Invalid value '{text}' for $top query option found.")
    return int(text)


def parse_expand(text: str) -> list[ExpandItem]:
    items: list[ExpandItem] = []
    for item in split_top_level(text, ","):
        item = item.strip()
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?", item, re.DOTALL)
        if not match:
            raise query_error(f"Syntax error in $expand '{text}'.")
        options: dict[str, str] = {}
        for option in split_top_level(match.group(2) or "", ";"):
            if not option.strip():
                continue
            name, sep, value = option.partition("=")
            if not sep:
                raise query_error(f"Syntax error in $expand option '{option}'.")
            options[name.strip()] = value.strip()
        items.append(ExpandItem(match.group(1), parse_options(options, nested=True)))
    return items


def query_string_options(query: str) -> dict[str, str]:
    """The raw options of a request's query string, decoded as ASP.NET decodes one: split on
    ``&``, each name and value percent-decoded as UTF-8 with ``+`` read as a space. A system query
    option given twice is refused, as OData does (Dataverse does not pick one of them)."""
    options: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(
        query, keep_blank_values=True, encoding="utf-8", errors="replace"
    ):
        if name.startswith("$") and name in options:
            raise query_error(
                f"Query option '{name}' was specified more than once, it must be specified at most once."
            )
        options[name] = value
    return options


def parse_options(options: dict[str, str], nested: bool = False) -> QueryOptions:
    """Turn raw ``$option=value`` pairs into :class:`QueryOptions`; ``$skip`` is refused (Dataverse
    pages with ``$skiptoken`` only)."""
    parsed = QueryOptions()
    for name, value in options.items():
        if name == "$select":
            parsed.select = parse_select(value)
        elif name == "$filter":
            parsed.filter = parse_filter(value)
        elif name == "$orderby":
            parsed.orderby = parse_orderby(value)
        elif name == "$top":
            parsed.top = parse_top(value)
        elif name == "$expand":
            parsed.expand = parse_expand(value)
        elif name == "$count" and not nested:
            if value not in ("true", "false"):
                raise query_error(f"Invalid value '{value}' for $count query option found.")
            parsed.count = value == "true"
        elif name == "$skip":
            raise query_error("The query parameter $skip is not supported")
        elif name in ("$skiptoken", "$format") and not nested:
            continue
        elif name.startswith("$"):
            raise query_error(f"The query parameter {name} is not supported")
    return parsed


def split_top_level(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside parentheses and quoted literals."""
    parts: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == separator and depth == 0 and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if current or parts:
        parts.append("".join(current))
    return [p for p in parts if p.strip()] if separator == ";" else parts
