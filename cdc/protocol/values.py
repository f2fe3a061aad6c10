"""Turn one column value from PostgreSQL's text output form into its JSON value. No I/O.

The one job: given a column's type OID and type modifier, pick a function that maps the
text PostgreSQL sends (pgoutput tuple kind ``t``; ``COPY ... TO STDOUT`` text uses the same
output functions) to the value Debezium's PostgreSQL connector would put in its JSON event
(JsonConverter, schemas disabled, default settings except ``decimal.handling.mode``). No
I/O, no logging, no clock, no psycopg.

The daemon forces these session settings on every connection, and the parsers rely on
them: ``DateStyle=ISO``, ``TimeZone=UTC``, ``IntervalStyle=postgres``,
``bytea_output=hex``, ``extra_float_digits=3``, server encoding UTF-8.

Mapping (Debezium's defaults unless said otherwise):

================================ ========================================================
PostgreSQL type                  JSON value
================================ ========================================================
int2, int4, int8, oid            number
float4, float8                   number; ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` as
                                 strings (Jackson quotes non-finite doubles, so Debezium
                                 consumers already read these)
bool                             ``true`` / ``false``
text, varchar, bpchar, name,     the text unchanged
"char", uuid, json, jsonb
numeric (decimal_handling        the exact decimal text, scale kept (``"-0.000"``);
``"string"``, the default)       ``"NAN"``, ``"POSITIVE_INFINITY"``, ``"NEGATIVE_INFINITY"``
numeric (``"double"``)           number (nearest double); specials as for float8; a value
                                 beyond the double range raises ``ConversionError``
date                             days since 1970-01-01
timestamp(0..3)                  milliseconds since 1970-01-01T00:00
timestamp(4..6), timestamp       microseconds since 1970-01-01T00:00
time(0..3)                       milliseconds since midnight (``24:00:00`` is 86400000)
time(4..6), time                 microseconds since midnight
timestamptz                      ISO-8601 in UTC as ``io.debezium.time.ZonedTimestamp``:
                                 ``2026-11-27T11:08:31.701111Z``, exactly p fractional
                                 digits for timestamptz(p) (6 when p is not given, none
                                 for p = 0), as Debezium >= 2.2 writes them
timetz                           ``io.debezium.time.ZonedTime`` form ``11:08:31.7Z``
                                 (fraction without trailing zeros) -- see below
bytea                            base64 of the bytes (``""`` for an empty value)
interval, arrays, enums, ranges, the text form, for now
inet, money, every other type
================================ ========================================================

``RowConverter`` applies the converters of a table's columns to a whole tuple; the
envelope (pgoutput) and the snapshot (COPY text rows) both use it.

Where Debezium 3.6 emits a wrong value (see DEBEZIUM-DIFFERENCES.md) we emit the
exact one instead:

- numeric ``NaN``/``Infinity``/``-Infinity``: the strings above (Debezium: ``null``);
  ``-0.000`` keeps its scale (Debezium: ``0``).
- date, timestamp and timestamptz ``infinity`` / ``-infinity``: the JSON strings
  ``"infinity"`` / ``"-infinity"`` (Debezium: an overflowed or magic number for date and
  timestamp). A consumer that expects a number fails loudly instead of reading a date.
- dates and timestamps outside Python's ``datetime`` range (BC, years past 9999) are
  computed with integer arithmetic on the proleptic Gregorian calendar, PostgreSQL's
  year 1 BC being astronomical year 0. ``timestamp(4..6)`` after 294247-01-10T04:00:54Z
  is beyond int64 microseconds: we emit the exact integer (JSON has no integer limit),
  where Debezium wraps around to a negative number. timestamptz prints such years as
  Java's ISO formatter does: ``+10000-01-01T...``, ``0000-...`` (1 BC), ``-0001-...``.
- timetz keeps its offset: ``00:00:00+15:59`` stays ``"00:00:00+15:59"`` (Java
  ``OffsetTime`` form, readable by ``OffsetTime.parse``), where Debezium converts to UTC,
  losing the offset and wrapping the time to ``"08:01:00Z"``. A zero offset is written
  ``Z``, so values stored in UTC read exactly as Debezium writes them.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Final, Literal, TypeAlias

from cdc.errors import ConversionError
from cdc.protocol.messages import UNCHANGED_TOAST, Column, TupleData

__all__ = [
    "UNAVAILABLE_VALUE_PLACEHOLDER",
    "Converter",
    "JsonValue",
    "RowConverter",
    "ValueOptions",
    "converter_for",
    "type_name",
]

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
Converter: TypeAlias = Callable[[str], JsonValue]

DecimalHandling: TypeAlias = Literal["string", "double"]


@dataclass(frozen=True, slots=True)
class ValueOptions:
    """How values whose JSON form is a choice are written (Debezium's ``*.handling.mode``).

    Every field defaults to what ``cdc`` emits without configuration. New modes (e.g.
    ``"precise"`` decimals, interval or binary handling, time precision) are added as new
    fields with a default, so existing callers keep their behaviour.
    """

    decimal_handling: DecimalHandling = "string"


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
JSON: Final = 114
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
NUMERIC: Final = 1700
UUID: Final = 2950
JSONB: Final = 3802

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
    JSON: "json",
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
    NUMERIC: "numeric",
    UUID: "uuid",
    JSONB: "jsonb",
}


def type_name(type_oid: int) -> str:
    """The SQL name of a built-in type, or ``"oid <n>"`` for one this module does not know."""
    return _TYPE_NAMES.get(type_oid) or f"oid {type_oid}"


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


def _float(text: str) -> JsonValue:
    if text in _FLOAT_SPECIALS:
        return text
    return float(text)


def _numeric_string(text: str) -> JsonValue:
    return _NUMERIC_SPECIALS.get(text, text)


def _numeric_double(text: str) -> JsonValue:
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


_BOOLS: Final = {"t": True, "f": False}


def _bool(text: str) -> JsonValue:
    return _BOOLS[text]


# --- bytea ----------------------------------------------------------------------------------

_b2a_base64 = binascii.b2a_base64
_fromhex = bytes.fromhex


def _bytea(text: str) -> JsonValue:
    # bytea_output=hex: "\x" then two hex digits per byte (PostgreSQL docs 8.4.1).
    if text[:2] != "\\x":
        raise ValueError("bytea not in hex output form (bytea_output must be 'hex')")
    return _b2a_base64(_fromhex(text[2:]), newline=False).decode("ascii")


# --- Calendar arithmetic (proleptic Gregorian, astronomical years) -------------------------

_UNIX_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_US_PER_DAY: Final = 86_400_000_000
_DAYS_IN_MONTH: Final = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a valid proleptic Gregorian date, any astronomical year.

    Validates month and day, since nothing downstream would.
    """
    if 1 <= year <= 9999:
        return date(year, month, day).toordinal() - _UNIX_EPOCH_ORDINAL
    if not 1 <= month <= 12:
        raise ValueError(f"month {month} out of range")
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= day <= _DAYS_IN_MONTH[month] + (month == 2 and leap):
        raise ValueError(f"day {day} out of range")
    return _days_from_civil_unchecked(year, month, day)


def _days_from_civil_unchecked(year: int, month: int, day: int) -> int:
    """Howard Hinnant's ``days_from_civil``; floor division keeps it exact for years < 1."""
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """Inverse of ``_days_from_civil``: (astronomical year, month, day)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, day


def _year_from_text(text: str, bc: bool) -> int:
    year = int(text)
    if year < 1:
        raise ValueError("year 0 does not exist in PostgreSQL's output")
    return 1 - year if bc else year


def _java_year(year: int) -> str:
    """A year as Java's ISO_LOCAL_DATE prints it (4 to 10 digits, SignStyle.EXCEEDS_PAD)."""
    if year > 9999:
        return f"+{year}"
    if year < 0:
        return f"-{-year:04d}"
    return f"{year:04d}"


_FRACTION_SCALE: Final = (0, 100_000, 10_000, 1_000, 100, 10, 1)


def _fraction_us(digits: str) -> int:
    """Microseconds of the 1 to 6 fractional digits PostgreSQL prints (trailing zeros cut)."""
    if not 0 < len(digits) <= 6 or not digits.isdigit():
        raise ValueError(f"bad fractional seconds {digits!r}")
    return int(digits) * _FRACTION_SCALE[len(digits)]


# Full grammar of the date/time output (DateStyle=ISO), used when the fast paths below do
# not apply: years of 5+ digits, BC, non-zero offsets, or anything unexpected.
_DATE_RE: Final = re.compile(r"(\d{4,})-(\d\d)-(\d\d)( BC)?")
_TIME_RE: Final = re.compile(
    r"(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?:([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?)?"
)
_TIMESTAMP_RE: Final = re.compile(
    r"(\d{4,})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?"
    r"(?:([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?)?( BC)?"
)

_INFINITIES: Final = frozenset(("infinity", "-infinity"))


def _clock_us(hour: int, minute: int, second: int) -> int:
    # 24:00:00 is a valid time (PostgreSQL docs 8.5.1.2); seconds never leap in output.
    if hour > 24 or minute > 59 or second > 59 or (hour == 24 and (minute or second)):
        raise ValueError("time of day out of range")
    return (hour * 3600 + minute * 60 + second) * 1_000_000


def _offset_seconds(sign: str | None, hh: str | None, mm: str | None, ss: str | None) -> int:
    if sign is None or hh is None:
        return 0
    seconds = int(hh) * 3600 + int(mm or 0) * 60 + int(ss or 0)
    return -seconds if sign == "-" else seconds


# --- date ------------------------------------------------------------------------------------


def _date(text: str) -> JsonValue:
    if len(text) == 10 and text[4] == "-" and text[7] == "-":
        # 1 <= year <= 9999, no era: the C date constructor validates and counts.
        return date(int(text[:4]), int(text[5:7]), int(text[8:])).toordinal() - _UNIX_EPOCH_ORDINAL
    if text in _INFINITIES:
        return text
    m = _DATE_RE.fullmatch(text)
    if m is None:
        raise ValueError("not a date in DateStyle=ISO output form")
    year = _year_from_text(m[1], m[4] is not None)
    return _days_from_civil(year, int(m[2]), int(m[3]))


# --- timestamp (without time zone) ------------------------------------------------------------


def _timestamp_epoch_us(text: str) -> int:
    """Microseconds since 1970-01-01 00:00 of a ``timestamp`` (or, with its offset applied,
    ``timestamptz``) text value."""
    if (
        len(text) >= 19
        and text[4] == "-"
        and text[7] == "-"
        and text[10] == " "
        and text[13] == ":"
        and text[16] == ":"
        and (len(text) == 19 or (text[19] == "." and text[-1] != "C"))
    ):
        days = date(int(text[:4]), int(text[5:7]), int(text[8:10])).toordinal()
        us = (days - _UNIX_EPOCH_ORDINAL) * _US_PER_DAY + _clock_us(
            int(text[11:13]), int(text[14:16]), int(text[17:19])
        )
        if len(text) > 19:
            us += _fraction_us(text[20:])
        return us
    m = _TIMESTAMP_RE.fullmatch(text)
    if m is None or m[8] is not None:
        raise ValueError("not a timestamp in DateStyle=ISO output form")
    return _timestamp_match_us(m)


def _timestamp_match_us(m: re.Match[str]) -> int:
    year = _year_from_text(m[1], m[12] is not None)
    us = _days_from_civil(year, int(m[2]), int(m[3])) * _US_PER_DAY
    us += _clock_us(int(m[4]), int(m[5]), int(m[6]))
    if m[7] is not None:
        us += _fraction_us(m[7])
    return us - _offset_seconds(m[8], m[9], m[10], m[11]) * 1_000_000


def _timestamp_us(text: str) -> JsonValue:
    if text in _INFINITIES:
        return text
    return _timestamp_epoch_us(text)


def _timestamp_ms(text: str) -> JsonValue:
    if text in _INFINITIES:
        return text
    # Exact: timestamp(0..3) values carry at most 3 fractional digits.
    return _timestamp_epoch_us(text) // 1000


# --- timestamptz ----------------------------------------------------------------------------


def _zoned_timestamp(width: int) -> Converter:
    """ZonedTimestamp text with exactly ``width`` fractional digits (none when 0).

    Debezium >= 2.2 formats timestamptz(p) with p digits, p being the column's scale,
    which pgjdbc reports as 6 when no precision is declared (DBZ-5996, DBZ-6163).
    """
    zeros = "0" * width

    def convert(text: str) -> JsonValue:
        n = len(text)
        # Fast path: "YYYY-MM-DD HH:MM:SS[.f{1,6}]+00", what TimeZone=UTC produces for
        # years 1..9999. Pure string surgery, no number is computed: it trusts that
        # timestamptz_out wrote a valid date and time, and only checks the layout.
        if (
            n >= 22
            and text[-3:] == "+00"
            and text[4] == "-"
            and text[7] == "-"
            and text[10] == " "
            and text[13] == ":"
            and text[16] == ":"
            and text[:4].isdigit()
        ):
            if n == 22:
                if width:
                    return f"{text[:10]}T{text[11:19]}.{zeros}Z"
                return f"{text[:10]}T{text[11:19]}Z"
            if text[19] == "." and n <= 29 and text[20:-3].isdigit():
                digits = text[20:-3]
                if len(digits) <= width:
                    return f"{text[:10]}T{text[11:19]}.{digits}{zeros[len(digits) :]}Z"
        if text in _INFINITIES:
            return text
        m = _TIMESTAMP_RE.fullmatch(text)
        if m is None or m[8] is None:
            raise ValueError("not a timestamptz in DateStyle=ISO output form")
        return _format_zoned_timestamp(_timestamp_match_us(m), width)

    return convert


def _format_zoned_timestamp(epoch_us: int, width: int) -> str:
    days, us_of_day = divmod(epoch_us, _US_PER_DAY)
    year, month, day = _civil_from_days(days)
    seconds, micros = divmod(us_of_day, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    if width:
        fraction = "." + f"{micros:06d}"[:width].ljust(width, "0")
    elif micros:  # precision 0 has no fraction; ISO_OFFSET_DATE_TIME prints what exists
        fraction = "." + f"{micros:06d}".rstrip("0")
    else:
        fraction = ""
    return (
        f"{_java_year(year)}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{fraction}Z"
    )


# --- time and timetz ------------------------------------------------------------------------


def _time_of_day_us(text: str) -> int:
    if len(text) == 8 and text[2] == ":" and text[5] == ":":
        return _clock_us(int(text[:2]), int(text[3:5]), int(text[6:]))
    m = _TIME_RE.fullmatch(text)
    if m is None or m[5] is not None:
        raise ValueError("not a time in its output form")
    us = _clock_us(int(m[1]), int(m[2]), int(m[3]))
    return us + _fraction_us(m[4]) if m[4] is not None else us


def _time_us(text: str) -> JsonValue:
    return _time_of_day_us(text)


def _time_ms(text: str) -> JsonValue:
    # Exact: time(0..3) values carry at most 3 fractional digits.
    return _time_of_day_us(text) // 1000


def _zoned_time(text: str) -> JsonValue:
    """timetz as Java's ``OffsetTime`` ISO form, keeping the value's own offset."""
    m = _TIME_RE.fullmatch(text)
    if m is None or m[5] is None:
        raise ValueError("not a timetz in its output form")
    _clock_us(int(m[1]), int(m[2]), int(m[3]))
    clock = text[:8]
    fraction = m[4]
    if fraction is not None:
        fraction = fraction.rstrip("0")
        if fraction:
            clock = f"{clock}.{fraction}"
    sign, hh, mm, ss = m[5], m[6], m[7] or "00", m[8]
    if hh == "00" and mm == "00" and (ss is None or ss == "00"):
        return f"{clock}Z"
    # ZoneOffset.getId(): +HH:MM, or +HH:MM:SS when the seconds are not zero.
    if ss is None or ss == "00":
        return f"{clock}{sign}{hh}:{mm}"
    return f"{clock}{sign}{hh}:{mm}:{ss}"


# --- Dispatch -----------------------------------------------------------------------------

ConverterFactory: TypeAlias = Callable[[int, ValueOptions], "Converter | None"]


def _fixed(converter: Converter | None) -> ConverterFactory:
    return lambda _typmod, _options: converter


def _numeric_factory(_typmod: int, options: ValueOptions) -> Converter | None:
    if options.decimal_handling == "double":
        return _numeric_double
    return _numeric_string


def _timestamp_factory(typmod: int, _options: ValueOptions) -> Converter | None:
    # Debezium's adaptive time precision: p <= 3 -> io.debezium.time.Timestamp (ms),
    # otherwise (including "not given", typmod -1) io.debezium.time.MicroTimestamp.
    return _timestamp_ms if 0 <= typmod <= 3 else _timestamp_us


def _time_factory(typmod: int, _options: ValueOptions) -> Converter | None:
    return _time_ms if 0 <= typmod <= 3 else _time_us


def _timestamptz_factory(typmod: int, _options: ValueOptions) -> Converter | None:
    return _zoned_timestamp(typmod if 0 <= typmod <= 6 else 6)


_FACTORIES: Final[dict[int, ConverterFactory]] = {
    INT2: _fixed(int),
    INT4: _fixed(int),
    INT8: _fixed(int),
    OID: _fixed(int),
    FLOAT4: _fixed(_float),
    FLOAT8: _fixed(_float),
    BOOL: _fixed(_bool),
    NUMERIC: _numeric_factory,
    BYTEA: _fixed(_bytea),
    DATE: _fixed(_date),
    TIMESTAMP: _timestamp_factory,
    TIMESTAMPTZ: _timestamptz_factory,
    TIME: _time_factory,
    TIMETZ: _fixed(_zoned_time),
}


def converter_for(type_oid: int, type_modifier: int, options: ValueOptions) -> Converter | None:
    """The function turning this column's text values into JSON values.

    Called once per column when a Relation arrives, never per value.

    Args:
        type_oid: ``pg_type.oid`` of the column (Relation message).
        type_modifier: ``atttypmod``; -1 when the type has none.
        options: the connector's value options.

    Returns:
        A converter, or ``None`` when the text itself is the JSON value (text types, json,
        uuid and, for now, every type without a mapping), so the caller skips a call.
        A converter raises ``ValueError`` (or ``LookupError``/``ArithmeticError``) on
        text that is not PostgreSQL's output for the type, and ``ConversionError`` when
        the value has no exact JSON form under ``options``; callers add the column context.
    """
    factory = _FACTORIES.get(type_oid)
    if factory is None:
        return None
    return factory(type_modifier, options)


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

    __slots__ = ("_columns", "_pairs", "_table", "_unchanged_toast", "names")

    def __init__(
        self,
        columns: tuple[Column, ...],
        options: ValueOptions,
        *,
        table: str | None = None,
        unchanged_toast: JsonValue = UNAVAILABLE_VALUE_PLACEHOLDER,
    ) -> None:
        self._columns = columns
        self._table = table
        self._unchanged_toast = unchanged_toast
        self.names: tuple[str, ...] = tuple(c.name for c in columns)
        self._pairs: tuple[tuple[str, Converter | None], ...] = tuple(
            (c.name, converter_for(c.type_oid, c.type_modifier, options)) for c in columns
        )

    def convert(self, values: TupleData) -> dict[str, JsonValue]:
        """One row as a dict in column order.

        Raises:
            ConversionError: a value is not valid output of its type, has no exact JSON
                form, or is in binary form; ``table``, ``column`` and ``type_name`` are set.
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
            raise self._failure(len(row), values[len(row)], exc) from exc
        return row

    def _failure(self, index: int, value: object, exc: Exception) -> ConversionError:
        column = self._columns[index]
        name = type_name(column.type_oid)
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
