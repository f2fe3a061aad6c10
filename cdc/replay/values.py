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
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Final, Literal, TypeAlias

import orjson

from cdc.errors import ReplayValueError
from cdc.protocol import values as forward
from cdc.protocol.scalars import numeric_scale
from cdc.protocol.typeinfo import JsonValue, TypeInfo
from cdc.protocol.values import ValueOptions

__all__ = ["ReplayValueError", "TextConverter", "text_converter_for"]

TextConverter: TypeAlias = Callable[[JsonValue], "str | None"]

_a2b_base64 = binascii.a2b_base64
_Base64Error = binascii.Error

# --- Errors ---------------------------------------------------------------------------------

_SHOWN_CHARS: Final = 80  # values in messages are cut: one readable log line
_SAME_SETTINGS: Final = "replay with the values: settings the connector had when it wrote the event"


def _shorten(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


@dataclass(frozen=True, slots=True)
class _Where:
    """The column and type a converter serves, for its error messages."""

    column: str
    type_name: str

    def refuse(self, reason: str) -> ReplayValueError:
        return ReplayValueError(
            f"column {self.column or '?'} ({self.type_name}): {reason}",
            column=self.column,
            type_name=self.type_name,
        )

    def bad(self, value: object, expected: str) -> ReplayValueError:
        return self.refuse(f"the event holds {_shorten(value)}, not {expected}; {_SAME_SETTINGS}")


# --- Converters of scalar values --------------------------------------------------------------
#
# Each factory returns a closure over its column's context; the per-value path is a class
# check and one conversion. ``fallback`` (on_conversion_error: text, top level only) lets
# a string through where the mode writes no string: it is the value's PostgreSQL text.


def _text(w: _Where, fallback: bool, expected: str = "a string") -> TextConverter:
    def convert(value: JsonValue) -> str | None:
        if type(value) is str:
            return value
        if value is None:
            return None
        raise w.bad(value, expected)

    return convert


def _integer(w: _Where, fallback: bool) -> TextConverter:
    def convert(value: JsonValue) -> str | None:
        if type(value) is int:
            return str(value)
        if value is None:
            return None
        if fallback and type(value) is str:
            return value
        raise w.bad(value, "an integer")

    return convert


# float8out/float4out of the non-finite values, which the daemon writes as these strings.
_FLOAT_SPECIALS: Final = frozenset(("NaN", "Infinity", "-Infinity"))


def _float(w: _Where, fallback: bool) -> TextConverter:
    # repr() is the shortest text that reads back as the same double; PostgreSQL's own
    # output was the shortest for its float4/float8, so both denote the same number and
    # float4in/float8in (correctly rounded) return the stored value.
    def convert(value: JsonValue) -> str | None:
        if type(value) is float:
            return repr(value)
        if value is None:
            return None
        if type(value) is str and (value in _FLOAT_SPECIALS or fallback):
            return value
        if type(value) is int:
            return str(value)
        raise w.bad(value, "a number or 'NaN'/'Infinity'/'-Infinity'")

    return convert


def _boolean(w: _Where, fallback: bool, true: str, false: str) -> TextConverter:
    def convert(value: JsonValue) -> str | None:
        if value is True:
            return true
        if value is False:
            return false
        if value is None:
            return None
        if fallback and type(value) is str:
            return value
        raise w.bad(value, "true or false")

    return convert


# numeric in decimal_handling 'string': Debezium's SpecialValueDecimal names.
_NUMERIC_NAMES: Final = {
    "NAN": "NaN",
    "POSITIVE_INFINITY": "Infinity",
    "NEGATIVE_INFINITY": "-Infinity",
}


def _numeric_string(w: _Where, fallback: bool) -> TextConverter:
    names = _NUMERIC_NAMES.get

    def convert(value: JsonValue) -> str | None:
        if type(value) is str:
            return names(value, value)
        if value is None:
            return None
        raise w.bad(value, "a decimal string (decimal_handling: string)")

    return convert


def _decimal_text(unscaled: int, scale: int) -> str:
    """``unscaled / 10**scale`` with exactly ``scale`` fractional digits (numeric_out's form)."""
    if scale <= 0:
        return str(unscaled * 10**-scale)
    digits = str(abs(unscaled)).rjust(scale + 1, "0")
    sign = "-" if unscaled < 0 else ""
    return f"{sign}{digits[:-scale]}.{digits[-scale:]}"


def _unscaled(encoded: str) -> int:
    """The integer of Connect ``Decimal`` bytes: base64 of big-endian two's complement."""
    raw = _a2b_base64(encoded, strict_mode=True)
    if not raw:
        raise ValueError("empty decimal bytes")
    return int.from_bytes(raw, "big", signed=True)


def _decimal_fixed(w: _Where, fallback: bool, scale: int, what: str) -> TextConverter:
    expected = f"base64 of a {what} (decimal_handling: precise)"

    def convert(value: JsonValue) -> str | None:
        if type(value) is str:
            try:
                return _decimal_text(_unscaled(value), scale)
            except ValueError:  # binascii.Error is one
                # The text fallback of 'NaN' (numeric(p,s) cannot hold infinities); it
                # is never valid base64, whose length is a multiple of 4.
                if fallback:
                    return value
                raise w.bad(value, expected) from None
        if value is None:
            return None
        raise w.bad(value, expected)

    return convert


def _decimal_variable(w: _Where, fallback: bool) -> TextConverter:
    expected = "a VariableScaleDecimal {'scale', 'value'} (decimal_handling: precise)"

    def convert(value: JsonValue) -> str | None:
        if type(value) is dict:
            scale = value.get("scale")
            encoded = value.get("value")
            if len(value) != 2 or type(scale) is not int or type(encoded) is not str:
                raise w.bad(value, expected)
            try:
                return _decimal_text(_unscaled(encoded), scale)
            except ValueError:
                raise w.bad(value, expected) from None
        if value is None:
            return None
        if fallback and type(value) is str:
            return value
        raise w.bad(value, expected)

    return convert


_URL_SAFE_TO_STANDARD: Final = str.maketrans("-_", "+/")


def _bytea(w: _Where, fallback: bool, handling: str) -> TextConverter:
    expected = f"bytes in binary_handling: {handling}"
    if handling == "hex":
        # byteain reads "\x" and hex digit pairs; it rejects anything else (the daemon
        # never writes the whitespace it would skip).
        def from_hex(value: JsonValue) -> str | None:
            if type(value) is str:
                return "\\x" + value
            if value is None:
                return None
            raise w.bad(value, expected)

        return from_hex
    url_safe = handling == "base64-url-safe"
    wrong = "+/" if url_safe else "-_"

    def from_base64(value: JsonValue) -> str | None:
        if type(value) is str:
            if url_safe:
                if "+" in value or "/" in value:
                    raise w.bad(value, expected)
                value = value.translate(_URL_SAFE_TO_STANDARD)
            try:
                return "\\x" + _a2b_base64(value, strict_mode=True).hex()
            except _Base64Error:
                raise w.bad(value, expected) from None
        if value is None:
            return None
        raise w.bad(value, f"{expected} (no {wrong!r})")

    return from_base64


# --- Dates and times ------------------------------------------------------------------------

_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
# Days since the epoch that Python's date covers (years 1..9999): the fast path.
_FAST_FIRST_DAY: Final = date(1, 1, 1).toordinal() - _EPOCH_ORDINAL
_FAST_LAST_DAY: Final = date(9999, 12, 31).toordinal() - _EPOCH_ORDINAL
_US_PER_DAY: Final = 86_400_000_000
_INFINITIES: Final = frozenset(("infinity", "-infinity"))
_fromordinal = date.fromordinal


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """(astronomical year, month, day) of days since 1970-01-01, any year (Howard
    Hinnant's ``civil_from_days``, as ``cdc.protocol.temporal`` computes it forward)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def _date_text(days: int) -> str:
    """date_out's ISO text of days since the epoch: ``4714-11-24 BC``, ``5874897-12-31``."""
    if _FAST_FIRST_DAY <= days <= _FAST_LAST_DAY:
        return _fromordinal(days + _EPOCH_ORDINAL).isoformat()
    year, month, day = _civil_from_days(days)
    if year <= 0:  # astronomical year 0 is 1 BC
        return f"{1 - year:04d}-{month:02d}-{day:02d} BC"
    return f"{year:04d}-{month:02d}-{day:02d}"


def _clock_text(seconds: int, micros: int) -> str:
    """``HH:MM:SS[.ffffff]`` (trailing zeros cut, as PostgreSQL prints it); 24:00:00 too."""
    hour, rest = divmod(seconds, 3600)
    minute, second = divmod(rest, 60)
    if micros:
        return f"{hour:02d}:{minute:02d}:{second:02d}.{micros:06d}".rstrip("0")
    return f"{hour:02d}:{minute:02d}:{second:02d}"


def _timestamp_text(us: int) -> str:
    """timestamp_out's text of microseconds since 1970-01-01 00:00, any year."""
    days, us_of_day = divmod(us, _US_PER_DAY)
    seconds, micros = divmod(us_of_day, 1_000_000)
    clock = _clock_text(seconds, micros)
    if _FAST_FIRST_DAY <= days <= _FAST_LAST_DAY:
        return f"{_fromordinal(days + _EPOCH_ORDINAL).isoformat()} {clock}"
    year, month, day = _civil_from_days(days)
    if year <= 0:
        return f"{1 - year:04d}-{month:02d}-{day:02d} {clock} BC"
    return f"{year:04d}-{month:02d}-{day:02d} {clock}"


def _date(w: _Where, fallback: bool) -> TextConverter:
    def convert(value: JsonValue) -> str | None:
        if type(value) is int:
            return _date_text(value)
        if value is None:
            return None
        if type(value) is str and (value in _INFINITIES or fallback):
            return value
        raise w.bad(value, "days since 1970-01-01 or 'infinity'/'-infinity'")

    return convert


def _timestamp(w: _Where, fallback: bool, us_per_unit: int) -> TextConverter:
    unit = "ms" if us_per_unit == 1000 else "µs"
    expected = f"{unit} since 1970-01-01 or 'infinity'/'-infinity'"

    def convert(value: JsonValue) -> str | None:
        if type(value) is int:
            return _timestamp_text(value * us_per_unit)
        if value is None:
            return None
        if type(value) is str and (value in _INFINITIES or fallback):
            return value
        raise w.bad(value, expected)

    return convert


def _time(w: _Where, fallback: bool, us_per_unit: int) -> TextConverter:
    unit = "ms" if us_per_unit == 1000 else "µs"
    expected = f"{unit} since midnight"

    def convert(value: JsonValue) -> str | None:
        if type(value) is int:
            us = value * us_per_unit
            if 0 <= us <= _US_PER_DAY:
                return _clock_text(*divmod(us, 1_000_000))
            raise w.bad(value, f"{expected} (0 to 24:00:00)")
        if value is None:
            return None
        if fallback and type(value) is str:
            return value
        raise w.bad(value, expected)

    return convert


# Java's ISO years (LocalDate, ZonedTimestamp): 4 digits, '+' past 9999, '-' before year
# 0 (astronomical: 0000 is 1 BC). PostgreSQL reads years 1..9999 as they are, and wants
# the others as a plain number or with " BC" (after the offset, as timestamptz_out).
_SIGNS: Final = frozenset("+-")
_JAVA_DATE: Final = r"([+-]?)(\d{4,})-(\d\d)-(\d\d)"
_JAVA_DATE_RE: Final = re.compile(_JAVA_DATE)
_JAVA_TIMESTAMP_RE: Final = re.compile(_JAVA_DATE + r"T(\d\d:\d\d:\d\d(?:\.\d{1,9})?)")
_JAVA_ZONED_RE: Final = re.compile(_JAVA_DATE + r"T(\d\d:\d\d:\d\d(?:\.\d{1,9})?)Z")


def _pg_date(m: re.Match[str]) -> tuple[str, bool]:
    """(``YYYY-MM-DD`` as PostgreSQL reads it, whether BC) of a matched Java ISO date."""
    year = -int(m[2]) if m[1] == "-" else int(m[2])
    if year <= 0:
        return f"{1 - year:04d}-{m[3]}-{m[4]}", True
    return f"{year:04d}-{m[3]}-{m[4]}", False


def _needs_rewrite(value: str) -> bool:
    """Whether a Java ISO year is one PostgreSQL cannot read as it is (signed, or 0000)."""
    return value[:1] in _SIGNS or value[:4] == "0000"


def _timestamptz(w: _Where, fallback: bool) -> TextConverter:
    """``2024-03-01T10:34:56.789012Z`` is read by timestamptz_in as it is (ISO 8601);
    only signed and year-0 years are rewritten, to ``... +00 BC`` or a plain year."""
    expected = "a ZonedTimestamp string"

    def convert(value: JsonValue) -> str | None:
        if type(value) is str:
            if not _needs_rewrite(value) or value == "-infinity":
                return value
            m = _JAVA_ZONED_RE.fullmatch(value)
            if m is None:
                if fallback:
                    return value
                raise w.bad(value, expected)
            day, bc = _pg_date(m)
            return f"{day} {m[5]}+00 BC" if bc else f"{day} {m[5]}+00"
        if value is None:
            return None
        raise w.bad(value, expected)

    return convert


def _timetz(w: _Where, fallback: bool) -> TextConverter:
    """``11:08:31.7+05:30`` is timetz_in's input as it is; ``Z`` becomes ``+00``."""

    def convert(value: JsonValue) -> str | None:
        if type(value) is str:
            return value[:-1] + "+00" if value[-1:] == "Z" else value
        if value is None:
            return None
        raise w.bad(value, "a ZonedTime string")

    return convert


def _iso_date(w: _Where, fallback: bool) -> TextConverter:
    expected = "an ISO date string (time_precision: isostring)"

    def convert(value: JsonValue) -> str | None:
        if type(value) is str:
            if not _needs_rewrite(value) or value == "-infinity":
                return value
            m = _JAVA_DATE_RE.fullmatch(value)
            if m is None:
                if fallback:
                    return value
                raise w.bad(value, expected)
            day, bc = _pg_date(m)
            return f"{day} BC" if bc else day
        if value is None:
            return None
        raise w.bad(value, expected)

    return convert


def _iso_timestamp(w: _Where, fallback: bool) -> TextConverter:
    expected = "an ISO timestamp string (time_precision: isostring)"

    def convert(value: JsonValue) -> str | None:
        if type(value) is str:
            if not _needs_rewrite(value) or value == "-infinity":
                return value
            m = _JAVA_TIMESTAMP_RE.fullmatch(value)
            if m is None:
                if fallback:
                    return value
                raise w.bad(value, expected)
            day, bc = _pg_date(m)
            return f"{day} {m[5]} BC" if bc else f"{day} {m[5]}"
        if value is None:
            return None
        raise w.bad(value, expected)

    return convert


# --- Geometric and extension types --------------------------------------------------------


def _coordinate(value: JsonValue) -> str:
    if type(value) is float:
        return float.__repr__(value)
    if type(value) is str and value in _FLOAT_SPECIALS:
        return value
    if type(value) is int:
        return str(value)
    raise ValueError("not a coordinate")


def _point(w: _Where, fallback: bool) -> TextConverter:
    """Debezium's Point struct: ``(x,y)`` from x and y, the exact doubles point_out printed
    (the WKB says the same; NaN payloads are not kept by the text either)."""
    expected = "a Point {'x', 'y', 'wkb', 'srid'}"

    def convert(value: JsonValue) -> str | None:
        if type(value) is dict:
            try:
                return f"({_coordinate(value['x'])},{_coordinate(value['y'])})"
            except (KeyError, ValueError):
                raise w.bad(value, expected) from None
        if value is None:
            return None
        if fallback and type(value) is str:
            return value
        raise w.bad(value, expected)

    return convert


_EWKB_SRID_FLAG: Final = 0x20000000


def _ewkb_hex(value: dict[str, JsonValue]) -> str:
    """The hex EWKB PostGIS prints, from ``{"wkb", "srid"}``: the SRID goes back into the
    header (after the type, whose SRID flag is set), as the forward converter took it out."""
    encoded = value["wkb"]
    srid = value["srid"]
    if len(value) != 2 or type(encoded) is not str:
        raise ValueError("not a geometry")
    assert isinstance(encoded, str)
    raw = _a2b_base64(encoded, strict_mode=True)
    if len(raw) < 5:
        raise ValueError("WKB too short")
    if srid is None:
        return raw.hex().upper()
    if type(srid) is not int:
        raise ValueError("srid is not an integer")
    assert isinstance(srid, int)
    order: Literal["little", "big"] = "little" if raw[0] == 1 else "big"
    kind = int.from_bytes(raw[1:5], order) | _EWKB_SRID_FLAG
    header = raw[:1] + kind.to_bytes(4, order) + srid.to_bytes(4, order, signed=True)
    return (header + raw[5:]).hex().upper()


def _postgis(w: _Where, fallback: bool) -> TextConverter:
    expected = "a geometry {'wkb', 'srid'}"

    def convert(value: JsonValue) -> str | None:
        if type(value) is dict:
            try:
                return _ewkb_hex(value)
            except (KeyError, ValueError, OverflowError):
                raise w.bad(value, expected) from None
        if value is None:
            return None
        if fallback and type(value) is str:
            return value
        raise w.bad(value, expected)

    return convert


def _vector(w: _Where, fallback: bool) -> TextConverter:
    """pgvector: ``[1.0,2.5,-3.0]``; each repr reads back (strtof) as the stored float4,
    for the reason given for real columns."""
    expected = "a list of numbers"

    def convert(value: JsonValue) -> str | None:
        if type(value) is list:
            try:
                return "[" + ",".join([_vector_element(v) for v in value]) + "]"
            except ValueError:
                raise w.bad(value, expected) from None
        if value is None:
            return None
        if fallback and type(value) is str:
            return value
        raise w.bad(value, expected)

    return convert


def _vector_element(value: JsonValue) -> str:
    if type(value) is float:
        return float.__repr__(value)
    if type(value) is int:
        return str(value)
    raise ValueError("not a number")


def _hstore_quoted(text: str) -> str:
    # hstore_out's quoting: '"' and '\' backslash-escaped inside double quotes.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _hstore_text(pairs: dict[str, JsonValue]) -> str:
    parts = []
    for key, item in pairs.items():
        if item is None:
            parts.append(_hstore_quoted(key) + "=>NULL")
        elif type(item) is str:
            parts.append(_hstore_quoted(key) + "=>" + _hstore_quoted(item))
        else:
            raise ValueError("hstore value is not a string")
    return ", ".join(parts)


def _hstore(w: _Where, fallback: bool, handling: str) -> TextConverter:
    if handling == "json":
        expected = "the hstore as JSON text (hstore_handling: json)"

        def from_json(value: JsonValue) -> str | None:
            if type(value) is str:
                try:
                    pairs = orjson.loads(value)
                except orjson.JSONDecodeError:
                    raise w.bad(value, expected) from None
                if type(pairs) is not dict:
                    raise w.bad(value, expected)
                try:
                    return _hstore_text(pairs)
                except ValueError:
                    raise w.bad(value, expected) from None
            if value is None:
                return None
            raise w.bad(value, expected)

        return from_json
    expected = "the hstore as an object (hstore_handling: map)"

    def from_map(value: JsonValue) -> str | None:
        if type(value) is dict:
            try:
                return _hstore_text(value)
            except ValueError:
                raise w.bad(value, expected) from None
        if value is None:
            return None
        if fallback and type(value) is str:
            return value
        raise w.bad(value, expected)

    return from_map


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


def _array(element: _Built, delimiter: str, w: _Where, fallback: bool) -> _Built:
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


def _record(attributes: tuple[tuple[str, _Built], ...], w: _Where, fallback: bool) -> _Built:
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
        if value is None:
            return None
        if fallback and type(value) is str:
            return value
        raise w.bad(value, expected)

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
                    _text(
                        where,
                        fallback,
                        f"text (type oid {oid} is not in the replay's type definitions, "
                        "so its value is taken as text)",
                    )
                )
            return _Built(_text(where, fallback))
        return self._custom(info, typmod, depth, name, top)

    def _where(self, oid: int, name: str | None) -> _Where:
        if name is None:
            info = self._types.get(oid) if self._types is not None else None
            name = info.qualified_name if info is not None else forward.type_name(oid)
        return _Where(self._column, name)

    def _builtin(self, oid: int, typmod: int, name: str | None, fallback: bool) -> _Built | None:
        options = self._options
        if oid in _INTEGERS:
            return _Built(_integer(self._where(oid, name), fallback), plain=True)
        if oid in _FLOATS:
            return _Built(_float(self._where(oid, name), fallback), plain=True)
        if oid == forward.BOOL:
            return _Built(_boolean(self._where(oid, name), fallback, "t", "f"), plain=True)
        if oid in _DECIMALS:
            return self._decimal(oid, typmod, name, fallback)
        if oid == forward.BYTEA:
            return _Built(_bytea(self._where(oid, name), fallback, options.binary_handling))
        if oid == forward.BIT:
            where = self._where(oid, name)
            if typmod == 1:
                return _Built(_boolean(where, fallback, "1", "0"), plain=True)
            return _Built(_text(where, fallback), plain=True)
        if oid == forward.POINT:
            return _Built(_point(self._where(oid, name), fallback))
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
            return _Built(_text(where, fallback, "an ISO 8601 interval string"), plain=True)
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
                return _Built(_decimal_fixed(where, fallback, 2, "money value"), plain=True)
            # money_in reads "-1234.56" under lc_monetary=C, the daemon's setting and the
            # replay's.
            return _Built(_text(where, fallback, "a decimal string"), plain=True)
        if handling == "precise":
            scale = numeric_scale(typmod)
            if scale is None:
                return _Built(_decimal_variable(where, fallback), plain=True)
            return _Built(_decimal_fixed(where, fallback, scale, "decimal"), plain=True)
        return _Built(_numeric_string(where, fallback), plain=True)

    def _temporal(self, oid: int, typmod: int, name: str | None, fallback: bool) -> _Built:
        where = self._where(oid, name)
        precision = self._options.time_precision
        if oid == forward.TIMESTAMPTZ:
            return _Built(_timestamptz(where, fallback))
        if oid == forward.TIMETZ:
            return _Built(_timetz(where, fallback))
        if precision == "isostring":
            if oid == forward.DATE:
                return _Built(_iso_date(where, fallback))
            if oid == forward.TIMESTAMP:
                return _Built(_iso_timestamp(where, fallback))
            return _Built(_text(where, fallback, "an ISO time string"), plain=True)
        if oid == forward.DATE:
            return _Built(_date(where, fallback))
        # The units the forward converters chose (cdc.protocol.temporal): milliseconds for
        # precision 0..3 in adaptive modes and always in connect, else microseconds.
        millis = precision == "connect" or (
            0 <= typmod <= 3 and (oid == forward.TIMESTAMP or precision == "adaptive")
        )
        us_per_unit = 1000 if millis else 1
        if oid == forward.TIMESTAMP:
            return _Built(_timestamp(where, fallback, us_per_unit))
        return _Built(_time(where, fallback, us_per_unit), plain=True)

    def _custom(
        self, info: TypeInfo, typmod: int, depth: int, name: str | None, top: bool
    ) -> _Built:
        where = _Where(self._column, name or info.qualified_name)
        fallback = top and self._options.on_conversion_error == "text"
        if info.extension is not None:
            kind = (info.extension, info.name)
            if kind == ("hstore", "hstore"):
                return _Built(_hstore(where, fallback, self._options.hstore_handling))
            if kind in (("postgis", "geometry"), ("postgis", "geography")):
                return _Built(_postgis(where, fallback), plain=True)
            if kind in (("vector", "vector"), ("vector", "halfvec")):
                return _Built(_vector(where, fallback), list_valued=True)
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
        return _Built(_text(where, fallback))


_TEMPORAL: Final = frozenset(
    (forward.DATE, forward.TIME, forward.TIMESTAMP, forward.TIMESTAMPTZ, forward.TIMETZ)
)
