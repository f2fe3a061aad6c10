"""Text value -> JSON value conversion (cdc.protocol.values)."""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc.errors import ConversionError
from cdc.protocol import temporal, values
from cdc.protocol.messages import UNCHANGED_TOAST, Column
from cdc.protocol.structured import hstore_pairs, split_record
from cdc.protocol.typeinfo import Attribute, TypeInfo
from cdc.protocol.values import (
    CONVERSION_STATS,
    UNAVAILABLE_VALUE_PLACEHOLDER,
    ConversionStats,
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
    return ((precision << 16) | (scale & 0x7FF)) + 4


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
        values.XML,
        values.VARBIT,
        869,  # inet
        3904,  # int4range
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
    assert days == temporal._days_from_civil_unchecked(day.year, day.month, day.day)
    assert (day.year, day.month, day.day) == temporal._civil_from_days(days)


@given(st.integers(min_value=-(10**9), max_value=10**9))
def test_calendar_arithmetic_round_trips_beyond_python(days: int) -> None:
    year, month, day = temporal._civil_from_days(days)
    assert days == temporal._days_from_civil(year, month, day)


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
    assert temporal._days_from_civil(10000, 2, 29) + 1 == temporal._days_from_civil(10000, 3, 1)


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
    match = temporal._TIMESTAMP_RE.fullmatch(text)
    assert match is not None
    assert convert(values.TIMESTAMP, text) == temporal._timestamp_match_us(match)


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
    match = temporal._TIMESTAMP_RE.fullmatch(text)
    assert match is not None
    for width in range(7):
        general = temporal._format_zoned_timestamp(temporal._timestamp_match_us(match), width)
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


# --- numeric and money per decimal_handling ------------------------------------------------

PRECISE = ValueOptions(decimal_handling="precise")


@pytest.mark.parametrize(
    ("text", "typmod", "expected"),
    [
        ("123.45", numeric_typmod(5, 2), "MDk="),  # 12345 = 0x3039
        ("-2.00", numeric_typmod(5, 2), "/zg="),  # -200 = 0xff38
        ("0.00", numeric_typmod(5, 2), "AA=="),  # BigInteger.ZERO.toByteArray() = [0]
        ("1.5", numeric_typmod(5, 2), "AJY="),  # rescaled to 150 = 0x0096: sign byte kept
        ("12300", numeric_typmod(3, -2), "ew=="),  # negative scale (PostgreSQL 15): 123
        ("1.50", -1, {"scale": 2, "value": "AJY="}),  # display scale kept (Debezium: 1)
        ("-0.000", -1, {"scale": 3, "value": "AA=="}),
        ("100", -1, {"scale": 0, "value": "ZA=="}),
    ],
)
def test_numeric_precise_is_connect_decimal_bytes(
    text: str, typmod: int, expected: JsonValue
) -> None:
    assert expected == convert(values.NUMERIC, text, typmod, PRECISE)


@given(st.integers(min_value=-(10**40), max_value=10**40))
def test_numeric_precise_bytes_are_java_big_integer(unscaled: int) -> None:
    encoded = convert(values.NUMERIC, str(unscaled), -1, PRECISE)
    assert isinstance(encoded, dict)
    raw = base64.b64decode(str(encoded["value"]))
    assert int.from_bytes(raw, "big", signed=True) == unscaled
    # minimal: dropping the first byte would change the value or its sign
    assert len(raw) == 1 or int.from_bytes(raw[1:], "big", signed=True) != unscaled


@pytest.mark.parametrize("special", ["NaN", "Infinity", "-Infinity"])
def test_numeric_precise_refuses_specials(special: str) -> None:
    with pytest.raises(ConversionError, match="precise"):
        convert(values.NUMERIC, special, numeric_typmod(5, 2), PRECISE)


@pytest.mark.parametrize(
    ("text", "options", "expected"),
    [
        ("$1,234.56", DEFAULT, "1234.56"),
        ("-$92,233,720,368,547,758.08", DEFAULT, "-92233720368547758.08"),
        ("$0.00", DEFAULT, "0.00"),
        ("-$0.01", DOUBLE, -0.01),
        ("$1,234.56", PRECISE, "AeJA"),
        ("-$92,233,720,368,547,758.08", PRECISE, "gAAAAAAAAAA="),
    ],
)
def test_money_is_a_decimal_of_scale_two(
    text: str, options: ValueOptions, expected: JsonValue
) -> None:
    assert expected == convert(values.MONEY, text, options=options)


@pytest.mark.parametrize("text", ["1.234,56 €", "$1234.5", "EUR 1.00"])
def test_money_outside_the_c_locale_is_refused(text: str) -> None:
    with pytest.raises(ConversionError, match="lc_monetary"):
        convert(values.MONEY, text)


# --- bytea per binary_handling, bits, oids --------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("base64", "+/+/AA=="), ("base64-url-safe", "-_-_AA=="), ("hex", "fbffbf00")],
)
def test_bytea_binary_handling(mode: str, expected: str) -> None:
    options = ValueOptions(binary_handling=mode)  # type: ignore[arg-type]
    assert expected == convert(values.BYTEA, "\\xfbffbf00", options=options)


