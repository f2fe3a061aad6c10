"""JSON value of an event -> PostgreSQL input text (cdc.replay.values), no server.

The round-trip properties generate a value, print it as PostgreSQL's output function does
(a test-side model, written apart from both converters), convert it forward
(``converter_for``), through JSON bytes as Kafka carries it, and back. Where the inverse
writes PostgreSQL's canonical text it must be byte-identical; where it writes another
input form of the same value (ISO 8601 ``T``/``Z`` timestamps, the ISO interval form,
Python's float repr), the property says how the two denote the same value. The real
server's reading is tests/integration/test_replay_values.py.
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Mapping
from datetime import date
from decimal import Context, Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc.errors import CdcError, ReplayValueError
from cdc.protocol import values
from cdc.protocol.typeinfo import Attribute, JsonValue, TypeInfo
from cdc.protocol.values import ValueOptions, converter_for
from cdc.replay.values import text_converter_for

DEFAULT = ValueOptions()
TEXT_FALLBACK = ValueOptions(on_conversion_error="text")
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
US_PER_DAY = 86_400_000_000
# PostgreSQL's ranges: date 4714-11-24 BC .. 5874897-12-31, timestamp .. 294276-12-31.
FIRST_DAY = -2440588
LAST_DAY = 2145042905
FIRST_US = FIRST_DAY * US_PER_DAY
LAST_US = 9224318015999999999
INT2_RANGE = st.integers(-(2**15), 2**15 - 1)
INT4_RANGE = st.integers(-(2**31), 2**31 - 1)
INT8_RANGE = st.integers(-(2**63), 2**63 - 1)


def forward(
    oid: int,
    text: str,
    typmod: int = -1,
    options: ValueOptions = DEFAULT,
    types: Mapping[int, TypeInfo | None] | None = None,
) -> JsonValue:
    """The daemon's JSON value of ``text``, after a trip through JSON bytes."""
    converter = converter_for(oid, typmod, options, types=types.get if types else None)
    value = text if converter is None else converter(text)
    parsed: JsonValue = orjson.loads(orjson.dumps(value))
    return parsed


def inverse(
    oid: int,
    value: JsonValue,
    typmod: int = -1,
    options: ValueOptions = DEFAULT,
    types: Mapping[int, TypeInfo | None] | None = None,
) -> str | None:
    return text_converter_for(oid, typmod, options, types=types, column="c")(value)


def round_trip(
    oid: int,
    text: str,
    typmod: int = -1,
    options: ValueOptions = DEFAULT,
    types: Mapping[int, TypeInfo | None] | None = None,
) -> str | None:
    return inverse(oid, forward(oid, text, typmod, options, types), typmod, options, types)


def numeric_typmod(precision: int, scale: int) -> int:
    return ((precision << 16) | (scale & 0x7FF)) + 4


# --- Test-side models of PostgreSQL's output functions -----------------------------------


