"""Text value -> JSON value conversion (cdc.protocol.values)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc.errors import ConversionError
from cdc.protocol import values
from cdc.protocol.messages import UNCHANGED_TOAST, Column
from cdc.protocol.values import (
    UNAVAILABLE_VALUE_PLACEHOLDER,
    Converter,
    JsonValue,
    RowConverter,
    ValueOptions,
    converter_for,
    type_name,
)

DEFAULT = ValueOptions()
DOUBLE = ValueOptions(decimal_handling="double")
EPOCH = datetime(1970, 1, 1)
EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)


def convert(
    type_oid: int, text: str, typmod: int = -1, options: ValueOptions = DEFAULT
) -> JsonValue:
    converter = converter_for(type_oid, typmod, options)
    return text if converter is None else converter(text)


def conv(type_oid: int, typmod: int = -1, options: ValueOptions = DEFAULT) -> Converter:
    converter = converter_for(type_oid, typmod, options)
    assert converter is not None
    return converter


def numeric_typmod(precision: int, scale: int) -> int:
    return ((precision << 16) | scale) + 4


def pg_fraction(microsecond: int) -> str:
    """PostgreSQL prints fractional seconds without trailing zeros, and none when zero."""
    return f".{microsecond:06d}".rstrip("0") if microsecond else ""


def pg_timestamp(dt: datetime) -> str:
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d} "
        f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}{pg_fraction(dt.microsecond)}"
    )


# --- integers, floats, booleans ---------------------------------------------------------


@pytest.mark.parametrize(
    ("type_oid", "text", "expected"),
    [
        (values.INT2, "-32768", -32768),
        (values.INT4, "2147483647", 2147483647),
        (values.INT8, "-9223372036854775808", -9223372036854775808),
        (values.OID, "4294967295", 4294967295),
    ],
)
def test_integer_types_become_numbers(type_oid: int, text: str, expected: int) -> None:
    assert expected == convert(type_oid, text)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_int8_round_trips(number: int) -> None:
    assert number == convert(values.INT8, str(number))


@pytest.mark.parametrize("type_oid", [values.FLOAT4, values.FLOAT8])
@pytest.mark.parametrize("special", ["NaN", "Infinity", "-Infinity"])
def test_float_specials_are_debezium_strings(type_oid: int, special: str) -> None:
    assert special == convert(type_oid, special)


@pytest.mark.parametrize(
    ("text", "expected"), [("1.5", 1.5), ("-0", -0.0), ("1e+30", 1e30), ("0.1", 0.1)]
)
def test_float_values_become_numbers(text: str, expected: float) -> None:
    assert expected == convert(values.FLOAT8, text)


def test_float_negative_zero_keeps_its_sign() -> None:
    assert str(convert(values.FLOAT8, "-0")) == "-0.0"


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float8_round_trips(number: float) -> None:
    assert number == convert(values.FLOAT8, repr(number))


@pytest.mark.parametrize(("text", "expected"), [("t", True), ("f", False)])
def test_bool(text: str, expected: bool) -> None:
    assert expected is convert(values.BOOL, text)


# --- text-like types ------------------------------------------------------------------


@pytest.mark.parametrize(
    "type_oid",
    [
        values.TEXT,
        values.VARCHAR,
        values.BPCHAR,
        values.NAME,
        values.CHAR,
        values.UUID,
        values.JSON,
        values.JSONB,
        values.INTERVAL,
        values.MONEY,
        1007,  # int4[]: arrays keep their text form for now
        16_999_999,  # an enum or any type this module does not know
    ],
)
def test_text_form_is_kept_without_a_call(type_oid: int) -> None:
    assert converter_for(type_oid, -1, DEFAULT) is None


# --- numeric ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-0.000", "-0.000"),
        ("12345678901234567890.12345678901234567890", "12345678901234567890.12345678901234567890"),
        ("1.50", "1.50"),
        ("NaN", "NAN"),
        ("Infinity", "POSITIVE_INFINITY"),
        ("-Infinity", "NEGATIVE_INFINITY"),
    ],
)
def test_numeric_string_mode_is_exact(text: str, expected: str) -> None:
    assert expected == convert(values.NUMERIC, text, numeric_typmod(40, 20))


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_numeric_string_mode_round_trips(number: Decimal) -> None:
    text = f"{number:f}"
    assert text == convert(values.NUMERIC, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.25", 1.25),
        ("-0.000", -0.0),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("-Infinity", "-Infinity"),
    ],
)
def test_numeric_double_mode(text: str, expected: JsonValue) -> None:
    assert expected == convert(values.NUMERIC, text, options=DOUBLE)


def test_numeric_double_mode_refuses_a_value_beyond_double_range() -> None:
    with pytest.raises(ConversionError, match="decimal_handling"):
        convert(values.NUMERIC, "1" + "0" * 400, options=DOUBLE)


# --- bytea -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"), [("\\x0102", "AQI="), ("\\x", ""), ("\\xff", "/w==")]
)
def test_bytea_becomes_base64(text: str, expected: str) -> None:
    assert expected == convert(values.BYTEA, text)


def test_bytea_escape_format_is_refused() -> None:
    with pytest.raises(ValueError, match="hex"):
        convert(values.BYTEA, "abc")


# --- date ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01", 0),
        ("1969-12-31", -1),
        ("2026-11-27", 20784),
        ("0001-01-01", -719162),
        ("0001-12-31 BC", -719163),  # the day before 0001-01-01
        ("0001-01-01 BC", -719528),  # astronomical year 0
        ("4714-11-24 BC", -2440588),  # Julian day 0, PostgreSQL's earliest date
        ("10000-01-01", 2932897),
        ("5874897-12-31", 2145042905),  # PostgreSQL's latest date
        ("infinity", "infinity"),
        ("-infinity", "-infinity"),
    ],
)
def test_date_is_days_since_epoch(text: str, expected: JsonValue) -> None:
    assert expected == convert(values.DATE, text)


@given(st.dates())
def test_date_matches_python(day: date) -> None:
    assert (day - date(1970, 1, 1)).days == convert(values.DATE, f"{day.year:04d}-{day:%m-%d}")


@given(st.dates())
def test_calendar_arithmetic_matches_python(day: date) -> None:
    days = (day - date(1970, 1, 1)).days
    assert days == values._days_from_civil_unchecked(day.year, day.month, day.day)
    assert (day.year, day.month, day.day) == values._civil_from_days(days)


@given(st.integers(min_value=-(10**9), max_value=10**9))
def test_calendar_arithmetic_round_trips_beyond_python(days: int) -> None:
    year, month, day = values._civil_from_days(days)
    assert days == values._days_from_civil(year, month, day)


@pytest.mark.parametrize(
    "text",
    [
        "2026-13-01",
        "2026-02-29",
        "10000-02-30",
        "10000-13-01",
        "0000-01-01",
        "00000-01-01 BC",
        "26-01-01",
        "yesterday",
    ],
)
def test_invalid_date_is_refused(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (each converter says why in its own words)
        convert(values.DATE, text)


def test_leap_day_beyond_python_range() -> None:
    assert values._days_from_civil(10000, 2, 29) + 1 == values._days_from_civil(10000, 3, 1)


# --- timestamp -------------------------------------------------------------------------


@pytest.mark.parametrize("typmod", [-1, 4, 5, 6])
def test_timestamp_micro_precision_is_epoch_microseconds(typmod: int) -> None:
    assert convert(values.TIMESTAMP, "2026-11-27 11:08:31.701111", typmod) == 1795777711701111


@pytest.mark.parametrize("typmod", [0, 1, 2, 3])
def test_timestamp_milli_precision_is_epoch_milliseconds(typmod: int) -> None:
    assert convert(values.TIMESTAMP, "2026-11-27 11:08:31.701", typmod) == 1795777711701


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01 00:00:00", 0),
        ("1969-12-31 23:59:59.5", -500_000),
        ("2026-11-27 11:08:31.7", 1795777711700000),
        ("0001-01-01 00:00:00 BC", -62167219200000000),
        ("0001-01-01 00:00:00.5 BC", -62167219199500000),
        ("4714-11-24 00:00:00 BC", -210866803200000000),
        # Past int64 microseconds (Debezium wraps to a negative number): the exact value.
        ("294276-12-31 23:59:59.999999", 9224318015999999999),
        ("infinity", "infinity"),
        ("-infinity", "-infinity"),
    ],
)
def test_timestamp_values(text: str, expected: JsonValue) -> None:
    assert expected == convert(values.TIMESTAMP, text)


@pytest.mark.parametrize("special", ["infinity", "-infinity"])
def test_timestamp_milliseconds_infinity(special: str) -> None:
    assert convert(values.TIMESTAMP, special, 0) == special


def test_timestamp_milliseconds_far_future() -> None:
    assert convert(values.TIMESTAMP, "294276-12-31 23:59:59.999", 3) == 9224318015999999


@given(st.datetimes())
def test_timestamp_matches_python(moment: datetime) -> None:
    assert (moment - EPOCH) // timedelta(microseconds=1) == convert(
        values.TIMESTAMP, pg_timestamp(moment)
    )


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_timestamp_general_parser_agrees_with_fast_path(moment: datetime) -> None:
    text = pg_timestamp(moment)
    match = values._TIMESTAMP_RE.fullmatch(text)
    assert match is not None
    assert convert(values.TIMESTAMP, text) == values._timestamp_match_us(match)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-27T11:08:31",
        "2026-11-27 11:08:31+00",
        "2026-11-27 11:60:00",
        "2026-11-27 25:00:00",
        "2026-11-27 11:08:31.1234567",
        "2026-11-27 11:08:31.",
        "2026-11-27 11:08:31.12a",
    ],
)
def test_invalid_timestamp_is_refused(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        convert(values.TIMESTAMP, text)


# --- timestamptz -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "typmod", "expected"),
    [
        ("2026-11-27 11:08:31.701111+00", -1, "2026-11-27T11:08:31.701111Z"),
        # Debezium pads to the column's precision (6 when not declared).
        ("2026-11-27 11:08:31.7+00", -1, "2026-11-27T11:08:31.700000Z"),
        ("2026-11-27 11:08:31+00", -1, "2026-11-27T11:08:31.000000Z"),
        ("2026-11-27 11:08:31.7+00", 3, "2026-11-27T11:08:31.700Z"),
        ("2026-11-27 11:08:31+00", 3, "2026-11-27T11:08:31.000Z"),
        ("2026-11-27 11:08:31+00", 0, "2026-11-27T11:08:31Z"),
        ("2026-11-27 11:08:31.7+05:30", -1, "2026-11-27T05:38:31.700000Z"),
        ("2026-11-27 00:00:00-01", -1, "2026-11-27T01:00:00.000000Z"),
        ("1883-11-18 12:00:00+00:53:28", 0, "1883-11-18T11:06:32Z"),
        ("10000-01-01 00:00:00+00", -1, "+10000-01-01T00:00:00.000000Z"),
        ("294276-12-31 23:59:59.999999+00", -1, "+294276-12-31T23:59:59.999999Z"),
        ("0001-01-01 00:00:00+00 BC", -1, "0000-01-01T00:00:00.000000Z"),
        ("4714-11-24 00:00:00+00 BC", -1, "-4713-11-24T00:00:00.000000Z"),
        ("0001-01-01 00:30:00+01", 0, "0000-12-31T23:30:00Z"),
        ("infinity", -1, "infinity"),
        ("-infinity", 3, "-infinity"),
    ],
)
def test_timestamptz_is_zoned_timestamp(text: str, typmod: int, expected: str) -> None:
    assert expected == convert(values.TIMESTAMPTZ, text, typmod)


def test_timestamptz_precision_zero_prints_a_fraction_only_if_present() -> None:
    assert convert(values.TIMESTAMPTZ, "2026-11-27 11:08:31.5+00", 0) == "2026-11-27T11:08:31.5Z"


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.builds(
            timezone,
            st.timedeltas(min_value=timedelta(hours=-15), max_value=timedelta(hours=15)).map(
                lambda d: timedelta(minutes=d // timedelta(minutes=1))
            ),
        ),
    )
)
def test_timestamptz_matches_python(moment: datetime) -> None:
    offset = moment.utcoffset()
    assert offset is not None
    minutes = offset // timedelta(minutes=1)
    sign = "-" if minutes < 0 else "+"
    hh, mm = divmod(abs(minutes), 60)
    text = f"{pg_timestamp(moment.replace(tzinfo=None))}{sign}{hh:02d}" + (
        f":{mm:02d}" if mm else ""
    )
    utc = moment.astimezone(UTC)
    expected = f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S}.{utc.microsecond:06d}Z"
    assert expected == convert(values.TIMESTAMPTZ, text)


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_timestamptz_fast_path_agrees_with_general_path(moment: datetime) -> None:
    text = pg_timestamp(moment) + "+00"
    match = values._TIMESTAMP_RE.fullmatch(text)
    assert match is not None
    for width in range(7):
        general = values._format_zoned_timestamp(values._timestamp_match_us(match), width)
        fast = convert(values.TIMESTAMPTZ, text, width)
        if len(pg_fraction(moment.microsecond)) - 1 <= width:
            assert general == fast


@pytest.mark.parametrize(
    "text", ["2026-11-27 11:08:31", "2026-11-27T11:08:31+00", "2026-11-27 11:08:31.1234567+00"]
)
def test_invalid_timestamptz_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="timestamptz"):
        convert(values.TIMESTAMPTZ, text)


# --- time and timetz ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "typmod", "expected"),
    [
        ("00:00:00", -1, 0),
        ("11:08:31.701111", -1, 40111701111),
        ("11:08:31.701111", 6, 40111701111),
        ("11:08:31.7", 4, 40111700000),
        ("24:00:00", -1, 86_400_000_000),
        ("11:08:31.7", 3, 40111700),
        ("11:08:31", 0, 40111000),
        ("24:00:00", 0, 86_400_000),
    ],
)
def test_time_is_time_of_day(text: str, typmod: int, expected: int) -> None:
    assert expected == convert(values.TIME, text, typmod)


@pytest.mark.parametrize("text", ["24:00:01", "11:60:00", "11:08:31+00", "11:08"])
def test_invalid_time_is_refused(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        convert(values.TIME, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("11:08:31.701111+00", "11:08:31.701111Z"),
        ("11:08:31.700+00", "11:08:31.7Z"),
        ("11:08:31+00", "11:08:31Z"),
        ("11:08:31.000+00", "11:08:31Z"),
        ("24:00:00+00", "24:00:00Z"),
        # The offset is kept: Debezium's "08:01:00Z" loses it and wraps the time.
        ("00:00:00+15:59", "00:00:00+15:59"),
        ("01:02:03+05", "01:02:03+05:00"),
        ("01:02:03.5-03:30:15", "01:02:03.5-03:30:15"),
        ("01:02:03-00:00:00", "01:02:03Z"),
    ],
)
def test_timetz_keeps_its_offset(text: str, expected: str) -> None:
    assert expected == convert(values.TIMETZ, text)


@pytest.mark.parametrize("text", ["11:08:31", "25:00:00+00", "11:08:31Z"])
def test_invalid_timetz_is_refused(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        convert(values.TIMETZ, text)


# --- rows ----------------------------------------------------------------------------


COLUMNS = (
    Column(1, "id", values.INT8, -1),
    Column(0, "note", values.TEXT, -1),
    Column(0, "at", values.TIMESTAMPTZ, -1),
    Column(0, "blob", values.BYTEA, -1),
)


def test_row_converter_builds_one_dict_in_column_order() -> None:
    rows = RowConverter(COLUMNS, DEFAULT, table="public.t")
    assert rows.convert(("7", "zürich ☃ 𝄞", None, "\\x")) == {
        "id": 7,
        "note": "zürich ☃ 𝄞",
        "at": None,
        "blob": "",
    }


def test_row_converter_marks_unchanged_toast_with_placeholder() -> None:
    rows = RowConverter(COLUMNS, DEFAULT)
    row = rows.convert(("7", UNCHANGED_TOAST, None, UNCHANGED_TOAST))
    assert row == {
        "id": 7,
        "note": UNAVAILABLE_VALUE_PLACEHOLDER,
        "at": None,
        "blob": UNAVAILABLE_VALUE_PLACEHOLDER,
    }


def test_row_converter_names_the_failing_column() -> None:
    rows = RowConverter(COLUMNS, DEFAULT, table="public.t")
    with pytest.raises(ConversionError) as caught:
        rows.convert(("7", "x", "not a time", None))
    error = caught.value
    assert (
        error.table,
        error.column,
        error.type_name,
    ) == ("public.t", "at", "timestamp with time zone")
    assert "public.t.at" in str(error)


def test_row_converter_refuses_binary_values() -> None:
    rows = RowConverter(COLUMNS, DEFAULT, table="public.t")
    with pytest.raises(ConversionError, match="binary") as caught:
        rows.convert(("7", b"\x00", None, None))
    assert caught.value.column == "note"


def test_row_converter_refuses_a_tuple_of_the_wrong_length() -> None:
    with pytest.raises(ConversionError, match="4 columns"):
        RowConverter(COLUMNS, DEFAULT, table="public.t").convert(("7",))


def test_row_converter_shortens_long_values_in_messages() -> None:
    rows = RowConverter((Column(0, "n", values.INT4, -1),), DEFAULT)
    with pytest.raises(ConversionError) as caught:
        rows.convert(("x" * 500,))
    assert len(str(caught.value)) < 300


def test_type_name_of_unknown_type() -> None:
    assert (type_name(values.INT8), type_name(99999)) == ("bigint", "oid 99999")
