"""Values made of other values: arrays, composite types (records) and hstore. No I/O.

The one job: split PostgreSQL's text output of a structured value into its parts and
apply the parts' converters. The grammars are those of ``array_out``, ``record_out``
(PostgreSQL docs 8.15.6 and 8.16.6) and hstore's ``hstore_out``. No I/O, no logging.

Arrays become nested JSON lists, one level per dimension, NULL elements ``null``, empty
arrays ``[]``. An array whose lower bounds are not all 1 (``[0:2]={10,20,30}``) becomes
``{"lower_bounds": [0], "elements": [10, 20, 30]}``: a plain list would shift every
index, so the bounds are kept, and a consumer expecting a list fails loudly instead of
reading the wrong positions (Debezium drops the bound).
"""

from __future__ import annotations

import re
from typing import Final

from cdc.protocol.typeinfo import Converter, JsonValue

__all__ = [
    "array_converter",
    "hstore_pairs",
    "record_converter",
    "split_record",
]

# A quoted array element: backslash escapes any character (array_out doubles nothing).
_ARRAY_QUOTED: Final = re.compile(r'"([^"\\]*+(?:\\.[^"\\]*+)*+)"', re.DOTALL)
_BACKSLASHED: Final = re.compile(r"\\(.)", re.DOTALL)
_DIMENSIONS: Final = re.compile(r"((?:\[-?\d+:-?\d+\])+)=")
_BOUND: Final = re.compile(r"\[(-?\d+):-?\d+\]")


def _unquote(raw: str) -> str:
    return _BACKSLASHED.sub(r"\1", raw) if "\\" in raw else raw


def _parse_array(
    text: str, pos: int, element: Converter | None, delimiter: str, unquoted: re.Pattern[str]
) -> tuple[list[JsonValue], int]:
    """Parse one ``{...}`` level starting at ``text[pos] == "{"``; return it and the end."""
    if text[pos] != "{":
        raise ValueError("array level does not start with '{'")
    pos += 1
    out: list[JsonValue] = []
    if text[pos] == "}":
        return out, pos + 1
    append = out.append
    while True:
        char = text[pos]
        if char == "{":
            nested, pos = _parse_array(text, pos, element, delimiter, unquoted)
            append(nested)
        elif char == '"':
            m = _ARRAY_QUOTED.match(text, pos)
            if m is None:
                raise ValueError("unterminated quoted array element")
            value = _unquote(m[1])
            append(value if element is None else element(value))
            pos = m.end()
        else:
            m = unquoted.match(text, pos)
            assert m is not None  # the pattern matches the empty string
            raw = m[0]
            if not raw:
                raise ValueError("empty unquoted array element")
            pos = m.end()
            if raw == "NULL":
                append(None)
            else:
                append(raw if element is None else element(raw))
        char = text[pos]
        if char == delimiter:
            pos += 1
        elif char == "}":
            return out, pos + 1
        else:
            raise ValueError(f"unexpected {char!r} in array")


def array_converter(element: Converter | None, delimiter: str = ",") -> Converter:
    """A converter of an array's text form, applying ``element`` to each non-NULL element
    (``None``: the element's text is its JSON value)."""
    unquoted = re.compile(f'[^{re.escape(delimiter)}}}"]*')

    def convert(text: str) -> JsonValue:
        bounds: list[int] | None = None
        pos = 0
        if text[:1] == "[":
            m = _DIMENSIONS.match(text)
            if m is None:
                raise ValueError("bad array dimensions")
            bounds = [int(b) for b in _BOUND.findall(m[1])]
            pos = m.end()
        values, end = _parse_array(text, pos, element, delimiter, unquoted)
        if end != len(text):
            raise ValueError("text after the array")
        if bounds is not None and any(b != 1 for b in bounds):
            return {"lower_bounds": list(bounds), "elements": values}
        return values

    return convert


# A quoted record field: record_out doubles '"' and '\' inside quotes.
_RECORD_QUOTED: Final = re.compile(r'"((?:[^"\\]++|""|\\.)*+)"', re.DOTALL)
_RECORD_ESCAPE: Final = re.compile(r'""|\\(.)', re.DOTALL)


def _record_unescape(m: re.Match[str]) -> str:
    return m[1] if m[1] is not None else '"'


def split_record(text: str) -> list[str | None]:
    """The fields of a record's text form ``(1,"a b",,"x""y")``; an empty unquoted field
    is NULL, a quoted empty one ``""`` the empty string."""
    if len(text) < 2 or text[0] != "(" or text[-1] != ")":
        raise ValueError("not a record in its output form")
    end = len(text) - 1
    if end == 1:
        return []  # a composite type without attributes
    fields: list[str | None] = []
    pos = 1
    while True:
        if text[pos] == '"':
            m = _RECORD_QUOTED.match(text, pos)
            if m is None:
                raise ValueError("unterminated quoted record field")
            raw = m[1]
            fields.append(
                _RECORD_ESCAPE.sub(_record_unescape, raw) if ('"' in raw or "\\" in raw) else raw
            )
            pos = m.end()
        else:
            comma = text.find(",", pos, end)
            stop = end if comma < 0 else comma
            fields.append(text[pos:stop] if stop > pos else None)
            pos = stop
        if pos == end:
            return fields
        if text[pos] != ",":
            raise ValueError("unexpected character in record")
        pos += 1
        if pos == end:
            fields.append(None)  # trailing empty field: NULL
            return fields


def record_converter(attributes: tuple[tuple[str, Converter | None], ...]) -> Converter:
    """A converter of a composite value to a JSON object of its attributes, in order."""

    def convert(text: str) -> JsonValue:
        fields = split_record(text)
        if len(fields) != len(attributes):
            raise ValueError(
                f"record has {len(fields)} fields, its type {len(attributes)} attributes"
            )
        out: dict[str, JsonValue] = {}
        for (name, field_converter), field in zip(attributes, fields, strict=True):
            if field is None or field_converter is None:
                out[name] = field
            else:
                out[name] = field_converter(field)
        return out

    return convert


# hstore_out: "key"=>"value" pairs joined by ", ", values NULL unquoted; '"' and '\'
# backslash-escaped inside quotes.
_HSTORE_PAIR: Final = re.compile(
    r'"([^"\\]*+(?:\\.[^"\\]*+)*+)"=>(?:(NULL)|"([^"\\]*+(?:\\.[^"\\]*+)*+)")(, |$)', re.DOTALL
)


def hstore_pairs(text: str) -> dict[str, JsonValue]:
    """An hstore's text form as a dict (keys in PostgreSQL's order), NULL values ``None``."""
    out: dict[str, JsonValue] = {}
    pos = 0
    end = len(text)
    while pos < end:
        m = _HSTORE_PAIR.match(text, pos)
        if m is None or (m[4] == ", " and m.end() == end):
            raise ValueError("not an hstore in its output form")
        out[_unquote(m[1])] = None if m[2] is not None else _unquote(m[3])
        pos = m.end()
    return out