def pg_date_parts(days: int) -> tuple[str, bool]:
    """(``YYYY-MM-DD``, BC) of days since 1970-01-01: whole 400-year cycles (146097 days,
    the Gregorian calendar's period) are moved into Python's range and back."""
    ordinal = days + EPOCH_ORDINAL
    cycles = 0
    if ordinal < 1:
        cycles = -((1 - ordinal) // 146097 + 1)
    elif ordinal > date.max.toordinal():
        cycles = (ordinal - date.max.toordinal()) // 146097 + 1
    day = date.fromordinal(ordinal - cycles * 146097)
    year = day.year + 400 * cycles
    if year <= 0:
        return f"{1 - year:04d}-{day.month:02d}-{day.day:02d}", True
    return f"{year:04d}-{day.month:02d}-{day.day:02d}", False


def pg_date(days: int) -> str:
    text, bc = pg_date_parts(days)
    return f"{text} BC" if bc else text


def pg_clock(us_of_day: int) -> str:
    seconds, micros = divmod(us_of_day, 1_000_000)
    text = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return text + (f".{micros:06d}".rstrip("0") if micros else "")


def pg_timestamp(us: int, zone: str = "") -> str:
    days, us_of_day = divmod(us, US_PER_DAY)
    text, bc = pg_date_parts(days)
    return f"{text} {pg_clock(us_of_day)}{zone}" + (" BC" if bc else "")


def c_div(a: int, b: int) -> int:
    """C's integer division (truncating), as PostgreSQL computes interval fields."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def pg_interval(months: int, days: int, us: int) -> str:
    """interval_out with IntervalStyle=postgres (EncodeInterval, datetime.c)."""
    years = c_div(months, 12)
    fields = ((years, "year"), (months - years * 12, "mon"), (days, "day"))
    out = ""
    is_zero, is_before = True, False
    for value, unit in fields:
        if value:
            plus = "+" if is_before and value > 0 else ""
            out += f"{'' if is_zero else ' '}{plus}{value} {unit}{'' if value == 1 else 's'}"
            is_before, is_zero = value < 0, False
    hours = c_div(us, 3_600_000_000)
    rest = abs(us) - abs(hours) * 3_600_000_000
    if is_zero or us:
        sign = "-" if us < 0 else ("+" if is_before else "")
        minutes, rest = divmod(rest, 60_000_000)
        seconds, micros = divmod(rest, 1_000_000)
        fraction = f".{micros:06d}".rstrip("0") if micros else ""
        clock = f"{abs(hours):02d}:{minutes:02d}:{seconds:02d}{fraction}"
        out += f"{'' if is_zero else ' '}{sign}{clock}"
    return out


_ISO_INTERVAL = re.compile(r"P(-?\d+)Y(-?\d+)M(-?\d+)DT(-?\d+)H(-?\d+)M(-?)(\d+)(?:\.(\d{1,6}))?S")


def iso_interval_fields(text: str) -> tuple[int, int, int]:
    """(months, days, µs) that interval_in reads from the ISO 8601 designator form: a
    year is 12 months, hours, minutes and seconds are time (PostgreSQL docs 8.5.4)."""
    m = _ISO_INTERVAL.fullmatch(text)
    assert m is not None, text
    seconds_us = int(m[7]) * 1_000_000 + int((m[8] or "").ljust(6, "0"))
    time = (int(m[4]) * 60 + int(m[5])) * 60_000_000 + (-seconds_us if m[6] else seconds_us)
    return int(m[1]) * 12 + int(m[2]), int(m[3]), time


def iso_zoned_as_pg(text: str) -> str:
    """PostgreSQL's text of the instant an ISO ``YYYY-MM-DDTHH:MM:SS[.f]Z`` names; the
    inverse sends those as they are, and timestamptz_in reads them so."""
    m = re.fullmatch(r"(\d{4})-(\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.(\d+))?Z", text)
    assert m is not None, text
    fraction = (m[4] or "").rstrip("0")
    return f"{m[1]}-{m[2]} {m[3]}{'.' + fraction if fraction else ''}+00"


def pg_array(items: list[Any], quote: bool = True) -> str:
    """array_out of nested lists of str/None (elements quoted as array_out does)."""
    parts = []
    for item in items:
        if isinstance(item, list):
            parts.append(pg_array(item))
        elif item is None:
            parts.append("NULL")
        elif quote and (
            item == ""
            or item.upper() == "NULL"
            or any(c in item for c in '"\\{},')
            or any(c in " \t\n\r\v\f" for c in item)
        ):
            parts.append('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            parts.append(item)
    return "{" + ",".join(parts) + "}"


def shortest_float4(bits: int) -> tuple[float, str]:
    """A float4 value and its float4out text (the fewest digits that strtof reads back)."""
    value: float = struct.unpack("<f", struct.pack("<I", bits))[0]
    if value != value:
        return value, "NaN"
    if abs(value) == float("inf"):
        return value, "Infinity" if value > 0 else "-Infinity"
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        try:
            if struct.unpack("<f", struct.pack("<f", float(text)))[0] == value:
                return value, text
        except OverflowError:  # rounded past the largest float4
            continue
    raise AssertionError("float4 needs at most 9 digits")


# --- Integers, floats, booleans, numerics ---------------------------------------------------


@given(INT8_RANGE)
def test_int8_round_trips(number: int) -> None:
    assert str(number) == round_trip(values.INT8, str(number))


@pytest.mark.parametrize(
    ("oid", "strategy"),
    [
        (values.INT2, INT2_RANGE),
        (values.INT4, INT4_RANGE),
        (values.OID, st.integers(0, 2**32 - 1)),
        (values.XID, st.integers(0, 2**32 - 1)),
        (values.CID, st.integers(0, 2**32 - 1)),
        (values.XID8, st.integers(0, 2**64 - 1)),
    ],
)
@given(data=st.data())
def test_integer_types_round_trip(oid: int, strategy: Any, data: st.DataObject) -> None:
    text = str(data.draw(strategy))
    assert text == round_trip(oid, text)


def test_a_boolean_is_not_an_integer() -> None:
    with pytest.raises(ReplayValueError, match="not an integer"):
        inverse(values.INT4, True)


@given(st.floats())
def test_float8_reads_back_as_the_same_double(number: float) -> None:
    """repr is the shortest text of the double; float8in (like float()) is correctly
    rounded, so it reads the very same bits."""
    text = repr(number) if number == number and abs(number) != float("inf") else None
    if text is None:
        text = "NaN" if number != number else ("Infinity" if number > 0 else "-Infinity")
        assert text == round_trip(values.FLOAT8, text)
        return
    back = round_trip(values.FLOAT8, text)
    assert back is not None
    assert struct.pack("<d", float(back)) == struct.pack("<d", number)


@given(st.integers(0, 2**32 - 1))
def test_float4_text_is_the_same_number(bits: int) -> None:
    """float4out's shortest digits become a double, whose repr is numerically the same
    decimal (two decimals of at most 9 digits cannot both round to one double), so
    float4in reads the same float4."""
    value, text = shortest_float4(bits)
    back = round_trip(values.FLOAT4, text)
    assert back is not None
    if value != value or abs(value) == float("inf"):
        assert back == text
    else:
        assert Decimal(back) == Decimal(text)


@pytest.mark.parametrize(("text", "json"), [("t", True), ("f", False)])
def test_boolean(text: str, json: bool) -> None:
    assert forward(values.BOOL, text) is json
    assert text == inverse(values.BOOL, json)


decimals = st.tuples(st.integers(-(10**40), 10**40), st.integers(0, 20))


def pg_numeric(unscaled: int, scale: int) -> str:
    return f"{Decimal(unscaled).scaleb(-scale, context=Context(prec=100)):f}"


@given(decimals)
def test_numeric_string_round_trips_with_its_scale(parts: tuple[int, int]) -> None:
    text = pg_numeric(*parts)
    assert text == round_trip(values.NUMERIC, text)
    assert text == round_trip(values.NUMERIC, text, numeric_typmod(60, parts[1]))


@given(decimals)
def test_numeric_precise_round_trips(parts: tuple[int, int]) -> None:
    precise = ValueOptions(decimal_handling="precise")
    text = pg_numeric(*parts)
    assert text == round_trip(values.NUMERIC, text, -1, precise)
    assert text == round_trip(values.NUMERIC, text, numeric_typmod(60, parts[1]), precise)


@pytest.mark.parametrize(
    ("text", "json"),
    [("NaN", "NAN"), ("Infinity", "POSITIVE_INFINITY"), ("-Infinity", "NEGATIVE_INFINITY")],
)
def test_numeric_specials(text: str, json: str) -> None:
    assert json == forward(values.NUMERIC, text)
    assert text == inverse(values.NUMERIC, json)


def test_numeric_negative_scale_multiplies_back() -> None:
    precise = ValueOptions(decimal_handling="precise")
    typmod = numeric_typmod(4, -2)
    assert round_trip(values.NUMERIC, "1200", typmod, precise) == "1200"
    assert round_trip(values.NUMERIC, "-999900", typmod, precise) == "-999900"


def test_precise_nan_is_its_text_fallback_only_under_on_conversion_error_text() -> None:
    fallback = ValueOptions(decimal_handling="precise", on_conversion_error="text")
    stop = ValueOptions(decimal_handling="precise")
    typmod = numeric_typmod(5, 2)
    assert inverse(values.NUMERIC, "NaN", typmod, fallback) == "NaN"
    assert inverse(values.NUMERIC, "NaN", -1, fallback) == "NaN"
    with pytest.raises(ReplayValueError, match="decimal_handling: precise"):
        inverse(values.NUMERIC, "NaN", typmod, stop)
    with pytest.raises(ReplayValueError, match="VariableScaleDecimal"):
        inverse(values.NUMERIC, "NaN", -1, stop)


@pytest.mark.parametrize(
    ("text", "decimal"),
    [("$1,234.56", "1234.56"), ("-$92,233,720,368,547,758.08", "-92233720368547758.08")],
)
@pytest.mark.parametrize("handling", ["string", "precise"])
def test_money_is_written_as_a_plain_decimal(text: str, decimal: str, handling: Any) -> None:
    """money_in reads ``-1234.56`` under lc_monetary=C; the output's ``$`` and
    thousands separators are not needed."""
    assert decimal == round_trip(values.MONEY, text, -1, ValueOptions(decimal_handling=handling))


# --- Text types, bytea, bits -----------------------------------------------------------------


@given(st.text())
def test_text_passes_through(text: str) -> None:
    for oid in (values.TEXT, values.VARCHAR, values.BPCHAR, values.NAME, values.JSON):
        assert text == round_trip(oid, text)


@pytest.mark.parametrize("handling", ["base64", "base64-url-safe", "hex"])
@given(raw=st.binary())
def test_bytea_round_trips(handling: Any, raw: bytes) -> None:
    text = "\\x" + raw.hex()
    assert text == round_trip(values.BYTEA, text, -1, ValueOptions(binary_handling=handling))


@pytest.mark.parametrize(
    ("handling", "value"),
    [("base64", "AP-_"), ("base64-url-safe", "AP+/"), ("base64", "AP9"), ("base64", "A P9c")],
)
def test_bytea_in_another_alphabet_or_broken_is_refused(handling: Any, value: str) -> None:
    with pytest.raises(ReplayValueError, match="binary_handling"):
        inverse(values.BYTEA, value, -1, ValueOptions(binary_handling=handling))


@given(st.text(alphabet="01", min_size=1, max_size=80))
def test_bit_strings_round_trip(bits: str) -> None:
    assert bits == round_trip(values.BIT, bits, len(bits))
    assert bits == round_trip(values.VARBIT, bits)


def test_bit1_is_a_boolean_both_ways() -> None:
    assert forward(values.BIT, "1", 1) is True
    assert inverse(values.BIT, True, 1) == "1"
    assert inverse(values.BIT, False, 1) == "0"


# --- Dates and times -----------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["adaptive", "adaptive_time_microseconds", "connect"])
@given(days=st.integers(FIRST_DAY, LAST_DAY))
def test_date_round_trips(precision: Any, days: int) -> None:
    text = pg_date(days)
    assert text == round_trip(values.DATE, text, -1, ValueOptions(time_precision=precision))


@given(st.integers(FIRST_DAY, LAST_DAY))
def test_isostring_date_round_trips(days: int) -> None:
    text = pg_date(days)
    assert text == round_trip(values.DATE, text, -1, ValueOptions(time_precision="isostring"))


@pytest.mark.parametrize("oid", [values.DATE, values.TIMESTAMP])
@pytest.mark.parametrize("precision", ["adaptive", "connect", "isostring"])
@pytest.mark.parametrize("special", ["infinity", "-infinity"])
def test_infinities_stay(oid: int, precision: Any, special: str) -> None:
    assert special == round_trip(oid, special, -1, ValueOptions(time_precision=precision))


@pytest.mark.parametrize(
    ("typmod", "precision", "unit"),
    [
        (-1, "adaptive", 1),
        (6, "adaptive", 1),
        (3, "adaptive", 1000),
        (0, "adaptive_time_microseconds", 1_000_000),
        (-1, "adaptive_time_microseconds", 1),
        (-1, "connect", 1000),
    ],
)
@given(us=st.integers(FIRST_US, LAST_US))
def test_timestamp_round_trips(typmod: int, precision: Any, unit: int, us: int) -> None:
    us -= us % unit  # a timestamp(p) holds p digits; connect holds only exact ms
    text = pg_timestamp(us)
    assert text == round_trip(
        values.TIMESTAMP, text, typmod, ValueOptions(time_precision=precision)
    )


@given(st.integers(FIRST_US, LAST_US))
def test_isostring_timestamp_is_the_same_text_with_a_t(us: int) -> None:
    """Years 1..9999 go out as ``2024-03-01T12:34:56.5`` (ISO 8601, which timestamp_in
    reads); BC and 5-digit years are rewritten to PostgreSQL's own form."""
    text = pg_timestamp(us)
    back = round_trip(values.TIMESTAMP, text, -1, ValueOptions(time_precision="isostring"))
    assert back is not None
    assert text == back.replace("T", " ")


@pytest.mark.parametrize("typmod", [-1, 0, 3, 6])
@given(us=st.integers(FIRST_US, LAST_US))
def test_timestamptz_names_the_same_instant(typmod: int, us: int) -> None:
    if typmod >= 0:
        us -= us % 10 ** (6 - typmod)
    text = pg_timestamp(us, "+00")
    back = round_trip(values.TIMESTAMPTZ, text, typmod)
    assert back is not None
    assert text == (iso_zoned_as_pg(back) if back.endswith("Z") else back)


def test_timestamptz_years_java_cannot_print_plainly() -> None:
    assert (
        inverse(values.TIMESTAMPTZ, "0000-12-31T23:59:59.500000Z") == "0001-12-31 23:59:59.5+00 BC"
    )
    assert inverse(values.TIMESTAMPTZ, "-0043-03-15T12:00:00Z") == "0044-03-15 12:00:00+00 BC"
    assert inverse(values.TIMESTAMPTZ, "+10000-01-01T00:00:00Z") == "10000-01-01 00:00:00+00"
    assert inverse(values.TIMESTAMPTZ, "-infinity") == "-infinity"


@pytest.mark.parametrize(
    ("typmod", "precision", "unit"),
    [
        (-1, "adaptive", 1),
        (3, "adaptive", 1000),
        (0, "adaptive", 1_000_000),
        (3, "adaptive_time_microseconds", 1000),
        (-1, "connect", 1000),
        (-1, "isostring", 1),
    ],
)
@given(us=st.integers(0, US_PER_DAY))
def test_time_round_trips(typmod: int, precision: Any, unit: int, us: int) -> None:
    us -= us % unit
    text = pg_clock(us)
    assert text == round_trip(values.TIME, text, typmod, ValueOptions(time_precision=precision))


def pg_offset(seconds_east: int) -> str:
    sign = "-" if seconds_east < 0 else "+"
    hours, rest = divmod(abs(seconds_east), 3600)
    minutes, seconds = divmod(rest, 60)
    if seconds:
        return f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{sign}{hours:02d}:{minutes:02d}" if minutes else f"{sign}{hours:02d}"


def offset_seconds(text: str) -> int:
    if text == "Z":
        return 0
    parts = [int(p) for p in text[1:].split(":")] + [0, 0]
    seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
    return -seconds if text[0] == "-" else seconds


@given(st.integers(0, US_PER_DAY), st.integers(-(16 * 3600 - 1), 16 * 3600 - 1))
def test_timetz_keeps_clock_and_offset(us: int, offset: int) -> None:
    """The inverse writes ``Z`` as ``+00`` and ``+05:00`` as Java printed it: the same
    offset as PostgreSQL's ``+05``."""
    text = pg_clock(us) + pg_offset(offset)
    back = round_trip(values.TIMETZ, text)
    assert back is not None
    m = re.fullmatch(r"([0-9:.]+)([+-].*)", back)
    assert m is not None
    assert (pg_clock(us), offset) == (m[1], offset_seconds(m[2]))
    assert back.endswith("+00") or not back.endswith("Z")


@given(INT4_RANGE, INT4_RANGE, INT8_RANGE)
def test_interval_string_denotes_the_same_months_days_and_time(
    months: int, days: int, us: int
) -> None:
    """The event's ``P..Y..M..DT..H..M..S`` is sent as it is: interval_in reads it
    exactly (PostgreSQL 15+), even where the postgres style's minimum does not read."""
    text = pg_interval(months, days, us)
    back = round_trip(values.INTERVAL, text)
    assert back is not None
    assert (months, days, us) == iso_interval_fields(back)


def test_interval_model_matches_postgres_output() -> None:
    assert pg_interval(14, 3, 14_706_500_000) == "1 year 2 mons 3 days 04:05:06.5"
    assert pg_interval(0, -1, 7_384_000_001) == "-1 days +02:03:04.000001"
    assert pg_interval(-(2**31), 0, 0) == "-178956970 years -8 mons"
    assert pg_interval(0, 0, 0) == "00:00:00"
    assert pg_interval(0, 0, -(2**63)) == "-2562047788:00:54.775808"


# --- Arrays and composites ------------------------------------------------------------------

elements = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.sampled_from(['"', "\\", "{", "}", ",", " x", "NULL", "null", "", "a b", "\t", "é ✓"]),
)


