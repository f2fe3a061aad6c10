"""Turn one column value of an event back into PostgreSQL's text input form. No I/O.

The one job: the inverse of ``cdc.protocol.values.converter_for``. Given a column's type
OID, type modifier and the connector's ``ValueOptions`` (the replay reads the same
connector file), pick once per column a function mapping the JSON value of ``before`` /
``after`` (as ``orjson.loads`` returns it) to the text that PostgreSQL's input function
of the type reads back as exactly the value the source database had: equal as text output
under the daemon's session settings (``DateStyle=ISO``, ``TimeZone=UTC``,
``IntervalStyle=postgres``, ``bytea_output=hex``, ``extra_float_digits=3``,
``lc_monetary=C``), which the target session must use too. ``None`` is SQL NULL. No I/O,
no logging, no psycopg.

Exact by construction, per mode (docs/types.md, "Replaying values into PostgreSQL"):
integers, floats (the shortest ``repr`` of a double reads back as the same float4/float8),
numerics (the text keeps its scale; ``precise`` bytes are formatted with the scale they
were scaled to), text types, bytea in every ``binary_handling``, dates, times and
timestamps in every ``time_precision`` (BC and years past 9999 included), timestamptz
and timetz strings, intervals in ``string`` mode (the ISO 8601 designator form, which
PostgreSQL reads exactly: checked on a real server down to the extremes, where the
``postgres`` style's own minimum does not read back), arrays (quoted as ``array_out``
does, bounds kept), composites (as ``record_out``), hstore, point, PostGIS and pgvector.

Refused when the converter is built (``ReplayValueError``), because the event no longer
holds the value: ``decimal_handling: double`` (numeric and money rounded to a double) and
``interval_handling: numeric`` (days folded into 24 hours: ``1 day`` and ``24:00:00`` are
different intervals); arrays whose elements are themselves arrays (a domain over an
array type: the nested lists do not say where the outer array ends).

With ``on_conversion_error: text`` the daemon writes a value it could not convert as its
PostgreSQL text. That text is the input form already, so a string where the mode writes
something else (a number, a list, an object, or a ``precise`` decimal that is not base64)
is passed through as it is; with ``stop`` it is refused as not what the connector writes.

This module dispatches by type (as the forward builder does, from its own OID tables) and
builds arrays and records; the per-value converters are ``cdc.replay.scalar_inputs`` and
``cdc.replay.temporal_inputs``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from cdc.errors import ReplayValueError
from cdc.protocol import values as forward
from cdc.protocol.scalars import numeric_scale
from cdc.protocol.typeinfo import JsonValue, TypeInfo
from cdc.protocol.values import ValueOptions
from cdc.replay.scalar_inputs import (
    TextConverter,
    Where,
    boolean_input,
    bytea_input,
    decimal_fixed_input,
    decimal_variable_input,
    float_input,
    hstore_input,
    integer_input,
    numeric_string_input,
    point_input,
    postgis_input,
    text_input,
    vector_input,
)
from cdc.replay.temporal_inputs import (
    date_input,
    iso_date_input,
    iso_timestamp_input,
    time_input,
    timestamp_input,
    timestamptz_input,
    timetz_input,
)

__all__ = ["ReplayValueError", "TextConverter", "text_converter_for"]


# --- Arrays and composites ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Built:
    """A converter and what an enclosing array or record must know about its output."""

    convert: TextConverter
    # The text never needs quoting in an array or a record (digits, signs, '.', 'e',
    # letters): the quoting check is skipped.
    plain: bool = False
    # The JSON value is itself a list (pgvector): an array of it must tell its own
    # levels from its elements.
    list_valued: bool = False
    # An array type (or a domain over one).
    array: bool = False


def _is_level(items: list[JsonValue]) -> bool:
    """In an array of list-valued elements (vectors: non-empty lists of numbers), whether
    a list is a level of the array rather than one element."""
    return not items or any(item is None or type(item) is list for item in items)


def _array(element: _Built, delimiter: str, w: Where, fallback: bool) -> _Built:
    """array_out's text: ``{1,2}``, ``{{"a b",NULL}}``, ``[0:2]={10,20,30}``.

    Elements are quoted exactly when array_out would quote them (empty, ``NULL`` in any
    case, or holding ``"``, ``\\``, braces, the delimiter or white space), with ``"``
    and ``\\`` backslash-escaped, so array_in reads each element's text unchanged.
    """
    if element.array:
        raise w.refuse(
            "an array of a domain over an array type: its event value (nested lists) does "
            "not say where the outer array ends, so it cannot be replayed"
        )
    convert_element = element.convert
    plain = element.plain
    list_valued = element.list_valued
    needs_quotes = re.compile(r'["\\{}' + re.escape(delimiter) + r" \t\n\r\v\f]").search

    def element_text(item: JsonValue) -> str:
        text = convert_element(item)
        if text is None:
            return "NULL"
        if plain:
            return text
        if (
            not text
            or needs_quotes(text) is not None
            or (len(text) == 4 and text.upper() == "NULL")
        ):
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return text

    def level(items: list[JsonValue]) -> str:
        parts = []
        for item in items:
            if type(item) is list and (not list_valued or _is_level(item)):
                parts.append(level(item))
            else:
                parts.append(element_text(item))
        return "{" + delimiter.join(parts) + "}"

    def bounded(value: dict[str, JsonValue]) -> str:
        lower_bounds = value["lower_bounds"]
        elements = value["elements"]
        if len(value) != 2 or type(lower_bounds) is not list:
            raise ValueError("not an array with bounds")
        assert isinstance(lower_bounds, list)
        dimensions = []
        current = elements
        for lower in lower_bounds:
            if type(lower) is not int or type(current) is not list or not current:
                raise ValueError("bounds do not match the elements")
            dimensions.append(f"[{lower}:{lower + len(current) - 1}]")
            current = current[0]
        assert isinstance(elements, list)
        return "".join(dimensions) + "=" + level(elements)

    expected = "an array (a list, or {'lower_bounds', 'elements'})"

    def convert(value: JsonValue) -> str | None:
        if type(value) is list:
            return level(value)
        if value is None:
            return None
        if type(value) is dict:
            try:
                return bounded(value)
            except (KeyError, ValueError):
                raise w.bad(value, expected) from None
        if fallback and type(value) is str:
            return value
        raise w.bad(value, expected)

    return _Built(convert, array=True)


_RECORD_NEEDS_QUOTES: Final = re.compile(r'["\\(), \t\n\r\v\f]').search


def _record(attributes: tuple[tuple[str, _Built], ...], w: Where, fallback: bool) -> _Built:
    """record_out's text: ``(1,"a b",,"x""y")``; NULL is an empty field, the empty string
    ``""``; fields are quoted exactly when record_out would, ``"`` and ``\\`` doubled."""
    fields = tuple((name, built.convert, built.plain) for name, built in attributes)
    count = len(fields)
    needs_quotes = _RECORD_NEEDS_QUOTES
    names = ", ".join(name for name, _ in attributes)
    expected = f"an object of the attributes ({names})"

    def convert(value: JsonValue) -> str | None:
        if type(value) is dict:
            if len(value) != count:
                raise w.bad(value, expected)
            parts = []
            for name, convert_field, plain in fields:
                try:
                    item = value[name]
                except KeyError:
                    raise w.bad(value, expected) from None
                text = convert_field(item)
                if text is None:
                    parts.append("")
                elif plain or (text and needs_quotes(text) is None):
                    parts.append(text)
                else:
                    parts.append('"' + text.replace('"', '""').replace("\\", "\\\\") + '"')
            return "(" + ",".join(parts) + ")"
        return w.other(value, expected, fallback=fallback)

    return _Built(convert)


# --- Dispatch -------------------------------------------------------------------------------

# Built-in types below this OID (FirstNormalObjectId); above it a type is user-defined or
# an extension's, and only ``types`` can say what it is.
_FIRST_NORMAL_OID: Final = 16384
# Domains over domains over arrays of composites...: deeper than this is a cycle.
_MAX_DEPTH: Final = 32

_FLOATS: Final = frozenset((forward.FLOAT4, forward.FLOAT8))
_DECIMALS: Final = frozenset((forward.NUMERIC, forward.MONEY))
_INTEGERS: Final = frozenset(
    (forward.INT2, forward.INT4, forward.INT8, forward.OID, forward.XID, forward.CID, forward.XID8)
)


def text_converter_for(
    type_oid: int,
    type_modifier: int,
    options: ValueOptions,
    *,
    types: Mapping[int, TypeInfo | None] | None = None,
    column: str = "",
) -> TextConverter:
    """The function turning this column's event values into PostgreSQL input text.

    Built once per column (per table shape), never per value. The converter returns
    ``None`` for ``None`` (SQL NULL); the unchanged-TOAST placeholder is the caller's.

    Args:
        type_oid: the column's ``pg_type.oid`` in the source database.
        type_modifier: its ``atttypmod``; -1 when it has none.
        options: the connector's ``values:`` settings the events were written with.
        types: the ``TypeInfo`` of every non-built-in type the column is made of (enums,
            domains, composites, their arrays, ranges, extension types), as the forward
            ``converter_for`` resolves them; a type missing here is taken as text.
        column: the column's name, for messages.

    Returns:
        A converter raising ``ReplayValueError`` (with ``column`` and ``type_name``) for
        a value the connector cannot have written under ``options``.

    Raises:
        ReplayValueError: the column's type has no exact inverse under ``options``
            (``decimal_handling: double``, ``interval_handling: numeric``), or is an
            array of arrays, or nests deeper than 32 levels.
    """
    return _Builder(options, types, column).build(type_oid, type_modifier, 0, None, True).convert


class _Builder:
    """Builds the converter of one column, recursively through its type's parts."""

    __slots__ = ("_column", "_options", "_types")

    def __init__(
        self, options: ValueOptions, types: Mapping[int, TypeInfo | None] | None, column: str
    ) -> None:
        self._options = options
        self._types = types
        self._column = column

    def build(self, oid: int, typmod: int, depth: int, name: str | None, top: bool) -> _Built:
        if depth > _MAX_DEPTH:
            raise self._where(oid, name).refuse(f"the type nests deeper than {_MAX_DEPTH} levels")
        fallback = top and self._options.on_conversion_error == "text"
        builtin = self._builtin(oid, typmod, name, fallback)
        if builtin is not None:
            return builtin
        # The forward builder's own table of built-in arrays, so both agree on every OID.
        element = forward._ARRAY_ELEMENTS.get(oid)
        if element is not None:
            inner = self.build(element, typmod, depth + 1, None, False)
            delimiter = ";" if element == forward._BOX else ","
            return _array(inner, delimiter, self._where(oid, name), fallback)
        info = self._types.get(oid) if self._types is not None else None
        if info is None:
            where = self._where(oid, name)
            if oid >= _FIRST_NORMAL_OID:
                return _Built(
                    text_input(
                        where,
                        fallback,
                        f"text (type oid {oid} is not in the replay's type definitions, "
                        "so its value is taken as text)",
                    )
                )
            return _Built(text_input(where, fallback))
        return self._custom(info, typmod, depth, name, top)

    def _where(self, oid: int, name: str | None) -> Where:
        if name is None:
            info = self._types.get(oid) if self._types is not None else None
            name = info.qualified_name if info is not None else forward.type_name(oid)
        return Where(self._column, name)

    def _builtin(self, oid: int, typmod: int, name: str | None, fallback: bool) -> _Built | None:
        options = self._options
        if oid in _INTEGERS:
            return _Built(integer_input(self._where(oid, name), fallback), plain=True)
        if oid in _FLOATS:
            return _Built(float_input(self._where(oid, name), fallback), plain=True)
        if oid == forward.BOOL:
            return _Built(boolean_input(self._where(oid, name), fallback, "t", "f"), plain=True)
        if oid in _DECIMALS:
            return self._decimal(oid, typmod, name, fallback)
        if oid == forward.BYTEA:
            return _Built(bytea_input(self._where(oid, name), fallback, options.binary_handling))
        if oid == forward.BIT:
            where = self._where(oid, name)
            if typmod == 1:
                return _Built(boolean_input(where, fallback, "1", "0"), plain=True)
            return _Built(text_input(where, fallback), plain=typmod > 0)  # never empty
        if oid == forward.POINT:
            return _Built(point_input(self._where(oid, name), fallback))
        if oid in _TEMPORAL:
            return self._temporal(oid, typmod, name, fallback)
        if oid == forward.INTERVAL:
            where = self._where(oid, name)
            if options.interval_handling == "numeric":
                raise where.refuse(
                    "interval_handling: numeric writes an interval as microseconds with a "
                    "day counted as 24 hours, so '1 day' and '24:00:00' (different values "
                    "in PostgreSQL) are the same number, and the event cannot say which "
                    "it was; only events written with interval_handling: string replay "
                    "exactly"
                )
            # The ISO 8601 designator form, which interval_in reads as written (PostgreSQL
            # 15 and later read every field exactly; see the module docstring).
            return _Built(text_input(where, fallback, "an ISO 8601 interval string"), plain=True)
        return None

    def _decimal(self, oid: int, typmod: int, name: str | None, fallback: bool) -> _Built:
        where = self._where(oid, name)
        handling = self._options.decimal_handling
        if handling == "double":
            raise where.refuse(
                "decimal_handling: double wrote the nearest double, not the value, so it "
                "cannot be restored; only events written with decimal_handling: string "
                "or precise replay exactly"
            )
        if oid == forward.MONEY:
            if handling == "precise":
                return _Built(decimal_fixed_input(where, fallback, 2, "money value"), plain=True)
            # money_in reads "-1234.56" under lc_monetary=C, the daemon's setting and the
            # replay's.
            return _Built(text_input(where, fallback, "a decimal string"), plain=True)
        if handling == "precise":
            scale = numeric_scale(typmod)
            if scale is None:
                return _Built(decimal_variable_input(where, fallback), plain=True)
            return _Built(decimal_fixed_input(where, fallback, scale, "decimal"), plain=True)
        return _Built(numeric_string_input(where, fallback), plain=True)

    def _temporal(self, oid: int, typmod: int, name: str | None, fallback: bool) -> _Built:
        where = self._where(oid, name)
        precision = self._options.time_precision
        if oid == forward.TIMESTAMPTZ:
            return _Built(timestamptz_input(where, fallback))
        if oid == forward.TIMETZ:
            return _Built(timetz_input(where, fallback))
        if precision == "isostring":
            if oid == forward.DATE:
                return _Built(iso_date_input(where, fallback))
            if oid == forward.TIMESTAMP:
                return _Built(iso_timestamp_input(where, fallback))
            return _Built(text_input(where, fallback, "an ISO time string"), plain=True)
        if oid == forward.DATE:
            return _Built(date_input(where, fallback))
        # The units the forward converters chose (cdc.protocol.temporal): milliseconds for
        # precision 0..3 in adaptive modes and always in connect, else microseconds.
        millis = precision == "connect" or (
            0 <= typmod <= 3 and (oid == forward.TIMESTAMP or precision == "adaptive")
        )
        us_per_unit = 1000 if millis else 1
        if oid == forward.TIMESTAMP:
            return _Built(timestamp_input(where, fallback, us_per_unit))
        return _Built(time_input(where, fallback, us_per_unit), plain=True)

    def _custom(
        self, info: TypeInfo, typmod: int, depth: int, name: str | None, top: bool
    ) -> _Built:
        where = Where(self._column, name or info.qualified_name)
        fallback = top and self._options.on_conversion_error == "text"
        if info.extension is not None:
            kind = (info.extension, info.name)
            if kind == ("hstore", "hstore"):
                return _Built(hstore_input(where, fallback, self._options.hstore_handling))
            if kind in (("postgis", "geometry"), ("postgis", "geography")):
                return _Built(postgis_input(where, fallback), plain=True)
            if kind in (("vector", "vector"), ("vector", "halfvec")):
                return _Built(vector_input(where, fallback), list_valued=True)
        if info.kind == "d":
            # A domain is its base type with the domain's own modifier (typtypmod).
            return self.build(info.base_oid, info.base_modifier, depth + 1, where.type_name, top)
        if info.kind == "c":
            attributes = tuple(
                (a.name, self.build(a.type_oid, a.type_modifier, depth + 1, None, False))
                for a in info.attributes
            )
            return _record(attributes, where, fallback)
        if info.kind == "b" and info.category == "A" and info.element_oid:
            inner = self.build(info.element_oid, typmod, depth + 1, None, False)
            return _array(inner, info.delimiter, where, fallback)
        # Enums, ranges, multiranges, other base types (citext...): their text form.
        return _Built(text_input(where, fallback))


_TEMPORAL: Final = frozenset(
    (forward.DATE, forward.TIME, forward.TIMESTAMP, forward.TIMESTAMPTZ, forward.TIMETZ)
)