def test_bytea_hex_mode_still_validates() -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        convert(values.BYTEA, "\\xzz", options=ValueOptions(binary_handling="hex"))


@pytest.mark.parametrize(("text", "expected"), [("1", True), ("0", False)])
def test_bit_1_is_a_boolean(text: str, expected: bool) -> None:
    assert expected is convert(values.BIT, text, 1)


@pytest.mark.parametrize("text", ["00000000", "10100000"])
def test_wider_bit_strings_keep_every_bit(text: str) -> None:
    assert text == convert(values.BIT, text, 8)
    assert text == convert(values.VARBIT, text, -1)


@pytest.mark.parametrize(
    ("type_oid", "text", "expected"),
    [(values.XID, "4294967295", 4294967295), (values.XID8, "18446744073709551615", 2**64 - 1)],
)
def test_transaction_ids_are_numbers(type_oid: int, text: str, expected: int) -> None:
    assert expected == convert(type_oid, text)


# --- point, PostGIS, pgvector, hstore ------------------------------------------------------


def test_point_is_debezium_point_struct() -> None:
    wkb = base64.b64encode(struct.pack("<BIdd", 1, 1, 1.5, -2.0)).decode()
    assert convert(values.POINT, "(1.5,-2)") == {"x": 1.5, "y": -2.0, "wkb": wkb, "srid": None}


def test_point_with_non_finite_coordinates_keeps_them_as_strings() -> None:
    point = convert(values.POINT, "(NaN,-Infinity)")
    assert isinstance(point, dict)
    assert (point["x"], point["y"]) == ("NaN", "-Infinity")


def info(name: str, kind: str = "b", **kwargs: Any) -> TypeInfo:
    return TypeInfo(oid=90000, namespace="public", name=name, kind=kind, **kwargs)  # type: ignore[arg-type]


def resolver(*infos: TypeInfo) -> Callable[[int], TypeInfo | None]:
    table = {i.oid: i for i in infos}
    return table.get


EWKB_POINT_4326 = "0101000020E6100000000000000000F03F0000000000000040"
WKB_POINT = "AQEAAAAAAAAAAADwPwAAAAAAAABA"


@pytest.mark.parametrize("name", ["geometry", "geography"])
def test_postgis_ewkb_becomes_wkb_and_srid(name: str) -> None:
    types = resolver(info(name, extension="postgis"))
    converter = converter_for(90000, -1, DEFAULT, types=types)
    assert converter is not None
    assert converter(EWKB_POINT_4326) == {"wkb": WKB_POINT, "srid": 4326}
    assert converter("0101000000000000000000F03F0000000000000040") == {
        "wkb": WKB_POINT,
        "srid": None,
    }


def test_postgis_big_endian_ewkb() -> None:
    ewkb = "0020000001000010E63FF00000000000004000000000000000"
    converter = converter_for(
        90000, -1, DEFAULT, types=resolver(info("geometry", extension="postgis"))
    )
    assert converter is not None
    expected = base64.b64encode(
        bytes.fromhex("00000000013FF00000000000004000000000000000")
    ).decode()
    assert converter(ewkb) == {"wkb": expected, "srid": 4326}