@st.composite
def arrays(draw: st.DrawFn, element: st.SearchStrategy[Any]) -> list[Any]:
    shape = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))

    def build(level: int) -> list[Any]:
        if level == len(shape):
            return draw(element)
        return [build(level + 1) for _ in range(shape[level])]

    return build(0)


@given(arrays(elements))
def test_text_arrays_round_trip_with_array_outs_quoting(items: list[Any]) -> None:
    text = pg_array(items)
    assert text == round_trip(1009, text)  # text[]


@given(arrays(st.one_of(st.none(), INT4_RANGE.map(str))), st.integers(-5, 5))
def test_int_arrays_with_lower_bounds_round_trip(items: list[Any], lower: int) -> None:
    dims = []
    level: Any = items
    while isinstance(level, list):
        dims.append(f"[{lower}:{lower + len(level) - 1}]")
        level = level[0]
    text = pg_array(items, quote=False)
    if lower != 1:
        text = "".join(dims) + "=" + text
    assert text == round_trip(1007, text)  # int4[]


def test_empty_arrays_and_box_delimiter() -> None:
    assert round_trip(1007, "{}") == "{}"
    assert round_trip(1020, "{(1,1),(0,0);(3,3),(2,2)}") == "{(1,1),(0,0);(3,3),(2,2)}"


