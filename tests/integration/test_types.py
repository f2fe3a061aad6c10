"""Every type on a real server: pgoutput text through cdc's decoder and RowConverter
equals the reviewed golden JSON in tests/golden/, and COPY text gives the same JSON.

Regenerate the golden files with ``CDC_UPDATE_GOLDEN=1`` (then review every changed value
against PostgreSQL's and Debezium's documentation before committing them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from cdc import native
from cdc.postgres.catalog import TypeCatalog
from cdc.postgres.snapshot_reader import SnapshotReader
from cdc.postgres.source import SESSION_OPTIONS
from cdc.protocol.messages import Insert, Relation, TupleData
from cdc.protocol.pgoutput import PgoutputDecoder
from cdc.protocol.values import (
    _ARRAY_ELEMENTS,
    UNAVAILABLE_VALUE_PLACEHOLDER,
    ConversionStats,
    JsonValue,
    RowConverter,
    ValueOptions,
)
from tests.integration.helpers import scratch_database

GOLDEN_DIR = Path(__file__).parent.parent / "golden"
UPDATE = os.environ.get("CDC_UPDATE_GOLDEN") == "1"

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE DOMAIN price AS numeric(7,2);
CREATE DOMAIN int_list AS integer[];
CREATE TYPE pair AS (a integer, b text, c numeric(5,2)[], d timestamptz);
CREATE TABLE golden (
    id int PRIMARY KEY,
    i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision,
    n numeric, n52 numeric(5,2), m money, b boolean,
    t text, vc varchar(10), c char(5), nm name, ch "char", u uuid, j json, jb jsonb, x xml,
    by bytea,
    d date, tm time, tm3 time(3), ttz timetz, ts timestamp, ts3 timestamp(3),
    tstz timestamptz, tstz0 timestamptz(0), iv interval,
    a_int int[], a_text text[], a_num numeric(5,2)[], a_tstz timestamptz[], a_box box[],
    a_bool boolean[], a_iv interval[],
    e mood, a_e mood[], dom posint, dom_num price, dom_arr int_list, comp pair, a_comp pair[],
    r int4range, r_ts tstzrange, mr int4multirange,
    ip inet, cidr cidr, mac macaddr, mac8 macaddr8,
    bit1 bit(1), bit8 bit(8), vb varbit,
    tsv tsvector, tsq tsquery,
    pt point, ln line, ls lseg, bx box, pth path, pg polygon, ci circle,
    o oid, xi xid, lsn pg_lsn,
    hs hstore
);
"""

