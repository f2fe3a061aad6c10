"""The compiled core (``cdc_native``, built from native/) equals the Python reference.

``decode_tuple`` must equal ``pgoutput._read_tuple_py`` on every input it accepts and
refuse (IndexError/ValueError) every input the Python reader rejects (and the decoder's
reader, native or not, raises the Python reader's exact exception); ``RowEncoder.encode``
must equal ``orjson.dumps(RowConverter.convert(values))`` (row and key) whenever it does
not raise ``Unsupported``, and must not raise it for PostgreSQL's own output of each
supported kind. Without the module the native tests are skipped, except under CI=true,
where they fail: CI must prove the compiled path.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from types import ModuleType

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdc import native
from cdc.envelope import EnvelopeEncoder, TableEncoder, TxContext
from cdc.errors import ProtocolError
from cdc.protocol import pgoutput
from cdc.protocol.messages import (
    UNCHANGED_TOAST,
    Column,
    Delete,
    Insert,
    Relation,
    ReplicaIdentity,
    TupleData,
    TupleValue,
    Update,
)
from cdc.protocol.values import UNAVAILABLE_VALUE_PLACEHOLDER, RowConverter, ValueOptions
from tests.unit.pgoutput_encoder import encode_tuple

EVERY_CONTROL = "".join(chr(i) for i in range(0x20))
AWKWARD = EVERY_CONTROL + "\"\\/\x7f\u2028\u2029é€😀 a'b"


def _module() -> ModuleType:
    try:
        return importlib.import_module("cdc_native")
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "cdc_native is not built: CI must test the compiled path (scripts/bootstrap)"
            )
        pytest.skip("cdc_native is not built (scripts/bootstrap builds native/ with cargo)")


@pytest.fixture(scope="module")
def mod() -> ModuleType:
    return _module()


# --- loading -----------------------------------------------------------------------------


def test_active_unless_disabled_or_missing() -> None:
    """``ACTIVE`` says whether the module loaded and CDC_NATIVE=0 was not set."""
    try:
        importlib.import_module("cdc_native")
        built = True
    except ImportError:
        built = False
    assert (built and not native.DISABLED_BY_ENV) == native.ACTIVE
    assert native.native_core_active() is native.ACTIVE
    assert native.native_core_status().startswith("native" if native.ACTIVE else "python")
    assert (pgoutput._read_tuple is pgoutput._read_tuple_native) == native.ACTIVE


def test_cdc_native_0_forces_python_path() -> None:
    env = dict(os.environ, CDC_NATIVE="0")
    out = subprocess.run(
        [sys.executable, "-c", "import cdc.native as n; print(n.ACTIVE, n.native_core_status())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False python (CDC_NATIVE=0)"


def test_ci_has_the_native_core() -> None:
    """CI builds native/ (scripts/bootstrap); a missing module there is a failure."""
    _module()


# --- decode_tuple --------------------------------------------------------------------------

values_st = st.lists(
    st.one_of(
        st.text(),
        st.sampled_from([AWKWARD, "", "x" * 300]),
        st.none(),
        st.just(UNCHANGED_TOAST),
        st.binary(),
    ),
    max_size=12,
)


def _outcome(read: Callable[..., object], *args: object) -> object:
    """What a reader returns, or (exception type, message) for what it raises."""
    try:
        return read(*args)
    except Exception as exc:  # noqa: BLE001 - every failure is compared
        return (type(exc), str(exc))


def _both(mod: ModuleType, data: bytes, pos: int) -> None:
    """Native and Python readers agree: same result, or both refuse; the wrapper the
    decoder uses then gives the Python exception itself."""
    expected = _outcome(pgoutput._read_tuple_py, data, pos)
    actual = _outcome(mod.decode_tuple, data, pos, UNCHANGED_TOAST)
    if isinstance(expected, tuple) and isinstance(expected[0], type):
        assert isinstance(actual, tuple)
        assert actual[0] in (IndexError, ValueError, UnicodeDecodeError)
    else:
        assert actual == expected
    assert _outcome(pgoutput._read_tuple, data, pos) == expected


@settings(max_examples=400)
@given(values=values_st, prefix=st.binary(max_size=5), suffix=st.binary(max_size=5))
def test_decode_tuple_equals_python(values: list[TupleValue], prefix: bytes, suffix: bytes) -> None:
    mod = _module()
    data = prefix + encode_tuple(tuple(values)) + suffix
    result = mod.decode_tuple(data, len(prefix), UNCHANGED_TOAST)
    assert result == pgoutput._read_tuple_py(data, len(prefix))
    assert result[0] == tuple(values)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(values=values_st)
def test_decode_tuple_every_prefix(values: list[TupleValue]) -> None:
    mod = _module()
    data = encode_tuple(tuple(values))
    for end in range(len(data)):
        _both(mod, data[:end], 0)


@settings(max_examples=500)
@given(data=st.binary(max_size=40), pos=st.integers(0, 45))
def test_decode_tuple_garbage(data: bytes, pos: int) -> None:
    _both(_module(), data, pos)


@settings(max_examples=300)
@given(
    ncols=st.integers(0, 4),
    body=st.lists(
        st.tuples(st.sampled_from(b"tnub?\x00"), st.integers(0, 6), st.binary(max_size=6)),
        max_size=5,
    ),
)
def test_decode_tuple_structured_garbage(ncols: int, body: list[tuple[int, int, bytes]]) -> None:
    """Kinds, lengths and bytes that almost fit: bad UTF-8, short values, unknown kinds."""
    data = struct.pack(">H", ncols)
    for kind, length, raw in body:
        data += bytes([kind])
        if kind in b"tb":
            data += struct.pack(">I", length) + raw
    _both(_module(), data, 0)


def test_decode_unknown_kind_is_the_python_protocol_error(mod: ModuleType) -> None:
    data = struct.pack(">H", 2) + b"n" + b"x"
    with pytest.raises(ProtocolError) as caught:
        pgoutput._read_tuple(data, 0)
    assert str(caught.value).startswith("unknown TupleData column kind b'x' in column 2")
    assert caught.value.offset == 3


def test_decode_bad_utf8_message(mod: ModuleType) -> None:
    data = struct.pack(">H", 1) + b"t" + struct.pack(">I", 2) + b"\xc3("
    assert _outcome(mod.decode_tuple, data, 0, UNCHANGED_TOAST) == _outcome(b"\xc3(".decode)


# --- RowEncoder ------------------------------------------------------------------------------


def _digits(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(str)


JUNK = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            *("", " ", "-", "-0", "007", "+5", " 5", "5 ", "1_000", "٣", "1e3", "0x1f", "t"),
            *("f", "NaN", "Infinity", "-Infinity", "infinity", "-infinity", "\ud800", AWKWARD),
        ]
    ),
)
INTS = st.one_of(
    st.integers(-(2**63), 2**64 - 1).map(str),
    st.sampled_from([str(-(2**63)), str(2**64 - 1), str(-(2**63) - 1), str(2**64), "0", "9" * 25]),
    st.integers(-(2**70), 2**70).map(str),
)
BOOLS = st.sampled_from(["t", "f"])
NUMERICS = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "0", "-0.00", "1.50"]),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
)
TEXTS = st.one_of(st.text(), st.sampled_from([AWKWARD, EVERY_CONTROL, "\x7f", "\u2028"]))


@st.composite
def dates(draw: st.DrawFn, *, valid: bool = True) -> str:
    year = draw(st.one_of(st.integers(1, 9999), st.integers(-4713, 0), st.integers(10000, 294276)))
    month = draw(st.integers(1, 12) if valid else st.integers(0, 13))
    day = draw(st.integers(1, 28) if valid else st.integers(0, 32))
    if draw(st.booleans()) and valid and month != 2:
        day = draw(st.integers(28, 30 if month in (4, 6, 9, 11) else 31))
    if valid and month == 2 and day == 28 and draw(st.booleans()):
        year = draw(st.sampled_from([2000, 2024, 1900, 2100, 0, -4, -100, -400]))
        day = 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    if year >= 1:
        return f"{year:04d}-{month:02d}-{day:02d}"
    return f"{1 - year:04d}-{month:02d}-{day:02d} BC"


@st.composite
def clocks(draw: st.DrawFn, *, valid: bool = True) -> str:
    hour = draw(st.integers(0, 23) if valid else st.integers(0, 25))
    minute = draw(st.integers(0, 59) if valid else st.integers(0, 61))
    second = draw(st.integers(0, 59) if valid else st.integers(0, 61))
    if valid and draw(st.integers(0, 20)) == 0:
        hour, minute, second = 24, 0, 0
    text = f"{hour:02d}:{minute:02d}:{second:02d}"
    digits = draw(st.integers(0, 6 if valid else 7))
    if digits:
        text += "." + draw(st.text("0123456789", min_size=digits, max_size=digits))
    return text


OFFSETS = st.one_of(
    st.just("+00"),
    st.sampled_from(["+05:30", "-03:30", "+05:45:15", "-00:00:01", "+14", "-12", "+99:99:99"]),
)


@st.composite
def timestamps(draw: st.DrawFn, *, zone: bool, valid: bool = True) -> str:
    day = draw(dates(valid=valid))
    bc = day.endswith(" BC")
    text = f"{day.removesuffix(' BC')} {draw(clocks(valid=valid))}"
    if zone:
        text += draw(OFFSETS) if draw(st.integers(0, 3)) == 0 or bc else "+00"
    return text + (" BC" if bc else "")


def _type(oid: int, typmod: int = -1) -> tuple[int, int]:
    return (oid, typmod)


# (type oid, typmod) -> values PostgreSQL prints for it (the native path must accept
# them all) and other texts (it may refuse them, never differ).
KINDS: dict[tuple[int, int], tuple[st.SearchStrategy[str], st.SearchStrategy[str]]] = {
    (21, -1): (_digits(-(2**15), 2**15 - 1), JUNK),
    (23, -1): (_digits(-(2**31), 2**31 - 1), JUNK),
    (20, -1): (_digits(-(2**63), 2**63 - 1), INTS),
    (26, -1): (_digits(0, 2**32 - 1), INTS),
    (5069, -1): (_digits(0, 2**64 - 1), INTS),
    (16, -1): (BOOLS, JUNK),
    (25, -1): (TEXTS, JUNK),
    (1043, 14): (TEXTS, JUNK),
    (1042, 9): (TEXTS, JUNK),
    (2950, -1): (st.uuids().map(str), JUNK),
    (3802, -1): (TEXTS, JUNK),
    (1700, -1): (NUMERICS, JUNK),
    (1700, ((12 << 16) | 2) + 4): (NUMERICS, JUNK),
    (1082, -1): (dates(), st.one_of(dates(valid=False), JUNK)),
    (1114, -1): (timestamps(zone=False), st.one_of(timestamps(zone=True, valid=False), JUNK)),
    (1114, 3): (timestamps(zone=False), st.one_of(timestamps(zone=False, valid=False), JUNK)),
    (1083, -1): (clocks(), st.one_of(clocks(valid=False), JUNK)),
    (1083, 2): (clocks(), st.one_of(clocks(valid=False), JUNK)),
    **{
        (1184, typmod): (
            timestamps(zone=True),
            st.one_of(timestamps(zone=True, valid=False), timestamps(zone=False), JUNK),
        )
        for typmod in (-1, 0, 1, 2, 3, 4, 5, 6)
    },
}
# Types whose converter the native encoder calls (kind 100): float, money, bytea, bit,
# interval, timetz, point, arrays.
PY_VALUES = st.sampled_from(
    [
        *("1.5", "-0", "NaN", "Infinity", "-Infinity", "1e+308", "-$1,234.56", "\\x00ff"),
        *("1", "0", "1 year 2 mons 3 days 04:05:06.5", "-00:00:01", "11:08:31.7+05:30"),
        *("(1.5,-2)", "{1,2,NULL}", '{"a b","c\\"d",NULL}', "{}", "{{1,2},{3,4}}"),
    ]
)
KINDS.update(
    {
        (oid, -1): (st.one_of(st.floats().map(repr), PY_VALUES), st.one_of(PY_VALUES, JUNK))
        for oid in (700, 701, 790, 17, 1560, 1186, 1266, 600, 1007, 1009, 1231, 1185)
    }
)
TYPES = sorted(KINDS)
PYTHON_KIND = 100


def _converter(columns: tuple[Column, ...]) -> RowConverter:
    return RowConverter(columns, ValueOptions(), table="public.t")


def _encoder(
    mod: ModuleType, rows: RowConverter, columns: tuple[Column, ...], keys: list[int]
) -> object:
    kinds = native.column_kinds(columns, rows.converters)
    return mod.RowEncoder(
        kinds,
        [c.name for c in columns],
        keys,
        orjson.dumps(UNAVAILABLE_VALUE_PLACEHOLDER),
        UNCHANGED_TOAST,
        [f if k == PYTHON_KIND else None for k, f in zip(kinds, rows.converters, strict=True)],
        orjson.dumps,
    )


def _expected(
    rows: RowConverter, columns: tuple[Column, ...], keys: list[int], values: TupleData
) -> tuple[bytes, bytes] | None:
    try:
        row = rows.convert(values)
        return orjson.dumps(row), orjson.dumps(
            {columns[k].name: row[columns[k].name] for k in keys}
        )
    except Exception:  # noqa: BLE001 - any Python failure: native must refuse the row
        return None


@st.composite
def tables(draw: st.DrawFn) -> tuple[tuple[Column, ...], list[int], TupleData, bool]:
    """A table of supported kinds, one row of it, and whether the row is all valid output."""
    types = draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=8))
    names = draw(
        st.lists(
            st.one_of(st.text(min_size=1, max_size=8), st.just(AWKWARD)),
            min_size=len(types),
            max_size=len(types),
            unique=True,
        )
    )
    columns = tuple(
        Column(0, name, oid, typmod) for name, (oid, typmod) in zip(names, types, strict=True)
    )
    keys = draw(st.lists(st.integers(0, len(columns) - 1), unique=True, max_size=3))
    valid = draw(st.booleans())
    values: list[TupleValue] = []
    for oid_typmod in types:
        good, other = KINDS[oid_typmod]
        choice = draw(st.integers(0, 9))
        if choice == 0:
            values.append(None)
        elif choice == 1:
            values.append(UNCHANGED_TOAST)
        elif valid or choice < 6:
            values.append(draw(good))
        else:
            values.append(draw(other))
    return columns, keys, tuple(values), valid


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(table=tables())
def test_row_encoder_equals_python(
    table: tuple[tuple[Column, ...], list[int], TupleData, bool],
) -> None:
    columns, keys, values, valid = table
    mod = _module()
    rows = _converter(columns)
    encoder = _encoder(mod, rows, columns, keys)
    expected = _expected(rows, columns, keys, values)
    try:
        actual = encoder.encode(values)  # type: ignore[attr-defined]
    except mod.Unsupported:
        # Valid output is never refused, except by a Python-called converter that fails
        # (the random texts of those kinds are not all valid for each type).
        assert not valid or expected is None, f"native refused PostgreSQL output {values!r}"
        return
    assert actual == expected


@pytest.mark.parametrize("oid_typmod", TYPES)
@settings(max_examples=150)
@given(data=st.data())
def test_row_encoder_each_kind(oid_typmod: tuple[int, int], data: st.DataObject) -> None:
    """Each kind alone, valid output (must be accepted) and other texts (equal or refused)."""
    mod = _module()
    oid, typmod = oid_typmod
    columns = (Column(1, "k", oid, typmod), Column(0, "v", oid, typmod))
    rows = _converter(columns)
    encoder = _encoder(mod, rows, columns, [1])
    good, other = KINDS[oid_typmod]
    value = data.draw(good)
    expected = _expected(rows, columns, [1], (value, value))
    if expected is None:  # a called converter refusing a value drawn for another type
        with pytest.raises(mod.Unsupported):
            encoder.encode((value, value))  # type: ignore[attr-defined]
    else:
        assert encoder.encode((value, value)) == expected  # type: ignore[attr-defined]
    junk = data.draw(other)
    expected = _expected(rows, columns, [1], (junk, junk))
    with contextlib.suppress(mod.Unsupported):
        assert encoder.encode((junk, junk)) == expected  # type: ignore[attr-defined]


EDGES = {
    1082: [
        "0001-01-01",
        "9999-12-31",
        "4714-11-24 BC",
        "0001-12-31 BC",
        "294276-12-31",
        "2024-02-29",
        "infinity",
        "-infinity",
    ],
    1114: [
        "0001-01-01 00:00:00",
        "4714-11-24 00:00:00 BC",
        "294276-12-31 23:59:59.999999",
        "1969-12-31 23:59:59.999",
        "2024-02-29 24:00:00",
        "infinity",
        "-infinity",
        "1970-01-01 00:00:00.000001",
    ],
    1184: [
        "2024-05-01 12:34:56.789012+00",
        "2024-05-01 12:34:56+00",
        "0044-03-15 12:00:00+00 BC",
        "10000-01-01 00:00:00+00",
        "1969-12-31 23:59:59.5+00",
        "2024-05-01 00:00:00+05:30",
        "2024-05-01 00:00:00-03:30:15",
        "0001-01-01 00:00:00+00:00:01",
        "294276-12-31 23:59:59.999999+00",
        "infinity",
        "-infinity",
    ],
    1083: ["00:00:00", "24:00:00", "23:59:59.999999", "12:00:00.5"],
}


@pytest.mark.parametrize(
    ("oid", "typmod", "text"),
    [
        (oid, typmod, text)
        for oid, texts in EDGES.items()
        for typmod in (-1, 0, 3, 6)
        for text in texts
    ],
)
def test_row_encoder_temporal_edges(mod: ModuleType, oid: int, typmod: int, text: str) -> None:
    columns = (Column(1, "v", oid, typmod),)
    rows = _converter(columns)
    encoder = _encoder(mod, rows, columns, [0])
    assert encoder.encode((text,)) == _expected(rows, columns, [0], (text,))  # type: ignore[attr-defined]


def test_row_encoder_refuses_what_python_handles(mod: ModuleType) -> None:
    """Binary values, wrong lengths and surrogates are refused (Python gives the error)."""
    columns = (Column(1, "id", 20, -1), Column(0, "t", 25, -1))
    encoder = _encoder(mod, _converter(columns), columns, [0])
    for values in (("1", b"raw"), ("1",), ("1", "x", "y"), ("1", "\ud800"), ("01", "x"), (1, "x")):
        with pytest.raises(mod.Unsupported):
            encoder.encode(values)  # type: ignore[attr-defined]


def test_kinds_follow_the_converter_not_the_type() -> None:
    """Options that pick another converter make the column a Python-converted one."""
    numeric = (Column(0, "n", 1700, -1),)
    assert native.column_kinds(numeric, RowConverter(numeric, ValueOptions()).converters) == [3]
    double = RowConverter(numeric, ValueOptions(decimal_handling="double"))
    assert native.column_kinds(numeric, double.converters) == [PYTHON_KIND]
    day = (Column(0, "d", 1082, -1),)
    iso = RowConverter(day, ValueOptions(time_precision="isostring"))
    assert native.column_kinds(day, iso.converters) == [PYTHON_KIND]
    stamp = (Column(0, "t", 1184, 3),)
    assert native.column_kinds(stamp, RowConverter(stamp, ValueOptions()).converters) == [13]


def test_no_encoder_for_repeated_names() -> None:
    """A dict would merge repeated names; the Python path keeps that behaviour."""
    twice = (Column(1, "a", 20, -1), Column(0, "a", 25, -1))
    assert native.row_encoder(twice, (int, None), [0], "x") is None


def test_encoder_checks_its_arguments(mod: ModuleType) -> None:
    with pytest.raises(ValueError, match="kind 100"):
        mod.RowEncoder([PYTHON_KIND], ["a"], [], b'"x"', UNCHANGED_TOAST, [None], orjson.dumps)
    with pytest.raises(ValueError, match="unknown column kind"):
        mod.RowEncoder([99], ["a"], [], b'"x"', UNCHANGED_TOAST)
    with pytest.raises(ValueError, match="disagree"):
        mod.RowEncoder([0], ["a"], [1], b'"x"', UNCHANGED_TOAST)


# --- TableEncoder with and without the native encoder -----------------------------------

BENCH = Relation(
    None,
    16384,
    "public",
    "t",
    ReplicaIdentity.FULL,
    (
        Column(1, "id", 20, -1),
        Column(0, "a", 23, -1),
        Column(0, "b", 25, -1),
        Column(0, "c", 1184, -1),
        Column(0, "d", 1700, ((12 << 16) | 2) + 4),
        Column(0, "e", 3802, -1),
    ),
)
TX = TxContext(xid=7, commit_lsn=100, commit_ts_us=1_700_000_000_000_000, last_commit_lsn=None)


def _table_encoders() -> tuple[TableEncoder, TableEncoder]:
    def make() -> TableEncoder:
        return EnvelopeEncoder(
            connector="c",
            database="db",
            retention_topic=lambda s, t: f"r.{s}.{t}",
            compacted_topic=lambda s, t: f"c.{s}.{t}",
            options=ValueOptions(),
            key_columns=lambda r: ["id"],
        ).table(BENCH)

    fast, slow = make(), make()
    slow._native = None
    return fast, slow


row_st = st.tuples(
    st.one_of(INTS, st.just(UNCHANGED_TOAST)),
    st.one_of(_digits(-(2**31), 2**31 - 1), st.none(), JUNK),
    st.one_of(TEXTS, st.none(), st.just(UNCHANGED_TOAST), st.binary(max_size=3)),
    st.one_of(timestamps(zone=True), st.none(), JUNK),
    st.one_of(NUMERICS, st.none()),
    st.one_of(TEXTS, st.just(UNCHANGED_TOAST)),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(old=row_st, new=row_st, old_kind=st.sampled_from([None, "K", "O"]))
def test_table_encoder_same_records(old: TupleData, new: TupleData, old_kind: str | None) -> None:
    """Insert, update (with and without an old row, key changes, TOAST) and delete give
    the same records, or the same error, on the native and the Python path."""
    _module()
    fast, slow = _table_encoders()
    assert fast._native is not None or not native.ACTIVE
    insert = Insert(None, BENCH, new)
    update = Update(None, BENCH, old_kind, None if old_kind is None else old, new)
    delete = Delete(None, BENCH, old_kind or "O", old)
    for message, method in ((insert, "insert"), (update, "update"), (delete, "delete")):
        results = [
            _outcome(getattr(e, method), message, TX, 200, 1_800_000_000_000_000)
            for e in (fast, slow)
        ]
        assert results[0] == results[1]
