"""A table's row filter (``table_options.<table>.where``) evaluated by cdc itself, where
PostgreSQL cannot apply it in the publication (before 15, or a publication FOR ALL
TABLES).

The one job: parse the filter and decide, for a row as pgoutput sends it (each value in
its type's text form), whether PostgreSQL's ``WHERE`` would keep it. It accepts only the
part of SQL whose result it can reproduce exactly, and refuses the rest when the connector
starts, so a row is never published that the filter was meant to keep out:

- a column compared with a constant: ``=``, ``<>``/``!=`` for every supported type;
  ``<``, ``<=``, ``>``, ``>=`` for integers and ``numeric`` only (text ordering depends on
  the collation, floats on casts);
- ``column [NOT] IN (constant, ...)``, ``column IS [NOT] NULL``, a ``boolean`` column on
  its own, ``AND``, ``OR``, ``NOT``, parentheses, ``TRUE``/``FALSE``;
- columns of the integer types and ``oid``, ``numeric``, ``text``/``varchar``/``char(n)``
  (trailing blanks ignored, as PostgreSQL does)/``name``, ``boolean`` and ``uuid``.

SQL's three-valued logic holds: a comparison with NULL is unknown, and only a filter that
is true keeps the row. Pure: no I/O. Differentially tested against PostgreSQL's own
``WHERE`` (tests/integration/test_row_filter_semantics.py).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final

from cdc.errors import ConfigError

__all__ = ["RowFilter", "parse_row_filter"]

_INTEGER: Final = frozenset({20, 21, 23, 26})  # int8, int2, int4, oid
_NUMERIC: Final = 1700
_TEXT: Final = frozenset({25, 1043, 19})  # text, varchar, name
_BPCHAR: Final = 1042
_BOOL: Final = 16
_UUID: Final = 2950
_ORDERED: Final = frozenset({"<", "<=", ">", ">="})
_FLIP: Final = {"=": "=", "<>": "<>", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_TRUE_WORDS: Final = frozenset({"t", "true", "y", "yes", "on", "1"})
_FALSE_WORDS: Final = frozenset({"f", "false", "n", "no", "off", "0"})

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)
    | '(?P<string>(?:[^']|'')*)'
    | "(?P<quoted>(?:[^"]|"")+)"
    | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
    | (?P<op><>|!=|<=|>=|=|<|>|\(|\)|,|-)
    )""",
    re.VERBOSE,
)
_KEYWORDS: Final = frozenset({"and", "or", "not", "is", "null", "in", "true", "false"})

# A parsed filter: evaluates a row (text values by column index; None is NULL) to True,
# False or None (unknown).
_Node = Callable[[Sequence[object]], bool | None]


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # number, string, ident, keyword, op, end
    text: str


@dataclass(frozen=True, slots=True)
class RowFilter:
    """A parsed filter: ``matches`` says whether PostgreSQL's WHERE keeps a row."""

    text: str
    columns: frozenset[str]  # the columns it reads
    _root: _Node

    def matches(self, values: Sequence[object]) -> bool:
        """Whether the row (pgoutput's text values, in column order) passes: true only,
        not false and not unknown."""
        return self._root(values) is True


def parse_row_filter(
    text: str, columns: Mapping[str, int], *, table: str, indexes: Mapping[str, int]
) -> RowFilter:
    """Parse ``text`` for a table whose columns have these type OIDs (and positions).

    Raises:
        ConfigError: naming the setting and what cdc cannot evaluate exactly (write the
            filter in the supported form, or let PostgreSQL 15+ apply it).
    """
    parser = _Parser(text, columns, indexes, table)
    root = parser.parse()
    return RowFilter(text, frozenset(parser.used), root)