def test_pgvector_is_a_list_of_numbers() -> None:
    converter = converter_for(90000, 3, DEFAULT, types=resolver(info("vector", extension="vector")))
    assert converter is not None
    assert (converter("[1,2.5,-3e-05]"), converter("[]")) == ([1.0, 2.5, -3e-05], [])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("map", {"a": "1", "b c": None, 'q"uote': "back\\slash", "": "é"}),
        ("json", '{"a":"1","b c":null,"q\\"uote":"back\\\\slash","":"é"}'),
    ],
)
def test_hstore_handling(mode: str, expected: JsonValue) -> None:
    options = ValueOptions(hstore_handling=mode)  # type: ignore[arg-type]
    converter = converter_for(
        90000, -1, options, types=resolver(info("hstore", extension="hstore"))
    )
    assert converter is not None
    assert expected == converter('"a"=>"1", "b c"=>NULL, "q\\"uote"=>"back\\\\slash", ""=>"é"')


@pytest.mark.parametrize("text", ['"a"=>"1",', '"a"=>1', '"a"=>"1", ', "a=>b"])
def test_malformed_hstore_is_refused(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        hstore_pairs(text)


def test_hstore_of_another_extension_name_is_text() -> None:
    types = resolver(info("hstore", extension="other"))
    assert converter_for(90000, -1, DEFAULT, types=types) is None


# --- arrays ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_oid", "text", "expected"),
    [
        (1007, "{}", []),
        (1007, "{1,NULL,-3}", [1, None, -3]),
        (1007, "{{1,2,3},{4,5,6}}", [[1, 2, 3], [4, 5, 6]]),
        (1007, "{{{1}},{{2}}}", [[[1]], [[2]]]),
        (1007, "[0:2]={10,20,30}", {"lower_bounds": [0], "elements": [10, 20, 30]}),
        (1007, "[1:1][-2:-1]={{1,2}}", {"lower_bounds": [1, -2], "elements": [[1, 2]]}),
        (
            1009,
            '{"a b","c,d",NULL,"NULL","q\\"uote","back\\\\slash","{}",""}',
            ["a b", "c,d", None, "NULL", 'q"uote', "back\\slash", "{}", ""],
        ),
        (1009, '{"Grüße 𝄞"}', ["Grüße 𝄞"]),
        (1021, "{NaN,1.5,-Infinity}", ["NaN", 1.5, "-Infinity"]),
        (1000, "{t,f}", [True, False]),
        (1001, '{"\\\\x00ff",NULL}', ["AP8=", None]),
        (1187, '{"1 day",-00:00:01}', ["P0Y0M1DT0H0M0S", "P0Y0M0DT0H0M-1S"]),
        (1020, "{(1,1),(0,0);(3,3),(2,2)}", ["(1,1),(0,0)", "(3,3),(2,2)"]),
        (1185, '{"2024-03-01 12:34:56+00",infinity}', ["2024-03-01T12:34:56.000000Z", "infinity"]),
    ],
)
def test_arrays_are_nested_lists(type_oid: int, text: str, expected: JsonValue) -> None:
    assert expected == convert(type_oid, text)


def test_array_elements_use_the_column_type_modifier() -> None:
    assert convert(1231, "{1.50,NULL}", numeric_typmod(5, 2), PRECISE) == ["AJY=", None]


@pytest.mark.parametrize(
    "text", ["{1,2", "{1,,2}", "1,2}", "{1,2}x", '{"a}', "[0:1]{1,2}", "{1 2}", "{{1},2"]
)
def test_malformed_arrays_are_refused(text: str) -> None:
    with pytest.raises((ValueError, LookupError)):
        convert(1007, text)


def test_one_megabyte_quoted_array_element() -> None:
    element = '"\\,{}' * 200_000
    text = '{"' + element.replace("\\", "\\\\").replace('"', '\\"') + '"}'
    assert convert(1009, text) == [element]


@given(st.lists(st.one_of(st.none(), st.text()), max_size=8))
def test_text_arrays_round_trip(elements: list[str | None]) -> None:
    def quote(e: str | None) -> str:
        if e is None:
            return "NULL"
        return '"' + e.replace("\\", "\\\\").replace('"', '\\"') + '"'

    assert elements == convert(1009, "{" + ",".join(quote(e) for e in elements) + "}")


# --- custom types through a resolver --------------------------------------------------------