@given(arrays(st.one_of(st.none(), st.integers(FIRST_DAY, LAST_DAY).map(pg_date))))
def test_date_arrays_quote_bc_dates(items: list[Any]) -> None:
    text = pg_array(items)
    assert text == round_trip(1182, text)  # date[]


PAIR = TypeInfo(
    oid=90001,
    namespace="public",
    name="pair",
    kind="c",
    attributes=(
        Attribute("a", values.INT4, -1),
        Attribute("b", values.TEXT, -1),
        Attribute("c", 1007, -1),  # int4[]
    ),
)
PAIRS = TypeInfo(
    oid=90002, namespace="public", name="_pair", kind="b", category="A", element_oid=90001
)
TYPES: dict[int, TypeInfo | None] = {PAIR.oid: PAIR, PAIRS.oid: PAIRS}


def pg_record(fields: list[str | None]) -> str:
    """record_out: NULL empty, quoted when empty or holding ``"\\(),`` or space."""
    parts = []
    for field in fields:
        if field is None:
            parts.append("")
        elif (
            field == ""
            or any(c in field for c in '"\\(),')
            or any(c in " \t\n\r\v\f" for c in field)
        ):
            parts.append('"' + field.replace('"', '""').replace("\\", "\\\\") + '"')
        else:
            parts.append(field)
    return "(" + ",".join(parts) + ")"


