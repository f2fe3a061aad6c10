"""Scalar values of an event back to PostgreSQL's input text: numbers, bytea, geometry,
extension types. No I/O.

The one job: the per-value inverses of ``cdc.protocol.scalars`` (and of the text types'
passthrough), each a closure built once per column by ``cdc.replay.values``, and the
``Where`` that names the column in their errors. Each returns the text the type's input
function reads back as the value the daemon converted, ``None`` for ``None``, and raises
``ReplayValueError`` for a value the connector cannot have written. No I/O, no logging.

``fallback`` (``on_conversion_error: text``, at a column's top level only) lets a string
through where the mode writes no string: it is the value's PostgreSQL text already.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

import orjson

from cdc.errors import ReplayValueError
from cdc.protocol.typeinfo import JsonValue

__all__ = [
    "FLOAT_SPECIALS",
    "TextConverter",
    "Where",
    "boolean_input",
    "bytea_input",
    "decimal_fixed_input",
    "decimal_variable_input",
    "float_input",
    "hstore_input",
    "integer_input",
    "numeric_string_input",
    "point_input",
    "postgis_input",
    "text_input",
    "vector_input",
]

TextConverter: TypeAlias = Callable[[JsonValue], "str | None"]

_a2b_base64 = binascii.a2b_base64
_Base64Error = binascii.Error

# --- Errors and the column's context ----------------------------------------------------

_SHOWN_CHARS: Final = 80  # values in messages are cut: one readable log line
_SAME_SETTINGS: Final = "replay with the values: settings the connector had when it wrote the event"


def _shorten(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


@dataclass(frozen=True, slots=True)
class Where:
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

    def other(self, value: JsonValue, expected: str, *, fallback: bool) -> str | None:
        """A value that is not of the mode's JSON type: SQL NULL, the daemon's text
        fallback (``on_conversion_error: text`` writes PostgreSQL's text as a string,
        passed through when ``fallback``), or else refused."""
        if value is None:
            return None
        if fallback and type(value) is str:
            return value
        raise self.bad(value, expected)


# --- Numbers, booleans, text, bytea --------------------------------------------------------
#
# Each factory returns a closure over its column's context; the per-value path is a class
# check and one conversion.


def text_input(w: Where, fallback: bool, expected: str = "a string") -> TextConverter:
    def convert(value: JsonValue) -> str | None:
        if type(value) is str:
            return value
        return w.other(value, expected, fallback=False)

    return convert


def integer_input(w: Where, fallback: bool) -> TextConverter:
    def convert(value: JsonValue) -> str | None:
        if type(value) is int:
            return str(value)
        return w.other(value, "an integer", fallback=fallback)

    return convert


# float8out/float4out of the non-finite values, which the daemon writes as these strings.
FLOAT_SPECIALS: Final = frozenset(("NaN", "Infinity", "-Infinity"))


def float_input(w: Where, fallback: bool) -> TextConverter:
    # repr() is the shortest text that reads back as the same double; PostgreSQL's own
    # output was the shortest for its float4/float8, so both denote the same number and
    # float4in/float8in (correctly rounded) return the stored value.
    def convert(value: JsonValue) -> str | None:
        if type(value) is float:
            return repr(value)
        if value is None:
            return None
        if type(value) is str and (value in FLOAT_SPECIALS or fallback):
            return value
        if type(value) is int:
            return str(value)
        raise w.bad(value, "a number or 'NaN'/'Infinity'/'-Infinity'")

    return convert


def boolean_input(w: Where, fallback: bool, true: str, false: str) -> TextConverter:
    def convert(value: JsonValue) -> str | None:
        if value is True:
            return true
        if value is False:
            return false
        return w.other(value, "true or false", fallback=fallback)

    return convert


# numeric in decimal_handling 'string': Debezium's SpecialValueDecimal names.
_NUMERIC_NAMES: Final = {
    "NAN": "NaN",
    "POSITIVE_INFINITY": "Infinity",
    "NEGATIVE_INFINITY": "-Infinity",
}


def numeric_string_input(w: Where, fallback: bool) -> TextConverter:
    names = _NUMERIC_NAMES.get

    def convert(value: JsonValue) -> str | None:
        if type(value) is str:
            return names(value, value)
        return w.other(value, "a decimal string (decimal_handling: string)", fallback=False)

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


def decimal_fixed_input(w: Where, fallback: bool, scale: int, what: str) -> TextConverter:
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
        return w.other(value, expected, fallback=False)

    return convert


def decimal_variable_input(w: Where, fallback: bool) -> TextConverter:
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
        return w.other(value, expected, fallback=fallback)

    return convert


_URL_SAFE_TO_STANDARD: Final = str.maketrans("-_", "+/")


def bytea_input(w: Where, fallback: bool, handling: str) -> TextConverter:
    expected = f"bytes in binary_handling: {handling}"
    if handling == "hex":
        # byteain reads "\x" and hex digit pairs; it rejects anything else (the daemon
        # never writes the whitespace it would skip).
        def from_hex(value: JsonValue) -> str | None:
            if type(value) is str:
                return "\\x" + value
            return w.other(value, expected, fallback=False)

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
        return w.other(value, f"{expected} (no {wrong!r})", fallback=False)

    return from_base64


# --- Geometric and extension types --------------------------------------------------------


def _coordinate(value: JsonValue) -> str:
    if type(value) is float:
        return float.__repr__(value)
    if type(value) is str and value in FLOAT_SPECIALS:
        return value
    if type(value) is int:
        return str(value)
    raise ValueError("not a coordinate")


def point_input(w: Where, fallback: bool) -> TextConverter:
    """Debezium's Point struct: ``(x,y)`` from x and y, the exact doubles point_out printed
    (the WKB says the same; NaN payloads are not kept by the text either)."""
    expected = "a Point {'x', 'y', 'wkb', 'srid'}"

    def convert(value: JsonValue) -> str | None:
        if type(value) is dict:
            try:
                return f"({_coordinate(value['x'])},{_coordinate(value['y'])})"
            except (KeyError, ValueError):
                raise w.bad(value, expected) from None
        return w.other(value, expected, fallback=fallback)

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


def postgis_input(w: Where, fallback: bool) -> TextConverter:
    expected = "a geometry {'wkb', 'srid'}"

    def convert(value: JsonValue) -> str | None:
        if type(value) is dict:
            try:
                return _ewkb_hex(value)
            except (KeyError, ValueError, OverflowError):
                raise w.bad(value, expected) from None
        return w.other(value, expected, fallback=fallback)

    return convert


def vector_input(w: Where, fallback: bool) -> TextConverter:
    """pgvector: ``[1.0,2.5,-3.0]``; each repr reads back (strtof) as the stored float4,
    for the reason given for real columns."""
    expected = "a list of numbers"

    def convert(value: JsonValue) -> str | None:
        if type(value) is list:
            try:
                return "[" + ",".join([_vector_element(v) for v in value]) + "]"
            except ValueError:
                raise w.bad(value, expected) from None
        return w.other(value, expected, fallback=fallback)

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


def hstore_input(w: Where, fallback: bool, handling: str) -> TextConverter:
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
            return w.other(value, expected, fallback=False)

        return from_json
    expected = "the hstore as an object (hstore_handling: map)"

    def from_map(value: JsonValue) -> str | None:
        if type(value) is dict:
            try:
                return _hstore_text(value)
            except ValueError:
                raise w.bad(value, expected) from None
        return w.other(value, expected, fallback=fallback)

    return from_map