PAIR = TypeInfo(
    oid=90001,
    namespace="public",
    name="pair",
    kind="c",
    attributes=(
        Attribute("a", values.INT4, -1),
        Attribute("b", values.TEXT, -1),
        Attribute("c", 1231, numeric_typmod(5, 2)),
    ),
)
PAIR_ARRAY = TypeInfo(
    oid=90002, namespace="public", name="_pair", kind="b", category="A", element_oid=90001
)
MOOD = TypeInfo(oid=90003, namespace="public", name="mood", kind="e")
PRICE = TypeInfo(
    oid=90004, namespace="public", name="price", kind="d", base_oid=values.NUMERIC,
    base_modifier=numeric_typmod(7, 2),
)  # fmt: skip
INT_LIST = TypeInfo(oid=90005, namespace="public", name="int_list", kind="d", base_oid=1007)
RANGE = TypeInfo(oid=90006, namespace="public", name="floatrange", kind="r", range_subtype=701)
TYPES = resolver(PAIR, PAIR_ARRAY, MOOD, PRICE, INT_LIST, RANGE)


@pytest.mark.parametrize(
    ("type_oid", "text", "expected"),
    [
        (90001, '(1,"x y","{1.5,NULL}")', {"a": 1, "b": "x y", "c": ["1.5", None]}),
        (90001, '(,"",)', {"a": None, "b": "", "c": None}),
        (90001, '(-1,"q""(,)\\\\",{})', {"a": -1, "b": 'q"(,)\\', "c": []}),
        (
            90002,
            '{"(2,,)","(,\\"a\\"\\"b\\",{})"}',
            [{"a": 2, "b": None, "c": None}, {"a": None, "b": 'a"b', "c": []}],
        ),
        (90003, "happy", "happy"),
        (90004, "12.50", "12.50"),
        (90005, "[2:3]={7,8}", {"lower_bounds": [2], "elements": [7, 8]}),
        (90006, "[1.5,2)", "[1.5,2)"),
    ],
)
def test_custom_types_resolve_by_oid(type_oid: int, text: str, expected: JsonValue) -> None:
    converter = converter_for(type_oid, -1, DEFAULT, types=TYPES)
    assert expected == (text if converter is None else converter(text))


def test_domain_takes_its_base_type_modifier() -> None:
    converter = converter_for(90004, -1, PRECISE, types=TYPES)
    assert converter is not None
    assert converter("12.50") == "BOI="


@pytest.mark.parametrize("text", ["1,2,3", "(1,2)", "(1,2,3,4)", '(1,"x,3)', "(1,x"])
def test_malformed_records_are_refused(text: str) -> None:
    converter = converter_for(90001, -1, DEFAULT, types=TYPES)
    assert converter is not None
    with pytest.raises((ValueError, LookupError)):
        converter(text)


def test_record_without_attributes() -> None:
    assert split_record("()") == []


def test_a_type_unknown_to_the_resolver_keeps_its_text() -> None:
    assert converter_for(90999, -1, DEFAULT, types=TYPES) is None


def test_a_cyclic_catalog_is_refused() -> None:
    loop = TypeInfo(oid=90100, namespace="public", name="loop", kind="d", base_oid=90100)
    with pytest.raises(ConversionError, match="deeper"):
        converter_for(90100, -1, DEFAULT, types=resolver(loop))


def test_custom_type_names_appear_in_errors() -> None:
    rows = RowConverter((Column(0, "p", 90004, -1),), PRECISE, table="public.t", types=TYPES)
    with pytest.raises(ConversionError) as caught:
        rows.convert(("abc",))
    assert caught.value.type_name == "public.price"


# --- time_precision modes -------------------------------------------------------------------

MICRO = ValueOptions(time_precision="adaptive_time_microseconds")
CONNECT = ValueOptions(time_precision="connect")
ISO = ValueOptions(time_precision="isostring")


