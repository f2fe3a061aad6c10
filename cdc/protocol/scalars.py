"""Scalar values: PostgreSQL's text output form of one built-in or extension value to JSON.

The one job: the converters of numbers (numeric and money per ``decimal_handling``),
booleans and bit strings, bytea (per ``binary_handling``), ``point``, PostGIS geometry,
pgvector vectors and hstore. Each takes the text PostgreSQL prints and returns the JSON
value, raising ``ValueError`` for text that is not the type's output and
``ConversionError`` for a value without an exact JSON form. No I/O, no logging.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import Final, Literal

import orjson

from cdc.errors import ConversionError
from cdc.protocol.structured import hstore_pairs
from cdc.protocol.typeinfo import Converter, JsonValue

__all__ = [
    "bit1",
    "bool",
    "bytea",
    "bytea_hex",
    "bytea_url_safe",
    "float_value",
    "hstore_json",
    "hstore_map",
    "money_double",
    "money_precise",
    "money_string",
    "numeric_double",
    "numeric_precise_fixed",
    "numeric_precise_variable",
    "numeric_scale",
    "numeric_string",
    "point",
    "postgis",
    "vector",
]


# --- Numbers ------------------------------------------------------------------------------

# float4/float8 output of the non-finite values (float8out); Debezium's JsonConverter writes
# them as the same strings because Jackson quotes non-numeric numbers by default.
_FLOAT_SPECIALS: Final = frozenset(("NaN", "Infinity", "-Infinity"))
# numeric in Debezium's string mode: SpecialValueDecimal's names.
_NUMERIC_SPECIALS: Final = {
    "NaN": "NAN",
    "Infinity": "POSITIVE_INFINITY",
    "-Infinity": "NEGATIVE_INFINITY",
}
_INF: Final = float("inf")


def float_value(text: str) -> JsonValue:
    if text in _FLOAT_SPECIALS:
        return text
    return float(text)


def numeric_string(text: str) -> JsonValue:
    return _NUMERIC_SPECIALS.get(text, text)


def numeric_double(text: str) -> JsonValue:
    if text in _FLOAT_SPECIALS:
        return text
    value = float(text)
    if value in (_INF, -_INF):
        # A finite numeric rounded to infinity is not a rounding but a different value.
        raise ConversionError(
            f"numeric value {text[:40]!r} is beyond the range of a double; "
            "set decimal_handling to 'string' to emit it exactly"
        )
    return value


def numeric_scale(typmod: int) -> int | None:
    """The declared scale of numeric(p, s), or None without a type modifier.

    PostgreSQL 15 allows negative scales; they sit in the low 11 bits, sign-extended.
    """
    if typmod < 4:
        return None
    return (((typmod - 4) & 0x7FF) ^ 1024) - 1024


def _decimal_parts(text: str) -> tuple[int, int]:
    """(unscaled integer, scale) of numeric output text; ``"-1.50"`` -> ``(-150, 2)``."""
    if text in _FLOAT_SPECIALS:
        raise ConversionError(
            f"numeric {text} has no form in decimal_handling 'precise' (Debezium emits null); "
            "set decimal_handling to 'string'"
        )
    whole, _, fraction = text.partition(".")
    if not (whole.lstrip("-").isdigit() and (fraction.isdigit() or not fraction)):
        raise ValueError("not numeric output")
    return int(whole + fraction), len(fraction)


def _java_bytes(unscaled: int) -> str:
    """base64 of ``BigInteger.toByteArray()``: minimal big-endian two's complement."""
    bits = unscaled.bit_length() if unscaled >= 0 else (~unscaled).bit_length()
    raw = unscaled.to_bytes(bits // 8 + 1, "big", signed=True)
    return base64.b64encode(raw).decode("ascii")


def _rescale(unscaled: int, scale: int, target: int) -> int:
    if target >= scale:
        return unscaled * int(10 ** (target - scale))
    quotient, rest = divmod(unscaled, int(10 ** (scale - target)))
    if rest:
        raise ValueError(f"value has more than {target} fractional digits")
    return quotient


def numeric_precise_fixed(scale: int) -> Converter:
    """Connect ``Decimal`` with the column's scale: JsonConverter writes base64 bytes."""

    def convert(text: str) -> JsonValue:
        unscaled, own = _decimal_parts(text)
        return _java_bytes(_rescale(unscaled, own, scale))

    return convert


def numeric_precise_variable(text: str) -> JsonValue:
    """Debezium's ``VariableScaleDecimal`` struct for numeric without a declared scale.

    The scale is the value's own display scale: ``1.50`` is ``{"scale": 2, ...}`` where
    Debezium strips trailing zeros (``scale 1``), losing what PostgreSQL kept.
    """
    unscaled, scale = _decimal_parts(text)
    return {"scale": scale, "value": _java_bytes(unscaled)}


# money in the C locale: "-$92,233,720,368,547,758.08" (cash_out).
_MONEY_RE: Final = re.compile(r"(-?)\$([0-9]{1,3}(?:,[0-9]{3})*)\.([0-9]{2})")


def _money_decimal(text: str) -> str:
    m = _MONEY_RE.fullmatch(text)
    if m is None:
        raise ConversionError(
            f"money {text[:40]!r} is not in the C locale's form; set lc_monetary to 'C' "
            "for the connector's database user"
        )
    return f"{m[1]}{m[2].replace(',', '')}.{m[3]}"


def money_string(text: str) -> JsonValue:
    return _money_decimal(text)


def money_double(text: str) -> JsonValue:
    return float(_money_decimal(text))


def money_precise(text: str) -> JsonValue:
    unscaled, _ = _decimal_parts(_money_decimal(text))
    return _java_bytes(unscaled)


_BOOLS: Final = {"t": True, "f": False}
_BITS: Final = {"1": True, "0": False}


def bool(text: str) -> JsonValue:
    return _BOOLS[text]


def bit1(text: str) -> JsonValue:
    # bit(1) is a boolean in Debezium, and exactly so: the width is known to be 1.
    return _BITS[text]


# --- bytea ----------------------------------------------------------------------------------

_b2a_base64 = binascii.b2a_base64
_fromhex = bytes.fromhex


def _bytea_bytes(text: str) -> bytes:
    # bytea_output=hex: "\x" then two hex digits per byte (PostgreSQL docs 8.4.1).
    if text[:2] != "\\x":
        raise ValueError("bytea not in hex output form (bytea_output must be 'hex')")
    return _fromhex(text[2:])


def bytea(text: str) -> JsonValue:
    return _b2a_base64(_bytea_bytes(text), newline=False).decode("ascii")


def bytea_url_safe(text: str) -> JsonValue:
    # Java's Base64.getUrlEncoder(): '-' and '_', with padding.
    return base64.urlsafe_b64encode(_bytea_bytes(text)).decode("ascii")


def bytea_hex(text: str) -> JsonValue:
    _bytea_bytes(text)  # validates
    return text[2:]


# --- Geometric, PostGIS, pgvector, hstore -------------------------------------------------

_WKB_POINT: Final = struct.Struct("<BIdd")
_EWKB_SRID_FLAG: Final = 0x20000000


def point(text: str) -> JsonValue:
    """Debezium's ``io.debezium.data.geometry.Point``: x, y and the WKB of the point.

    A non-finite coordinate is the string ``"NaN"``/``"Infinity"``/``"-Infinity"``, as
    for float8 columns (Jackson quotes non-finite doubles); the WKB keeps its bits.
    """
    if text[:1] != "(" or text[-1:] != ")":
        raise ValueError("not a point")
    xs, comma, ys = text[1:-1].partition(",")
    if not comma:
        raise ValueError("not a point")
    x, y = float(xs), float(ys)
    wkb = base64.b64encode(_WKB_POINT.pack(1, 1, x, y)).decode("ascii")
    return {"x": float_value(xs), "y": float_value(ys), "wkb": wkb, "srid": None}


def postgis(text: str) -> JsonValue:
    """PostGIS geometry/geography (hex EWKB) as Debezium's ``{"wkb": ..., "srid": ...}``:
    the SRID is taken out of the EWKB header, leaving OGC WKB."""
    raw = _fromhex(text)
    order: Literal["little", "big"] = "little" if raw[0] == 1 else "big"
    kind = int.from_bytes(raw[1:5], order)
    srid: int | None = None
    if kind & _EWKB_SRID_FLAG:
        srid = int.from_bytes(raw[5:9], order, signed=True)
        raw = raw[:1] + (kind & ~_EWKB_SRID_FLAG).to_bytes(4, order) + raw[9:]
    elif len(raw) < 5:
        raise ValueError("EWKB too short")
    return {"wkb": base64.b64encode(raw).decode("ascii"), "srid": srid}


def vector(text: str) -> JsonValue:
    """pgvector ``vector``/``halfvec`` ``[1,2.5,3]`` as a list of numbers."""
    if text[:1] != "[" or text[-1:] != "]":
        raise ValueError("not a vector")
    body = text[1:-1]
    return [float(v) for v in body.split(",")] if body else []


def hstore_map(text: str) -> JsonValue:
    return hstore_pairs(text)


def hstore_json(text: str) -> JsonValue:
    # Debezium's hstore.handling.mode=json: the object as compact JSON text in a string.
    return orjson.dumps(hstore_pairs(text)).decode("utf-8")