# Row 1 ordinary values, row 2 extremes, row 3 NULLs, row 4 more edges (unicode, quoting,
# leap seconds, multi-dimensional arrays and bounds).
ROWS = r"""
INSERT INTO golden VALUES (
    1, 1, 2, 3, 1.5, 0.1,
    '1.50', 123.45, '1234.56', true,
    'plain', 'varchar', 'ab', 'a_name', 'x', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    '{"b": 1,  "a": [1, "x"]}', '{"b": 1,  "a": [1, "x"]}', '<a>b</a>',
    '\x00ff5c0a',
    '2024-02-29', '11:08:31.701111', '11:08:31.7', '11:08:31.7+05:30',
    '2024-03-01 12:34:56.789012', '2024-03-01 12:34:56.789',
    '2024-03-01 12:34:56.789012+02', '2024-03-01 12:34:56+00', '1 year 2 mons 3 days 04:05:06.5',
    '{1,2,3}', '{"a b","c,d",NULL,"NULL","q\"uote","back\\slash","{brace}",""}',
    '{1.50,NULL,-2}', '{"2024-03-01 12:34:56+00",infinity}', '{(1,1),(0,0);(3,3),(2,2)}',
    '{t,f,NULL}', '{"1 day","-00:00:01"}',
    'happy', '{sad,ok}', 7, 12.5, '{4,5}',
    ROW(1, 'x y', '{1.5,NULL}', '2024-03-01 00:00:00+00'),
    ARRAY[ROW(2, '', NULL, NULL)::pair, ROW(NULL, 'q"(,)\', '{}', NULL)::pair],
    '[1,5)', '[2024-01-01 00:00:00+00,infinity)', '{[1,3),[5,7)}',
    '10.0.0.1', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05',
    B'1', B'10100000', B'101',
    'a fat cat', 'fat & rat',
    '(1.5,-2)', '{1,-1,0}', '[(0,0),(1,1)]', '(1,1),(0,0)', '[(0,0),(1,1),(2,0)]',
    '((0,0),(1,1),(1,0))', '<(0,0),1.5>',
    4294967295, '12345', '16/B374D848',
    'a=>1, "b c"=>NULL, "q\"uote"=>"back\\slash"'
), (
    2, -32768, -2147483648, -9223372036854775808, 'NaN', '-Infinity',
    'NaN', -999.99, '-92233720368547758.08', false,
    '', '', '', '', '', '00000000-0000-0000-0000-000000000000',
    'null', '"\u00e9"', '',
    '\x',
    '4714-11-24 BC', '24:00:00', '00:00:00', '00:00:00+15:59',
    '294276-12-31 23:59:59.999999', '4713-01-01 00:00:00 BC',
    'infinity', '-infinity', '-178000000 years',
    '{}', '{}', '{}', '{}', '{}',
    '{}', '{}',
    'sad', '{}', 2147483647, -99999.99, '{}',
    ROW(NULL, NULL, NULL, NULL),
    '{}',
    'empty', '(,)', '{}',
    '::1/128', '::/0', '00:00:00:00:00:00', 'ff:ff:ff:ff:ff:ff:ff:ff',
    B'0', B'00000000', B'',
    '', '!x',
    '(-1.7976931348623157e+308,5e-324)', '{0,1,0}', '[(0,0),(0,0)]', '(0,0),(0,0)', '((0,0))',
    '((0,0))', '<(0,0),0>',
    0, '0', '0/0',
    ''
), (
    4, 32767, 2147483647, 9223372036854775807, '3.4028235e+38', '1e-320',
    '-0.000', '0.01', '0.00', NULL,
    E'unicode: Grüße ✓ 𝄞 日本\ttab\nnewline', 'ümlaut', 'é', 'x', 'é',
    NULL, '[]', '{}', NULL,
    NULL,
    '5874897-12-31', '23:59:60', '23:59:59.999', '24:00:00-15:59',
    '2016-12-31 23:59:60', '0001-01-01 00:00:00.5 BC',
    '1883-11-18 12:00:00+00:53:28', '10000-01-01 00:00:00+00', '-1 days +02:03:04.000001',
    '{{1,2,3},{4,5,6}}', '[0:2]={a,b,c}', '{{1.00},{NULL}}', NULL, NULL,
    '[-1:-1][3:4]={{t,f}}', NULL,
    NULL, '{NULL}', 1, NULL, '[2:3]={7,8}',
    ROW(-1, '', '{}', 'infinity'),
    NULL,
    '(,5]', NULL, '{[1,2), [3,4)}',
    '192.168.0.1/24', '192.168.0.0/24', NULL, NULL,
    NULL, B'11111111', B'0101010101010101010101010101010101',
    $$'a':1A 'b':2$$, '!(a | b) <-> c',
    '(NaN,Infinity)', NULL, NULL, NULL, NULL,
    NULL, NULL,
    NULL, NULL, NULL,
    '"ключ"=>"значение"'
);
INSERT INTO golden (id) VALUES (3);
"""

# Option sets with a golden file each: the defaults (every value exact), Debezium's own
# choices (values without an exact form fall back to their text, counted), and the rest.
MODES: dict[str, ValueOptions] = {
    "default": ValueOptions(),
    "debezium": ValueOptions(
        decimal_handling="precise",
        binary_handling="hex",
        time_precision="adaptive_time_microseconds",
        interval_handling="numeric",
        hstore_handling="json",
        on_conversion_error="text",
    ),
    "other": ValueOptions(
        decimal_handling="double",
        binary_handling="base64-url-safe",
        time_precision="isostring",
        hstore_handling="map",
        on_conversion_error="text",
    ),
    "connect": ValueOptions(time_precision="connect", on_conversion_error="text"),
}


@pytest.fixture
def database(postgres_server: Any) -> Iterator[str]:
    with scratch_database(postgres_server, "types", SCHEMA) as (_, dsn):
        yield dsn


def execute(dsn: str, statement: str, params: Any = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement, params)