records = st.tuples(
    st.one_of(st.none(), INT4_RANGE.map(str)),
    elements,
    st.one_of(st.none(), st.lists(INT4_RANGE.map(str), max_size=3).map(pg_array)),
).map(list)


@given(records)
def test_composites_round_trip_with_record_outs_quoting(fields: list[str | None]) -> None:
    text = pg_record(fields)
    assert text == round_trip(PAIR.oid, text, types=TYPES)


@given(st.lists(st.one_of(st.none(), records.map(pg_record)), max_size=3))
def test_arrays_of_composites_round_trip(items: list[Any]) -> None:
    text = pg_array(items)
    assert text == round_trip(PAIRS.oid, text, types=TYPES)


def test_a_composite_missing_an_attribute_is_refused() -> None:
    with pytest.raises(ReplayValueError, match=r"attributes \(a, b, c\)") as caught:
        inverse(PAIR.oid, {"a": 1, "b": "x"}, types=TYPES)
    assert caught.value.column == "c"
    assert caught.value.type_name == "public.pair"


def test_domains_are_their_base_type_with_the_domains_modifier() -> None:
    price = TypeInfo(
        oid=90003,
        namespace="public",
        name="price",
        kind="d",
        base_oid=values.NUMERIC,
        base_modifier=numeric_typmod(7, 2),
    )
    precise = ValueOptions(decimal_handling="precise")
    types: dict[int, TypeInfo | None] = {price.oid: price}
    assert round_trip(price.oid, "12.50", -1, precise, types) == "12.50"