@pytest.mark.parametrize(
    ("type_oid", "text", "typmod", "options", "expected"),
    [
        (values.TIME, "11:08:31.7", 3, MICRO, 40111700000),
        (values.TIMESTAMP, "2026-11-27 11:08:31.701", 3, MICRO, 1795777711701),
        (values.DATE, "2026-11-27", -1, CONNECT, 20784),
        (values.TIME, "11:08:31.7", -1, CONNECT, 40111700),
        (values.TIME, "24:00:00", -1, CONNECT, 86400000),
        (values.TIMESTAMP, "1969-12-31 23:59:59.999", -1, CONNECT, -1),
        (values.TIMESTAMP, "infinity", -1, CONNECT, "infinity"),
        (values.DATE, "2026-11-27", -1, ISO, "2026-11-27"),
        (values.DATE, "0044-03-15 BC", -1, ISO, "-0043-03-15"),
        (values.DATE, "10000-01-01", -1, ISO, "+10000-01-01"),
        (values.DATE, "-infinity", -1, ISO, "-infinity"),
        (values.TIME, "24:00:00", -1, ISO, "24:00:00"),
        (values.TIMESTAMP, "2026-11-27 11:08:31.7", -1, ISO, "2026-11-27T11:08:31.7"),
        (values.TIMESTAMP, "0001-01-01 00:00:00.5 BC", -1, ISO, "0000-01-01T00:00:00.5"),
        (values.TIMESTAMP, "infinity", 3, ISO, "infinity"),
        (values.TIMESTAMPTZ, "2026-11-27 11:08:31+00", -1, ISO, "2026-11-27T11:08:31.000000Z"),
        (values.TIMETZ, "01:02:03+05", -1, CONNECT, "01:02:03+05:00"),
    ],
)
def test_time_precision_modes(
    type_oid: int, text: str, typmod: int, options: ValueOptions, expected: JsonValue
) -> None:
    assert expected == convert(type_oid, text, typmod, options)


@pytest.mark.parametrize(
    ("type_oid", "text"),
    [(values.TIME, "11:08:31.0001"), (values.TIMESTAMP, "2026-11-27 11:08:31.7001")],
)
def test_connect_mode_refuses_to_drop_microseconds(type_oid: int, text: str) -> None:
    with pytest.raises(ConversionError, match="sub-millisecond"):
        convert(type_oid, text, options=CONNECT)