class _Parser:
    def __init__(
        self, text: str, types: Mapping[str, int], indexes: Mapping[str, int], table: str
    ) -> None:
        self._text = text
        self._types = types
        self._indexes = indexes
        self._table = table
        self._tokens = self._tokenize(text)
        self._at = 0
        self.used: set[str] = set()

    # --- errors -------------------------------------------------------------------------

    def _refuse(self, what: str) -> ConfigError:
        return ConfigError(
            f"table {self._table}: cdc evaluates this row filter itself (PostgreSQL cannot"
            f" apply it in the publication here) and cannot evaluate {what} exactly. It"
            " supports a column compared with a constant (=, <>; <, <=, >, >= for integer"
            " and numeric columns), [NOT] IN (...), IS [NOT] NULL, a boolean column, AND,"
            " OR, NOT and parentheses, on integer, numeric, text, varchar, char, name,"
            " boolean and uuid columns. Rewrite the filter, or use PostgreSQL 15+ with the"
            " tables listed in `tables`, where PostgreSQL applies any filter",
            key=f"table_options.{self._table}.where",
        )

    # --- tokens -------------------------------------------------------------------------

    def _tokenize(self, text: str) -> list[_Token]:
        tokens: list[_Token] = []
        position = 0
        while position < len(text):
            if text[position:].strip() == "":
                break
            match = _TOKEN.match(text, position)
            if match is None or match.end() == position:
                raise self._refuse(f"{text[position:].strip()[:20]!r}")
            position = match.end()
            if match["number"] is not None:
                tokens.append(_Token("number", match["number"]))
            elif match["string"] is not None:
                tokens.append(_Token("string", match["string"].replace("''", "'")))
            elif match["quoted"] is not None:
                tokens.append(_Token("ident", match["quoted"].replace('""', '"')))
            elif match["word"] is not None:
                word = match["word"].lower()
                tokens.append(_Token("keyword" if word in _KEYWORDS else "ident", word))
            else:
                tokens.append(_Token("op", match["op"]))
        tokens.append(_Token("end", ""))
        return tokens

    def _peek(self) -> _Token:
        return self._tokens[self._at]

    def _next(self) -> _Token:
        token = self._tokens[self._at]
        self._at += 1
        return token

    def _accept(self, kind: str, text: str) -> bool:
        token = self._peek()
        if token.kind == kind and token.text == text:
            self._at += 1
            return True
        return False

    def _expect(self, kind: str, text: str) -> None:
        if not self._accept(kind, text):
            found = self._peek().text or "the end"
            raise self._refuse(f"{found!r} where {text!r} was expected")

    # --- grammar ------------------------------------------------------------------------

    def parse(self) -> _Node:
        node = self._or()
        if self._peek().kind != "end":
            raise self._refuse(f"{self._peek().text!r}")
        return node

    def _or(self) -> _Node:
        nodes = [self._and()]
        while self._accept("keyword", "or"):
            nodes.append(self._and())
        return nodes[0] if len(nodes) == 1 else _combined(nodes, decisive=True)

    def _and(self) -> _Node:
        nodes = [self._not()]
        while self._accept("keyword", "and"):
            nodes.append(self._not())
        return nodes[0] if len(nodes) == 1 else _combined(nodes, decisive=False)

    def _not(self) -> _Node:
        if self._accept("keyword", "not"):
            return _negated(self._not())
        return self._predicate()

    def _predicate(self) -> _Node:
        token = self._peek()
        if token.kind == "op" and token.text == "(":
            self._next()
            node = self._or()
            self._expect("op", ")")
            return node
        following = self._tokens[min(self._at + 1, len(self._tokens) - 1)]
        if token.kind == "keyword" and token.text in ("true", "false") and not _compares(following):
            self._next()
            constant = token.text == "true"
            return lambda _row: constant
        if token.kind == "ident":
            if following.kind == "op" and following.text == "(":
                raise self._refuse(f"the function call {token.text}(...)")
            return self._column_predicate()
        # A constant first: `5 < qty` is `qty > 5`.
        literal = self._literal()
        op = self._comparison()
        column = self._column()
        return self._compare(column, _FLIP[op], literal)

    def _column_predicate(self) -> _Node:
        column = self._column()
        token = self._peek()
        if token.kind == "keyword" and token.text == "is":
            self._next()
            negated = self._accept("keyword", "not")
            self._expect("keyword", "null")
            index = self._indexes[column]
            if negated:
                return lambda row: row[index] is not None
            return lambda row: row[index] is None
        negated = False
        if token.kind == "keyword" and token.text == "not":
            self._next()
            negated = True
            if self._peek().text != "in":
                raise self._refuse(f"NOT after column {column!r}")
        if self._accept("keyword", "in"):
            return self._in(column, negated)
        if _compares(token):
            op = self._comparison()
            literal = self._literal()
            return self._compare(column, op, literal)
        if self._types[column] != _BOOL:
            raise self._refuse(f"column {column!r} on its own (only a boolean column can be)")
        index = self._indexes[column]
        return lambda row: None if row[index] is None else row[index] == "t"

    def _column(self) -> str:
        token = self._next()
        if token.kind != "ident":
            raise self._refuse(f"{token.text or 'the end'!r} where a column was expected")
        if token.text not in self._types:
            raise ConfigError(
                f"table {self._table} has no column {token.text!r} (its row filter names"
                f" it); its columns are {', '.join(sorted(self._types))}",
                key=f"table_options.{self._table}.where",
            )
        type_oid = self._types[token.text]
        if type_oid not in _INTEGER | _TEXT | {_NUMERIC, _BPCHAR, _BOOL, _UUID}:
            raise self._refuse(f"a condition on column {token.text!r} (type OID {type_oid})")
        self.used.add(token.text)
        return token.text

    def _comparison(self) -> str:
        token = self._next()
        if token.kind == "op" and token.text == "!=":
            return "<>"
        if token.kind == "op" and token.text in _FLIP:
            return token.text
        raise self._refuse(f"{token.text or 'the end'!r} where a comparison was expected")

    def _literal(self) -> _Token:
        token = self._next()
        if token.kind == "op" and token.text == "-":
            number = self._next()
            if number.kind != "number":
                raise self._refuse("'-' before something other than a number")
            return _Token("number", "-" + number.text)
        if token.kind in ("number", "string"):
            return token
        if token.kind == "keyword" and token.text in ("true", "false", "null"):
            return token
        raise self._refuse(f"{token.text or 'the end'!r} where a constant was expected")

    def _in(self, column: str, negated: bool) -> _Node:
        self._expect("op", "(")
        nodes = [self._compare(column, "=", self._literal())]
        while self._accept("op", ","):
            nodes.append(self._compare(column, "=", self._literal()))
        self._expect("op", ")")
        any_of = _combined(nodes, decisive=True)
        return _negated(any_of) if negated else any_of

    # --- typed comparisons ----------------------------------------------------------------

    def _compare(self, column: str, op: str, literal: _Token) -> _Node:
        index = self._indexes[column]
        type_oid = self._types[column]
        if literal.kind == "keyword" and literal.text == "null":
            return lambda _row: None  # anything compared with NULL is unknown
        convert = self._converter(column, type_oid, op)
        constant = convert(self._constant(column, type_oid, literal))
        test = _OPERATORS[op]

        def node(row: Sequence[object]) -> bool | None:
            value = row[index]
            if value is None:
                return None
            if value.__class__ is not str:
                raise ValueError(f"column {column!r} has no value to filter on")
            return test(convert(value), constant)

        return node

    def _converter(self, column: str, type_oid: int, op: str) -> Callable[[str], object]:
        if type_oid in _INTEGER or type_oid == _NUMERIC:
            return _number
        if op in _ORDERED:
            raise self._refuse(f"{op!r} on column {column!r} (only = and <> on its type)")
        if type_oid == _BPCHAR:
            return lambda text: text.rstrip(" ")
        if type_oid == _UUID:
            return uuid.UUID
        return str  # text, varchar, name; boolean values are 't' / 'f'

    def _constant(self, column: str, type_oid: int, literal: _Token) -> str:
        """The constant in the column's text form (what pgoutput sends), or refused when
        PostgreSQL would refuse it or compare it in another type."""
        text = literal.text
        if type_oid in _INTEGER or type_oid == _NUMERIC:
            if literal.kind == "keyword":
                raise self._refuse(f"{text.upper()} compared with column {column!r}")
            # '5' becomes an integer; '5.5' would be an error in PostgreSQL.
            if (
                literal.kind == "string"
                and type_oid in _INTEGER
                and re.fullmatch(r"\s*[+-]?\d+\s*", text) is None
            ):
                raise self._refuse(f"'{text}' as a value of integer column {column!r}")
            try:
                _number(text)
            except InvalidOperation:
                raise self._refuse(f"'{text}' as a number for column {column!r}") from None
            return text.strip()
        if type_oid == _BOOL:
            if literal.kind == "keyword":
                return "t" if text == "true" else "f"
            word = text.strip().lower()
            if literal.kind == "string" and word in _TRUE_WORDS:
                return "t"
            if literal.kind == "string" and word in _FALSE_WORDS:
                return "f"
            raise self._refuse(f"{text!r} as a boolean for column {column!r}")
        if literal.kind != "string":
            raise self._refuse(f"{text!r} compared with {column!r} (a quoted string is needed)")
        if type_oid == _UUID:
            try:
                uuid.UUID(text)
            except ValueError:
                raise self._refuse(f"'{text}' as a uuid for column {column!r}") from None
        return text