# --- Extension and geometric types ----------------------------------------------------------

HSTORE = TypeInfo(oid=90010, namespace="public", name="hstore", kind="b", extension="hstore")
GEOMETRY = TypeInfo(oid=90011, namespace="public", name="geometry", kind="b", extension="postgis")
VECTOR = TypeInfo(oid=90012, namespace="public", name="vector", kind="b", extension="vector")
VECTORS = TypeInfo(
    oid=90013, namespace="public", name="_vector", kind="b", category="A", element_oid=90012
)
EXTENSIONS: dict[int, TypeInfo | None] = {t.oid: t for t in (HSTORE, GEOMETRY, VECTOR, VECTORS)}


def pg_hstore(pairs: list[tuple[str, str | None]]) -> str:
    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return ", ".join(f"{quoted(k)}=>{'NULL' if v is None else quoted(v)}" for k, v in pairs)


@pytest.mark.parametrize("handling", ["json", "map"])
@given(pairs=st.dictionaries(st.text(max_size=6), st.one_of(st.none(), st.text(max_size=6))))
def test_hstore_round_trips(handling: Any, pairs: dict[str, str | None]) -> None:
    text = pg_hstore(list(pairs.items()))
    options = ValueOptions(hstore_handling=handling)
    assert text == round_trip(HSTORE.oid, text, -1, options, EXTENSIONS)