@pytest.mark.parametrize(
    ("type_oid", "text"),
    [
        (values.DATE, "2026-02-30"),
        (values.TIMESTAMP, "2026-11-27 25:00:00"),
        (values.TIME, "23:59:60"),
    ],
)
def test_isostring_mode_still_validates(type_oid: int, text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        convert(type_oid, text, options=ISO)


# --- interval ---------------------------------------------------------------------------------

NUMERIC_IV = ValueOptions(interval_handling="numeric")


@pytest.mark.parametrize(
    ("text", "string", "numeric"),
    [
        ("00:00:00", "P0Y0M0DT0H0M0S", 0),
        ("1 year 2 mons 3 days 04:05:06.5", "P1Y2M3DT4H5M6.5S", None),
        ("-1 years -2 mons", "P-1Y-2M0DT0H0M0S", None),
        ("1 mon", "P0Y1M0DT0H0M0S", None),
        ("3 days", "P0Y0M3DT0H0M0S", 259_200_000_000),
        ("-1 days +02:03:04.000001", "P0Y0M-1DT2H3M4.000001S", -79_015_999_999),
        ("-00:00:01", "P0Y0M0DT0H0M-1S", -1_000_000),
        ("-00:00:00.5", "P0Y0M0DT0H0M-0.5S", -500_000),
        ("1 day -00:00:01", "P0Y0M1DT0H0M-1S", 86_399_000_000),
        ("2562047788:00:54.775807", "P0Y0M0DT2562047788H0M54.775807S", 2**63 - 1),
        ("-178000000 years", "P-178000000Y0M0DT0H0M0S", None),
        ("1 year", "P1Y0M0DT0H0M0S", None),
    ],
)
def test_interval_handling(text: str, string: str, numeric: int | None) -> None:
    assert string == convert(values.INTERVAL, text)
    if numeric is None:
        with pytest.raises(ConversionError, match="months"):
            convert(values.INTERVAL, text, options=NUMERIC_IV)
    else:
        assert numeric == convert(values.INTERVAL, text, options=NUMERIC_IV)


def test_interval_numeric_refuses_beyond_int64() -> None:
    with pytest.raises(ConversionError, match="int64"):
        convert(values.INTERVAL, "106751992 days", options=NUMERIC_IV)


@pytest.mark.parametrize(
    "text",
    ["", "1 day", "1", "1 days 1 days", "1 mons 1 years", "00:60:00", "1:02", "P1D", "x days"],
)
def test_malformed_interval_is_refused(text: str) -> None:
    if text == "1 day":
        assert convert(values.INTERVAL, text) == "P0Y0M1DT0H0M0S"
        return
    with pytest.raises(ValueError):  # noqa: PT011
        convert(values.INTERVAL, text)


# --- on_conversion_error ----------------------------------------------------------------------

TEXT_ON_ERROR = ValueOptions(on_conversion_error="text", interval_handling="numeric")
MIXED = (
    Column(1, "id", values.INT8, -1),
    Column(0, "iv", values.INTERVAL, -1),
    Column(0, "n", values.INT4, -1),
    Column(0, "gone", values.TEXT, -1),
    Column(0, "iv2", values.INTERVAL, -1),
)


def test_text_fallback_emits_the_text_and_counts_it() -> None:
    stats = ConversionStats()
    rows = RowConverter(MIXED, TEXT_ON_ERROR, stats=stats)
    row = rows.convert(("1", "1 mon", "x", UNCHANGED_TOAST, "1 day"))
    assert row == {
        "id": 1,
        "iv": "1 mon",
        "n": "x",
        "gone": UNAVAILABLE_VALUE_PLACEHOLDER,
        "iv2": 86_400_000_000,
    }
    assert stats.text_fallbacks == 2


def test_text_fallback_after_nulls_and_toast() -> None:
    stats = ConversionStats()
    rows = RowConverter(MIXED, TEXT_ON_ERROR, stats=stats)
    row = rows.convert(("1", "1 mon", None, None, "2 mons"))
    assert row == {"id": 1, "iv": "1 mon", "n": None, "gone": None, "iv2": "2 mons"}
    assert stats.text_fallbacks == 2


def test_text_fallback_still_refuses_binary_values() -> None:
    rows = RowConverter(MIXED, TEXT_ON_ERROR, stats=ConversionStats())
    with pytest.raises(ConversionError, match="binary") as caught:
        rows.convert(("1", "1 mon", None, b"x", None))
    assert caught.value.column == "gone"


def test_stop_is_the_default_and_names_the_column() -> None:
    rows = RowConverter(MIXED, ValueOptions(interval_handling="numeric"), table="public.t")
    with pytest.raises(ConversionError, match="interval_handling") as caught:
        rows.convert(("1", "1 mon", None, None, None))
    assert (caught.value.column, caught.value.type_name) == ("iv", "interval")


def test_default_counter_is_module_wide() -> None:
    before = CONVERSION_STATS.text_fallbacks
    RowConverter(MIXED, TEXT_ON_ERROR).convert(("1", "1 mon", None, None, None))
    assert CONVERSION_STATS.text_fallbacks == before + 1


@pytest.mark.parametrize(
    ("type_oid", "typmod", "options", "text"),
    [
        (values.NUMERIC, numeric_typmod(5, 2), PRECISE, "1.234"),  # more digits than the scale
        (values.NUMERIC, -1, PRECISE, "1e5"),
        (values.POINT, -1, DEFAULT, "1,2"),
        (values.POINT, -1, DEFAULT, "(1 2)"),
        (1009, -1, DEFAULT, '{"a"x}'),
        (values.INTERVAL, -1, DEFAULT, "01:00:00 1 day"),
    ],
)
def test_malformed_scalars_are_refused(
    type_oid: int, typmod: int, options: ValueOptions, text: str
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        convert(type_oid, text, typmod, options)


@pytest.mark.parametrize(("name", "text"), [("geometry", "0101"), ("vector", "1,2")])
def test_malformed_extension_values_are_refused(name: str, text: str) -> None:
    extension = "postgis" if name == "geometry" else "vector"
    converter = converter_for(90000, -1, DEFAULT, types=resolver(info(name, extension=extension)))
    assert converter is not None
    with pytest.raises(ValueError):  # noqa: PT011
        converter(text)


def test_malformed_record_separator() -> None:
    with pytest.raises(ValueError, match="unexpected"):
        split_record('("a"x)')


def test_text_fallback_for_several_values_after_the_first_failure() -> None:
    stats = ConversionStats()
    rows = RowConverter(MIXED, TEXT_ON_ERROR, stats=stats)
    row = rows.convert(("1", "1 mon", "x", "y", "2 mons"))
    assert row == {"id": 1, "iv": "1 mon", "n": "x", "gone": "y", "iv2": "2 mons"}
    assert stats.text_fallbacks == 3