def _number(text: str) -> tuple[int, Decimal]:
    """A numeric value as PostgreSQL orders it: NaN equal to itself and above every
    number, infinity included."""
    value = Decimal(text)
    return (1, Decimal(0)) if value.is_nan() else (0, value)


def _compares(token: _Token) -> bool:
    """Whether ``token`` is a comparison operator."""
    return token.kind == "op" and (token.text in _FLIP or token.text == "!=")


def _negated(inner: _Node) -> _Node:
    """SQL's NOT: unknown stays unknown."""
    return lambda row: None if (v := inner(row)) is None else not v


def _combined(nodes: list[_Node], *, decisive: bool) -> _Node:
    """SQL's OR (``decisive`` True: one true child decides) or AND (False: one false child
    decides); otherwise unknown if a child is, else the other value."""

    def node(row: Sequence[object]) -> bool | None:
        unknown = False
        for child in nodes:
            value = child(row)
            if value is decisive:
                return decisive
            if value is None:
                unknown = True
        return None if unknown else not decisive

    return node


_OPERATORS: Final[Mapping[str, Callable[[object, object], bool]]] = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "<": lambda a, b: a < b,  # type: ignore[operator]
    "<=": lambda a, b: a <= b,  # type: ignore[operator]
    ">": lambda a, b: a > b,  # type: ignore[operator]
    ">=": lambda a, b: a >= b,  # type: ignore[operator]
}