@pytest.mark.parametrize("order", ["01", "00"])
@pytest.mark.parametrize("srid", [None, 4326, 0, -1])
def test_postgis_ewkb_gets_its_srid_back(order: str, srid: int | None) -> None:
    """PostGIS prints upper-case hex EWKB, which is what goes back (its input reads both
    cases)."""
    little = order == "01"
    pack = "<" if little else ">"
    kind = 1 | (0x20000000 if srid is not None else 0)
    raw = bytes.fromhex(order) + struct.pack(pack + "I", kind)
    if srid is not None:
        raw += struct.pack(pack + "i", srid)
    raw += struct.pack(pack + "dd", 1.0, 2.0)
    text = raw.hex().upper()
    assert text == round_trip(GEOMETRY.oid, text, types=EXTENSIONS)


@given(st.lists(st.integers(0, 2**32 - 1).map(shortest_float4), min_size=1, max_size=5))
def test_vectors_read_back_as_the_same_float4s(items: list[tuple[float, str]]) -> None:
    finite = [text for value, text in items if value == value and abs(value) != float("inf")]
    if not finite:
        return
    text = "[" + ",".join(finite) + "]"
    back = round_trip(VECTOR.oid, text, types=EXTENSIONS)
    assert back is not None
    assert [Decimal(t) for t in back[1:-1].split(",")] == [Decimal(t) for t in finite]


def test_arrays_of_vectors_tell_levels_from_elements() -> None:
    text = '{"[1,2]",NULL,"[3]"}'
    assert round_trip(VECTORS.oid, text, types=EXTENSIONS) == '{"[1.0,2.0]",NULL,[3.0]}'
    two_d = '{{"[1,2]"},{"[3,4]"}}'
    assert round_trip(VECTORS.oid, two_d, types=EXTENSIONS) == '{{"[1.0,2.0]"},{"[3.0,4.0]"}}'


@given(st.floats(), st.floats())
def test_points_read_back_as_the_same_doubles(x: float, y: float) -> None:
    def pg(number: float) -> str:
        if number != number:
            return "NaN"
        if abs(number) == float("inf"):
            return "Infinity" if number > 0 else "-Infinity"
        return repr(number)

    back = round_trip(values.POINT, f"({pg(x)},{pg(y)})")
    assert back is not None
    xs, ys = back[1:-1].split(",")
    for sent, number in ((xs, x), (ys, y)):
        assert struct.pack("<d", float(sent)) == struct.pack("<d", number) or (
            number != number and sent == "NaN"
        )


def test_point_wkb_is_debeziums() -> None:
    value = forward(values.POINT, "(1,2)")
    assert isinstance(value, dict)
    assert value["wkb"] == base64.b64encode(struct.pack("<BIdd", 1, 1, 1.0, 2.0)).decode()


# --- What the replay refuses ---------------------------------------------------------------


NUMERIC_ARRAY = 1231
INTERVAL_ARRAY = 1187


@pytest.mark.parametrize("oid", [values.NUMERIC, values.MONEY, NUMERIC_ARRAY])
def test_decimal_handling_double_is_refused_when_built(oid: int) -> None:
    with pytest.raises(ReplayValueError, match="decimal_handling: double") as caught:
        text_converter_for(oid, -1, ValueOptions(decimal_handling="double"), column="price")
    assert caught.value.column == "price"


@pytest.mark.parametrize("oid", [values.INTERVAL, INTERVAL_ARRAY])
def test_interval_handling_numeric_is_refused_when_built(oid: int) -> None:
    with pytest.raises(ReplayValueError, match="interval_handling: numeric"):
        text_converter_for(oid, -1, ValueOptions(interval_handling="numeric"))