def stream(dsn: str, slot: str) -> tuple[Relation, list[TupleData]]:
    """The golden table's Relation and inserted tuples, via cdc's own decoder."""
    decoder = PgoutputDecoder(1)
    with psycopg.connect(dsn, autocommit=True, options=SESSION_OPTIONS) as conn:
        changes = conn.execute(
            "SELECT data FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL,"
            " 'proto_version', '1', 'publication_names', %s)",
            (slot, slot),
        ).fetchall()
    messages = [decoder.decode(bytes(data)) for (data,) in changes]
    relations = [m for m in messages if isinstance(m, Relation)]
    return relations[-1], [m.new for m in messages if isinstance(m, Insert)]


def capture(dsn: str, rows: str = ROWS) -> tuple[Relation, list[TupleData]]:
    slot = dsn.rsplit("/", 1)[1]
    execute(dsn, f"CREATE PUBLICATION {slot} FOR ALL TABLES")
    execute(dsn, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    execute(dsn, rows)
    return stream(dsn, slot)


def golden_bytes(rows: list[dict[str, JsonValue]]) -> bytes:
    return orjson.dumps(rows, option=orjson.OPT_INDENT_2) + b"\n"


def check_golden(name: str, rows: list[dict[str, JsonValue]]) -> None:
    path = GOLDEN_DIR / f"{name}.json"
    actual = golden_bytes(rows)
    if UPDATE:
        GOLDEN_DIR.mkdir(exist_ok=True)
        path.write_bytes(actual)
    assert path.read_bytes().decode() == actual.decode()


def test_every_type_converts_to_its_golden_json(database: str) -> None:
    relation, tuples = capture(database)
    with psycopg.connect(database, autocommit=True, options=SESSION_OPTIONS) as conn:
        catalog = TypeCatalog(conn)
        for mode, options in MODES.items():
            stats = ConversionStats()
            rows = RowConverter(
                relation.columns, options, table="public.golden", types=catalog.lookup, stats=stats
            )
            converted = [rows.convert(t) for t in tuples]
            check_golden(f"types_{mode}", converted)
            if mode == "default":
                assert stats.text_fallbacks == 0


def test_golden_json_holds_on_the_compiled_path(database: str) -> None:
    """The native RowEncoder (what TableEncoder runs when cdc_native is built) gives each
    golden row's exact bytes, and its key's, in every mode. It refuses exactly the rows
    with a text fallback (on_conversion_error: text), which take the Python path by design.
    Without the compiled core this is skipped, except under CI=true, where it fails (the
    rule of tests/unit/test_native.py).
    """
    if not native.native_core_active():
        status = native.native_core_status()
        if os.environ.get("CI") == "true":
            pytest.fail(f"the compiled core is not active ({status}): CI must test it")
        pytest.skip(f"the compiled core is not active ({status}); scripts/bootstrap builds it")
    relation, tuples = capture(database)
    key_indexes = [i for i, c in enumerate(relation.columns) if c.is_key]
    key_names = [relation.columns[i].name for i in key_indexes]
    with psycopg.connect(database, autocommit=True, options=SESSION_OPTIONS) as conn:
        catalog = TypeCatalog(conn)
        for mode, options in MODES.items():
            stats = ConversionStats()
            rows = RowConverter(relation.columns, options, types=catalog.lookup, stats=stats)
            encode = native.row_encoder(
                relation.columns, rows.converters, key_indexes, UNAVAILABLE_VALUE_PLACEHOLDER
            )
            assert encode is not None, mode
            golden = orjson.loads((GOLDEN_DIR / f"types_{mode}.json").read_bytes())
            encoded: list[int] = []
            refused: list[int] = []
            fell_back: list[int] = []
            for values, expected in zip(tuples, golden, strict=True):
                before = stats.text_fallbacks
                rows.convert(values)
                if stats.text_fallbacks != before:
                    fell_back.append(expected["id"])
                try:
                    row_json, key_json = encode(values)
                except native.NativeUnsupported:
                    refused.append(expected["id"])
                    continue
                encoded.append(expected["id"])
                assert orjson.dumps(expected) == row_json, (mode, expected["id"])
                assert orjson.dumps({k: expected[k] for k in key_names}) == key_json
            assert (mode, fell_back) == (mode, refused)
            assert encoded, mode  # not vacuous: some rows of every mode ran compiled


def test_copy_text_gives_the_same_json_as_pgoutput(database: str) -> None:
    relation, tuples = capture(database)
    reader = SnapshotReader(database, application_name="cdc:test-types")
    try:
        shape = reader.table_shape("public", "golden")
        copied = [row for batch in reader.copy_rows(shape) for row in batch]
    finally:
        reader.close()
    with psycopg.connect(database, autocommit=True, options=SESSION_OPTIONS) as conn:
        catalog = TypeCatalog(conn)
        for options in MODES.values():
            rows = RowConverter(relation.columns, options, types=catalog.lookup)
            assert sorted(golden_bytes([rows.convert(t)]) for t in tuples) == sorted(
                golden_bytes([rows.convert(t)]) for t in copied
            )


def test_one_megabyte_text_and_bytea_round_trip(database: str) -> None:
    relation, tuples = capture(
        database,
        "INSERT INTO golden (id, t, by, a_text) VALUES"
        " (5, repeat('ü', 1048576), decode(repeat('ff', 1048576), 'hex'),"
        "  ARRAY[repeat('\"\\,{}', 262144)])",
    )
    with psycopg.connect(database, autocommit=True) as conn:
        rows = RowConverter(relation.columns, ValueOptions(), types=TypeCatalog(conn).lookup)
    row = rows.convert(tuples[0])
    assert row["t"] == "ü" * 1048576
    assert row["by"] == "/" * (1048575 // 3 * 4) + "/w=="
    assert row["a_text"] == ['"\\,{}' * 262144]


def test_builtin_array_table_matches_the_catalog(database: str) -> None:
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT oid::int8, typelem::int8 FROM pg_type WHERE oid = ANY(%s)",
            (list(_ARRAY_ELEMENTS),),
        ).fetchall()
    assert dict(rows) == _ARRAY_ELEMENTS


def test_catalog_invalidate_sees_an_altered_composite(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        catalog = TypeCatalog(conn)
        row = conn.execute("SELECT 'pair'::regtype::oid::int8").fetchone()
        assert row is not None
        oid = row[0]
        before = catalog.lookup(oid)
        assert before is not None
        assert [a.name for a in before.attributes] == ["a", "b", "c", "d"]
        conn.execute("ALTER TYPE pair ADD ATTRIBUTE e text")
        assert catalog.lookup(oid) is before  # cached until told
        catalog.invalidate(oid)
        after = catalog.lookup(oid)
        assert after is not None
        assert [a.name for a in after.attributes] == ["a", "b", "c", "d", "e"]
        assert catalog.lookup(999_999_999) is None


def _extension_available(dsn: str, name: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return (
            conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = %s", (name,)
            ).fetchone()
            is not None
        )


def test_postgis_geometry_is_wkb_and_srid(database: str) -> None:
    if not _extension_available(database, "postgis"):
        pytest.skip("PostGIS is not installed on this server")
    execute(database, "CREATE EXTENSION postgis")
    execute(database, "CREATE TABLE geo (id int PRIMARY KEY, g geometry, h geography)")
    relation, tuples = capture(
        database,
        "INSERT INTO geo VALUES (1, 'SRID=4326;POINT(1 2)', 'POINT(1 2)'), (2, 'POINT(1 2)', NULL)",
    )
    with psycopg.connect(database, autocommit=True) as conn:
        rows = RowConverter(relation.columns, ValueOptions(), types=TypeCatalog(conn).lookup)
    wkb = "AQEAAAAAAAAAAADwPwAAAAAAAABA"
    assert [rows.convert(t) for t in tuples] == [
        {"id": 1, "g": {"wkb": wkb, "srid": 4326}, "h": {"wkb": wkb, "srid": 4326}},
        {"id": 2, "g": {"wkb": wkb, "srid": None}, "h": None},
    ]


def test_pgvector_is_a_list_of_numbers(database: str) -> None:
    if not _extension_available(database, "vector"):
        pytest.skip("pgvector is not installed on this server")
    execute(database, "CREATE EXTENSION vector")
    execute(database, "CREATE TABLE vec (id int PRIMARY KEY, v vector(3))")
    relation, tuples = capture(database, "INSERT INTO vec VALUES (1, '[1,2.5,-3]')")
    with psycopg.connect(database, autocommit=True) as conn:
        rows = RowConverter(relation.columns, ValueOptions(), types=TypeCatalog(conn).lookup)
    assert rows.convert(tuples[0]) == {"id": 1, "v": [1.0, 2.5, -3.0]}
