"""Turn one column value from PostgreSQL's text output form into its JSON value. No I/O.

The one job: given a column's type OID and type modifier, pick a function that maps the
text PostgreSQL sends (pgoutput tuple kind ``t``; ``COPY ... TO STDOUT`` text uses the same
output functions) to the value Debezium's PostgreSQL connector would put in its JSON event
(JsonConverter, schemas disabled), under the connector's ``ValueOptions``. Types this
module does not know by OID (enums, domains, composites, arrays of those, extension types)
are described by a ``TypeResolver`` (``cdc.postgres.catalog`` at the edge). No I/O, no
logging, no clock, no psycopg.

The daemon forces these session settings on every connection, and the parsers rely on
them: ``DateStyle=ISO``, ``TimeZone=UTC``, ``IntervalStyle=postgres``,
``bytea_output=hex``, ``extra_float_digits=3``, server encoding UTF-8; ``money`` is read
in the C locale's form (``-$1,234.56``).

The full type table, per mode, and every difference from Debezium with its reason, is
``docs/types.md``. In short: integers and floats are numbers (non-finite floats the
strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``); numeric and money follow
``decimal_handling``; bytea ``binary_handling``; date/time/timestamp ``time_precision``
(``cdc.protocol.temporal``); interval ``interval_handling``; arrays are nested lists and
composites objects (``cdc.protocol.structured``); ``bit(1)`` is a boolean and other bit
strings their exact ``"0101"`` text; ``point`` is Debezium's ``{"x","y","wkb","srid"}``;
PostGIS values ``{"wkb","srid"}``; pgvector a list of numbers; hstore an object; every
other type (text types, uuid, json/jsonb, xml, enums, ranges, multiranges, network
addresses, tsvector, other geometric types, unknown types) its text form unchanged.

A value without an exact JSON form under the options never becomes another value: the
converter raises ``ConversionError``, and ``RowConverter`` either stops (the default) or,
with ``on_conversion_error="text"``, emits the text form and counts it in
``ConversionStats``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from cdc.errors import ConversionError
from cdc.protocol import scalars, temporal
from cdc.protocol.messages import UNCHANGED_TOAST, Column, TupleData
from cdc.protocol.structured import array_converter, record_converter
from cdc.protocol.typeinfo import Converter, JsonValue, TypeInfo, TypeResolver

__all__ = [
    "CONVERSION_STATS",
    "UNAVAILABLE_VALUE_PLACEHOLDER",
    "BinaryHandling",
    "ConversionStats",
    "Converter",
    "DecimalHandling",
    "HstoreHandling",
    "JsonValue",
    "OnConversionError",
    "RowConverter",
    "TypeResolver",
    "ValueOptions",
    "converter_for",
    "is_builtin",
    "type_name",
]

DecimalHandling: TypeAlias = Literal["string", "double", "precise"]
BinaryHandling: TypeAlias = Literal["base64", "base64-url-safe", "hex"]
HstoreHandling: TypeAlias = Literal["map", "json"]
OnConversionError: TypeAlias = Literal["stop", "text"]


@dataclass(frozen=True, slots=True)
class ValueOptions:
    """How values whose JSON form is a choice are written (Debezium's ``*.handling.mode``).

    Every field defaults to what ``cdc`` emits without configuration; the defaults are
    exact for every value (Debezium's own defaults are not: see docs/types.md).
    """

    decimal_handling: DecimalHandling = "string"
    binary_handling: BinaryHandling = "base64"
    time_precision: temporal.TimePrecision = "adaptive"
    interval_handling: temporal.IntervalHandling = "string"
    # Debezium's default hstore.handling.mode: the map as JSON text in a string.
    hstore_handling: HstoreHandling = "json"
    on_conversion_error: OnConversionError = "stop"


class ConversionStats:
    """Counts values emitted as their text form under ``on_conversion_error="text"``.

    Mutable and shared on purpose: the pipeline publishes ``text_fallbacks`` as a metric.
    """

    __slots__ = ("text_fallbacks",)

    def __init__(self) -> None:
        self.text_fallbacks = 0


# The default counter of every RowConverter not given its own.
CONVERSION_STATS: Final = ConversionStats()


# --- Type OIDs (pg_type.dat; stable across PostgreSQL versions) -------------------------

BOOL: Final = 16
BYTEA: Final = 17
CHAR: Final = 18
NAME: Final = 19
INT8: Final = 20
INT2: Final = 21
INT4: Final = 23
TEXT: Final = 25
OID: Final = 26
XID: Final = 28
CID: Final = 29
JSON: Final = 114
XML: Final = 142
POINT: Final = 600
FLOAT4: Final = 700
FLOAT8: Final = 701
MONEY: Final = 790
BPCHAR: Final = 1042
VARCHAR: Final = 1043
DATE: Final = 1082
TIME: Final = 1083
TIMESTAMP: Final = 1114
TIMESTAMPTZ: Final = 1184
INTERVAL: Final = 1186
TIMETZ: Final = 1266
BIT: Final = 1560
VARBIT: Final = 1562
NUMERIC: Final = 1700
UUID: Final = 2950
JSONB: Final = 3802
XID8: Final = 5069

_TYPE_NAMES: Final[dict[int, str]] = {
    BOOL: "boolean",
    BYTEA: "bytea",
    CHAR: '"char"',
    NAME: "name",
    INT8: "bigint",
    INT2: "smallint",
    INT4: "integer",
    TEXT: "text",
    OID: "oid",
    XID: "xid",
    CID: "cid",
    JSON: "json",
    XML: "xml",
    POINT: "point",
    FLOAT4: "real",
    FLOAT8: "double precision",
    MONEY: "money",
    BPCHAR: "character",
    VARCHAR: "character varying",
    DATE: "date",
    TIME: "time without time zone",
    TIMESTAMP: "timestamp without time zone",
    TIMESTAMPTZ: "timestamp with time zone",
    INTERVAL: "interval",
    TIMETZ: "time with time zone",
    BIT: "bit",
    VARBIT: "bit varying",
    NUMERIC: "numeric",
    UUID: "uuid",
    JSONB: "jsonb",
    XID8: "xid8",
}

# Built-in array types -> their element type (pg_type.dat typelem), so the common arrays
# convert without a catalog. Checked against a live server by tests/integration.
_ARRAY_ELEMENTS: Final[dict[int, int]] = {
    1000: BOOL,
    1001: BYTEA,
    1002: CHAR,
    1003: NAME,
    1005: INT2,
    1007: INT4,
    1009: TEXT,
    1011: XID,
    1012: CID,
    1014: BPCHAR,
    1015: VARCHAR,
    1016: INT8,
    1017: POINT,
    1021: FLOAT4,
    1022: FLOAT8,
    1028: OID,
    143: XML,
    199: JSON,
    271: XID8,
    791: MONEY,
    1115: TIMESTAMP,
    1182: DATE,
    1183: TIME,
    1185: TIMESTAMPTZ,
    1187: INTERVAL,
    1231: NUMERIC,
    1270: TIMETZ,
    1561: BIT,
    1563: VARBIT,
    2951: UUID,
    3807: JSONB,
    # Arrays of types kept as text: the elements are unquoted, nothing else.
    1018: 601,  # lseg
    1019: 602,  # path
    1020: 603,  # box (its elements are separated by ';')
    1027: 604,  # polygon
    629: 628,  # line
    719: 718,  # circle
    651: 650,  # cidr
    1040: 829,  # macaddr
    1041: 869,  # inet
    775: 774,  # macaddr8
    3221: 3220,  # pg_lsn
    3643: 3614,  # tsvector
    3645: 3615,  # tsquery
    3905: 3904,  # int4range
    3907: 3906,  # numrange
    3909: 3908,  # tsrange
    3911: 3910,  # tstzrange
    3913: 3912,  # daterange
    3927: 3926,  # int8range
    4073: 4072,  # jsonpath
}
_BOX: Final = 603


def is_builtin(type_oid: int) -> bool:
    """Whether a type's converter is known without the catalog (a ``TypeResolver``)."""
    return type_oid in _FACTORIES or (type_oid in _ARRAY_ELEMENTS and type_oid in _TYPE_NAMES)


def type_name(type_oid: int) -> str:
    """The SQL name of a built-in type, or ``"oid <n>"`` for one this module does not know."""
    return _TYPE_NAMES.get(type_oid) or f"oid {type_oid}"


# --- Dispatch -----------------------------------------------------------------------------

ConverterFactory: TypeAlias = Callable[[int, ValueOptions], "Converter | None"]


def _fixed(converter: Converter | None) -> ConverterFactory:
    return lambda _typmod, _options: converter


def _numeric_factory(typmod: int, options: ValueOptions) -> Converter | None:
    if options.decimal_handling == "double":
        return scalars.numeric_double
    if options.decimal_handling == "precise":
        scale = scalars.numeric_scale(typmod)
        return (
            scalars.numeric_precise_variable
            if scale is None
            else scalars.numeric_precise_fixed(scale)
        )
    return scalars.numeric_string


def _money_factory(_typmod: int, options: ValueOptions) -> Converter | None:
    if options.decimal_handling == "double":
        return scalars.money_double
    if options.decimal_handling == "precise":
        return scalars.money_precise
    return scalars.money_string


def _bytea_factory(_typmod: int, options: ValueOptions) -> Converter | None:
    if options.binary_handling == "hex":
        return scalars.bytea_hex
    if options.binary_handling == "base64-url-safe":
        return scalars.bytea_url_safe
    return scalars.bytea


def _bit_factory(typmod: int, _options: ValueOptions) -> Converter | None:
    return scalars.bit1 if typmod == 1 else None


def _temporal(factory: temporal.TemporalFactory) -> ConverterFactory:
    return lambda typmod, options: factory(typmod, options.time_precision)


def _interval_factory(_typmod: int, options: ValueOptions) -> Converter | None:
    return temporal.interval_converter(options.interval_handling)


_FACTORIES: Final[dict[int, ConverterFactory]] = {
    INT2: _fixed(int),
    INT4: _fixed(int),
    INT8: _fixed(int),
    OID: _fixed(int),
    XID: _fixed(int),
    CID: _fixed(int),
    XID8: _fixed(int),
    FLOAT4: _fixed(scalars.float_value),
    FLOAT8: _fixed(scalars.float_value),
    BOOL: _fixed(scalars.bool),
    NUMERIC: _numeric_factory,
    MONEY: _money_factory,
    BYTEA: _bytea_factory,
    BIT: _bit_factory,
    POINT: _fixed(scalars.point),
    DATE: _temporal(temporal.date_converter),
    TIMESTAMP: _temporal(temporal.timestamp_converter),
    TIMESTAMPTZ: _temporal(temporal.timestamptz_converter),
    TIME: _temporal(temporal.time_converter),
    TIMETZ: _temporal(temporal.timetz_converter),
    INTERVAL: _interval_factory,
}

# Types that belong to an extension, by (extension, type name): their OIDs differ per
# database, so the catalog names them.
_EXTENSION_TYPES: Final[dict[tuple[str, str], ConverterFactory]] = {
    ("hstore", "hstore"): lambda _t, o: (
        scalars.hstore_json if o.hstore_handling == "json" else scalars.hstore_map
    ),
    ("postgis", "geometry"): _fixed(scalars.postgis),
    ("postgis", "geography"): _fixed(scalars.postgis),
    ("vector", "vector"): _fixed(scalars.vector),
    ("vector", "halfvec"): _fixed(scalars.vector),
}

# Domains over domains over arrays of composites...: deeper than this is a cycle.
_MAX_DEPTH: Final = 32


def converter_for(
    type_oid: int,
    type_modifier: int,
    options: ValueOptions,
    *,
    types: TypeResolver | None = None,
) -> Converter | None:
    """The function turning this column's text values into JSON values.

    Called once per column when a Relation arrives, never per value.

    Args:
        type_oid: ``pg_type.oid`` of the column (Relation message).
        type_modifier: ``atttypmod``; -1 when the type has none.
        options: the connector's value options.
        types: looks up types this module does not know by OID (enums, domains,
            composites, their arrays, extension types); without it they keep their text.

    Returns:
        A converter, or ``None`` when the text itself is the JSON value (text types, json,
        uuid, enums, ranges, unknown types...), so the caller skips a call.
        A converter raises ``ValueError`` (or ``LookupError``/``ArithmeticError``) on
        text that is not PostgreSQL's output for the type, and ``ConversionError`` when
        the value has no exact JSON form under ``options``; callers add the column context.

    Raises:
        Whatever ``types`` raises when the catalog cannot be read.
    """
    return _build(type_oid, type_modifier, options, types, 0)


def _build(
    oid: int, typmod: int, options: ValueOptions, types: TypeResolver | None, depth: int
) -> Converter | None:
    if depth > _MAX_DEPTH:
        raise ConversionError(f"type oid {oid} nests deeper than {_MAX_DEPTH} levels")
    factory = _FACTORIES.get(oid)
    if factory is not None:
        return factory(typmod, options)
    element = _ARRAY_ELEMENTS.get(oid)
    if element is not None:
        inner = _build(element, typmod, options, types, depth + 1)
        return array_converter(inner, ";" if element == _BOX else ",")
    info = types(oid) if types is not None else None
    if info is None:
        return None
    return _build_custom(info, typmod, options, types, depth)


def _build_custom(
    info: TypeInfo, typmod: int, options: ValueOptions, types: TypeResolver | None, depth: int
) -> Converter | None:
    if info.extension is not None:
        factory = _EXTENSION_TYPES.get((info.extension, info.name))
        if factory is not None:
            return factory(typmod, options)
    if info.kind == "d":
        # A domain is its base type; the domain's own typmod is in typtypmod.
        return _build(info.base_oid, info.base_modifier, options, types, depth + 1)
    if info.kind == "c":
        return record_converter(
            tuple(
                (a.name, _build(a.type_oid, a.type_modifier, options, types, depth + 1))
                for a in info.attributes
            )
        )
    if info.kind == "b" and info.category == "A" and info.element_oid:
        inner = _build(info.element_oid, typmod, options, types, depth + 1)
        return array_converter(inner, info.delimiter)
    return None  # enums, ranges, multiranges, other base types: their text form


# --- Whole rows -------------------------------------------------------------------------

# Debezium's default ``unavailable.value.placeholder`` for an unchanged TOASTed value the
# server did not send (pgoutput tuple kind 'u').
UNAVAILABLE_VALUE_PLACEHOLDER: Final = "__debezium_unavailable_value"

_CONVERSION_FAILURES: Final = (ValueError, LookupError, ArithmeticError, ConversionError)


# Values in error messages are cut: a message must stay one readable log line.
_SHOWN_CHARS: Final = 80


def _shorten(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


class RowConverter:
    """Converts the tuples of one table into JSON objects; built once per Relation.

    Values are ``str`` (text form), ``None`` (NULL) or ``UNCHANGED_TOAST``, which becomes
    ``unchanged_toast`` (never ``null``: a consumer must not mistake it for NULL).
    """

    __slots__ = (
        "_columns",
        "_pairs",
        "_stats",
        "_table",
        "_text_fallback",
        "_type_names",
        "_unchanged_toast",
        "names",
    )

    def __init__(
        self,
        columns: tuple[Column, ...],
        options: ValueOptions,
        *,
        table: str | None = None,
        unchanged_toast: JsonValue = UNAVAILABLE_VALUE_PLACEHOLDER,
        types: TypeResolver | None = None,
        stats: ConversionStats | None = None,
    ) -> None:
        """Build the converters of ``columns``.

        Args:
            types: resolves non-built-in type OIDs (``TypeCatalog.lookup``).
            stats: counts text fallbacks; ``CONVERSION_STATS`` when not given.

        Raises:
            Whatever ``types`` raises when the catalog cannot be read.
        """
        self._columns = columns
        self._table = table
        self._unchanged_toast = unchanged_toast
        self._text_fallback = options.on_conversion_error == "text"
        self._stats = CONVERSION_STATS if stats is None else stats
        self.names: tuple[str, ...] = tuple(c.name for c in columns)
        self._pairs: tuple[tuple[str, Converter | None], ...] = tuple(
            (c.name, converter_for(c.type_oid, c.type_modifier, options, types=types))
            for c in columns
        )
        names: list[str] = []
        for c in columns:
            info = (
                types(c.type_oid) if types is not None and c.type_oid not in _TYPE_NAMES else None
            )
            names.append(info.qualified_name if info is not None else type_name(c.type_oid))
        self._type_names = tuple(names)

    @property
    def converters(self) -> tuple[Converter | None, ...]:
        """Each column's converter in column order (``cdc.native`` maps them to kinds)."""
        return tuple(convert for _, convert in self._pairs)

    def convert(self, values: TupleData) -> dict[str, JsonValue]:
        """One row as a dict in column order.

        Raises:
            ConversionError: a value is not valid output of its type, has no exact JSON
                form, or is in binary form; ``table``, ``column`` and ``type_name`` are set.
                Under ``on_conversion_error="text"`` only for binary values and tuples of
                the wrong length.
        """
        if len(values) != len(self._pairs):
            raise ConversionError(
                f"tuple has {len(values)} values but the table has {len(self._pairs)} "
                "columns; the relation cache is out of step with the stream",
                table=self._table,
            )
        row: dict[str, JsonValue] = {}
        try:
            for (name, convert), value in zip(self._pairs, values):  # noqa: B905 (length checked)
                if value.__class__ is str:
                    row[name] = value if convert is None else convert(value)
                elif value is None:
                    row[name] = None
                elif value is UNCHANGED_TOAST:
                    row[name] = self._unchanged_toast
                else:
                    raise ConversionError(
                        "value in binary form; cdc reads pgoutput's text form only "
                        "(do not set the 'binary' option)"
                    )
        except _CONVERSION_FAILURES as exc:
            # Column names are unique, so the failing column is the next one to fill.
            index = len(row)
            value = values[index]
            if self._text_fallback and value.__class__ is str:
                return self._convert_with_fallback(values, row, index)
            raise self._failure(index, value, exc) from exc
        return row

    def _convert_with_fallback(
        self, values: TupleData, row: dict[str, JsonValue], index: int
    ) -> dict[str, JsonValue]:
        """The rest of a row after a failure at ``index``, failing values as their text."""
        for position in range(index, len(self._pairs)):
            name, convert = self._pairs[position]
            value = values[position]
            if value.__class__ is not str:
                row.update(self._rest_of(values, position))
                return row
            assert isinstance(value, str)
            try:
                row[name] = value if convert is None else convert(value)
            except _CONVERSION_FAILURES:
                row[name] = value
                self._stats.text_fallbacks += 1
        return row

    def _rest_of(self, values: TupleData, start: int) -> dict[str, JsonValue]:
        # Values after a non-text one: NULL, TOAST and binary as in convert().
        out: dict[str, JsonValue] = {}
        for position in range(start, len(self._pairs)):
            name, convert = self._pairs[position]
            value = values[position]
            if value is None:
                out[name] = None
            elif value is UNCHANGED_TOAST:
                out[name] = self._unchanged_toast
            elif isinstance(value, str):
                try:
                    out[name] = value if convert is None else convert(value)
                except _CONVERSION_FAILURES:
                    out[name] = value
                    self._stats.text_fallbacks += 1
            else:
                raise self._failure(
                    position,
                    value,
                    ConversionError(
                        "value in binary form; cdc reads pgoutput's text form only "
                        "(do not set the 'binary' option)"
                    ),
                )
        return out

    def _failure(self, index: int, value: object, exc: Exception) -> ConversionError:
        column = self._columns[index]
        name = self._type_names[index]
        if isinstance(exc, ConversionError):
            reason = str(exc)
        else:
            reason = f"not valid {name} output ({_shorten(str(exc))})"
        where = f"{self._table}." if self._table else ""
        return ConversionError(
            f"column {where}{column.name} ({name}): cannot convert {_shorten(repr(value))}: "
            f"{reason}",
            table=self._table,
            column=column.name,
            type_name=name,
        )