def test_lossy_modes_leave_other_types_alone() -> None:
    lossy = ValueOptions(decimal_handling="double", interval_handling="numeric")
    assert text_converter_for(values.INT4, -1, lossy)(1) == "1"


def test_a_refused_composite_names_the_column() -> None:
    composite = TypeInfo(
        oid=90020,
        namespace="public",
        name="priced",
        kind="c",
        attributes=(Attribute("p", values.NUMERIC, -1),),
    )
    with pytest.raises(ReplayValueError, match="decimal_handling: double") as caught:
        text_converter_for(
            composite.oid,
            -1,
            ValueOptions(decimal_handling="double"),
            types={composite.oid: composite},
            column="item",
        )
    assert caught.value.column == "item"


def test_an_array_of_a_domain_over_an_array_is_refused() -> None:
    ints = TypeInfo(oid=90030, namespace="public", name="ints", kind="d", base_oid=1007)
    arrays_of = TypeInfo(
        oid=90031, namespace="public", name="_ints", kind="b", category="A", element_oid=90030
    )
    with pytest.raises(ReplayValueError, match="domain over an array"):
        text_converter_for(arrays_of.oid, -1, DEFAULT, types={90030: ints, 90031: arrays_of})


def test_a_type_that_contains_itself_is_refused() -> None:
    loop = TypeInfo(oid=90040, namespace="public", name="loop", kind="d", base_oid=90040)
    with pytest.raises(ReplayValueError, match="deeper than 32"):
        text_converter_for(loop.oid, -1, DEFAULT, types={loop.oid: loop})


def test_replay_value_error_is_a_cdc_error_that_is_not_retried() -> None:
    assert issubclass(ReplayValueError, CdcError)
    assert not issubclass(ReplayValueError, ValueError)
    assert ReplayValueError("x").retryable is False


# --- What events the converters accept -----------------------------------------------------


@pytest.mark.parametrize(
    ("oid", "value"),
    [
        (values.INT8, "12"),
        (values.FLOAT8, "1.5"),
        (values.BOOL, "t"),
        (values.DATE, "2024-01-01"),
        (values.TIMESTAMP, "2024-01-01 00:00:00"),
        (values.TIME, "00:00:00.000001"),
        (1007, "{1,2}"),
        (values.POINT, "(1,2)"),
    ],
)
def test_a_string_where_the_mode_writes_none_is_the_text_fallback(oid: int, value: str) -> None:
    """Under on_conversion_error: text such a string is the value's PostgreSQL text (the
    daemon's fallback); under stop the connector never writes it."""
    assert value == inverse(oid, value, -1, TEXT_FALLBACK)
    with pytest.raises(ReplayValueError, match="values: settings"):
        inverse(oid, value, -1, DEFAULT)


def test_array_elements_never_fall_back() -> None:
    """The daemon falls back for a whole column, never for one element."""
    with pytest.raises(ReplayValueError):
        inverse(1007, ["1"], -1, TEXT_FALLBACK)


@pytest.mark.parametrize("options", [DEFAULT, TEXT_FALLBACK])
@pytest.mark.parametrize(
    "oid",
    [
        values.INT4,
        values.FLOAT4,
        values.BOOL,
        values.NUMERIC,
        values.MONEY,
        values.TEXT,
        values.BYTEA,
        values.DATE,
        values.TIME,
        values.TIMETZ,
        values.TIMESTAMP,
        values.TIMESTAMPTZ,
        values.INTERVAL,
        values.POINT,
        1007,
        PAIR.oid,
        HSTORE.oid,
        GEOMETRY.oid,
        VECTOR.oid,
    ],
)
def test_null_is_none(options: ValueOptions, oid: int) -> None:
    types = {**TYPES, **EXTENSIONS}
    assert text_converter_for(oid, -1, options, types=types)(None) is None


def test_a_type_missing_from_the_definitions_is_text_and_says_so() -> None:
    converter = text_converter_for(99999, -1, DEFAULT, types={}, column="x")
    assert converter("(1,2)") == "(1,2)"
    with pytest.raises(ReplayValueError, match="not in the replay's type definitions"):
        converter({"a": 1})


def test_errors_say_which_setting_and_column() -> None:
    with pytest.raises(ReplayValueError) as caught:
        text_converter_for(values.NUMERIC, -1, DEFAULT, column="total")(1.5)
    message = str(caught.value)
    assert "column total (numeric)" in message
    assert "decimal_handling: string" in message
    assert caught.value.type_name == "numeric"
