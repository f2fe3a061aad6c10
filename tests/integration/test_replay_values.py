"""Every type on a real server: PostgreSQL's text -> the daemon's JSON value -> JSON bytes
-> ``cdc.replay.values`` -> PostgreSQL's input function gives back exactly the text the
source printed (``SELECT $1::<type>`` under the daemon's session settings, read as the
output function's raw text: ``::text`` is not always the output function).

The golden type table of tests/integration/test_types.py is used as it is, plus a table of
more edges (extremes, arrays of every kind, nested composites, domains over domains and
composites, citext, ranges, multiranges, jsonpath, interval typmods), in every value mode
the replay accepts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest

from cdc.errors import ReplayValueError
from cdc.postgres.catalog import TypeCatalog
from cdc.postgres.source import SESSION_OPTIONS
from cdc.protocol.messages import Insert, Relation, TupleData
from cdc.protocol.pgoutput import PgoutputDecoder
from cdc.protocol.typeinfo import TypeInfo
from cdc.protocol.values import ConversionStats, RowConverter, ValueOptions
from cdc.replay.values import TextConverter, text_converter_for
from tests.integration.helpers import scratch_database
from tests.integration.test_types import ROWS, SCHEMA

EXTRA_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE DOMAIN posint2 AS posint;
CREATE DOMAIN pair_dom AS pair;
CREATE TYPE outer_t AS (p pair, ps pair[], h hstore, m mood, t text, n numeric(10,3));
CREATE TABLE extra (
    id int PRIMARY KEY,
    ts0 timestamp(0), ts6 timestamp(6), tm0 time(0), tm6 time(6), tstz3 timestamptz(3),
    ttz3 timetz(3), n_neg numeric(4,-2), n103 numeric(10,3), f4 real, f8 double precision,
    x xml, j json, jb jsonb, by bytea, t text, ci citext, iv interval, x8 xid8, ci4 cid,
    bt bit(3), d date, ts timestamp, tstz timestamptz, tm time,
    a_bit1 bit(1)[], a_vb varbit[], a_by bytea[], a_jb jsonb[], a_j json[], a_pt point[],
    a_u uuid[], a_d date[], a_ts timestamp[], a_m money[], a_ch "char"[], a_nm name[],
    a_x xml[], a_tsv tsvector[], a_hs hstore[], a_f8 float8[], a_f4 real[], a_ttz timetz[],
    a_tm time[], a_inet inet[], a_r int4range[], a_3d int[], a_bx box[], a_e mood[],
    a_c char(3)[], a_price price[], a_n numeric[], a_i8 int8[], a_ln line[], a_cidr cidr[],
    a_tstz3 timestamptz(3)[], a_n103 numeric(10,3)[], a_t text[],
    dom2 posint2, dom_pair pair_dom, o outer_t, a_o outer_t[]
);
CREATE TABLE more (
    id int PRIMARY KEY,
    a_i2 smallint[], a_tsq tsquery[], iv3 interval(3), iv_ym interval year to month,
    iv_hs interval hour to second, a_vc varchar(5)[], a_pth path[], a_pg polygon[],
    a_ci circle[], a_ls lseg[], a_mac macaddr[], a_lsn pg_lsn[], dr daterange,
    nr numrange, tsr tsrange, i8r int8range, dmr datemultirange, jp jsonpath, a_oid oid[],
    a_x8 xid8[], a_hex_tstz timestamptz[], a_iv_lb interval[], a_e2 mood[]
);
"""

EXTRA_ROWS = r"""
INSERT INTO extra VALUES (
    1, '2024-03-01 12:34:57', '0001-01-01 00:00:00', '23:59:59', '23:59:59.999999',
    '0999-06-01 00:00:00.123+00', '11:08:31.123-00:00:01', 1200, -1234567.891,
    '1e-45', '-0', '<?xml version="1.0"?><a x="1"/>', '{"a":"\u00e9\ud83d\ude00"}  ',
    '{"a": "\u00e9", "b": [1.0, 1e2]}', decode('000102037f80feff5c22', 'hex'),
    E'back\\slash "quote" {brace} (paren), comma\ttab\r\n', 'MiXeD Case',
    -- the smallest interval: interval_in cannot read its own postgres-style output
    'P-178956970Y-8M-2147483648DT-2562047788H0M-54.775808S',
    '18446744073709551615', '4294967295', B'101', '0001-01-01', '0001-01-01 00:00:00',
    '0001-01-01 00:00:00+00', '00:00:00.000001',
    '{1,0,NULL}', '{"",1,0101}', '{"\\x","\\x00ff",NULL}', '{"{\"a\": 1}","[]","\"x\""}',
    '{" {\"b\":1, \"a\":2} ","null"}', '{"(1,2)","(-0,NaN)",NULL}',
    '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{infinity,-infinity,"0044-03-15 BC",2024-02-29}',
    '{"2024-03-01 12:34:56.5","10000-01-01 00:00:00","0001-01-01 00:00:00 BC"}',
    '{-92233720368547758.08,0.00,1.5}', E'{a,"\\\\",""," ","\\""}', '{NULL,"NULL","null",""}',
    '{"<a>1</a>","a &amp; b"}', $${"'a':1A 'b'","","'x y' 'q\\\\z'"}$$,
    $${"a=>1","\"k\\\\\"=>\"v,}\"",""}$$, '{NaN,Infinity,-Infinity,-0,1e+308,5e-324}',
    '{1.17549435e-38,3.4028235e+38,-1e-45}', '{"24:00:00+15:59","00:00:00-15:59:59"}',
    '{"24:00:00","00:00:00"}', '{::1,10.0.0.1/8}', '{"[1,2)",empty,"(,)"}',
    '{{{1,2},{3,4}},{{5,6},{NULL,8}}}', '[0:1]={(1,1),(0,0);(3,3),(2,2)}',
    '[-5:-4]={happy,NULL}', '{"a","a b","   "}', '{12.50,NULL}', '{NaN,Infinity,-Infinity,1.50}',
    '{-9223372036854775808,9223372036854775807}', '{"{1,-1,0}","{0,1,0}"}', '{::/0,10.0.0.0/8}',
    '{"2024-03-01 12:34:56.789+00","0001-01-01 00:00:00+00 BC"}', '{-1234567.891,0.000}',
    '{"\\\\x","\\\\\\\"","ümlaut ✓","NULL "}',
    5, ROW(1, 'x', '{1.5}', 'infinity'),
    ROW(ROW(1, 'a "b"', '{1.5,NULL}', '-infinity')::pair,
        ARRAY[ROW(2, '', '{}', NULL)::pair, NULL, ROW(NULL, NULL, NULL, NULL)::pair],
        'k=>v, "e"=>NULL', 'ok', E'line\nbreak', 0.5),
    ARRAY[ROW(NULL, ARRAY[]::pair[], '', NULL, '(a,b)', NULL)::outer_t, NULL]
), (
    2, '4714-11-24 00:00:00 BC', '294276-12-31 23:59:59.999999', '24:00:00', '24:00:00',
    '4714-11-24 00:00:00+00 BC', '24:00:00-15:59', -999900, 0.001,
    '-3.4028235e+38', '1.7976931348623157e+308', '', ' [ 1 , 2 ] ', '[{"": null}]',
    decode('', 'hex'), '', '', '178956970 years 7 mons 2147483647 days 2562047788:00:54.775807',
    '0', '0', B'000', '5874897-12-31', '294276-12-31 23:59:59.999999',
    '294276-12-31 23:59:59.999999+00', '24:00:00',
    '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}',
    '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}',
    '{}', '{}', '{}',
    2147483647, ROW(NULL, NULL, NULL, NULL), ROW(NULL, NULL, NULL, NULL, NULL, NULL), '{}'
), (
    3, '1970-01-01 00:00:00', '1969-12-31 23:59:59.999999', '00:00:00', '00:00:00.5',
    '0001-12-31 23:59:59.999+00 BC', '00:00:00+00', 0, 0,
    '1.17549435e-38', '2.2250738585072014e-308', NULL, NULL, NULL,
    NULL, NULL, NULL, '-1 days +00:00:00.000001', NULL, NULL, NULL,
    '0044-03-15 BC', '0044-03-15 12:00:00 BC', '0001-12-31 23:59:59.5+00 BC', NULL,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL,
    NULL, NULL, NULL, NULL
);
INSERT INTO more VALUES (
    1, '{-32768,NULL,32767}', $${"'a' & 'b'","!'c'"}$$, '1 day 00:00:00.1234',
    '-1 years -2 mons', '-100:00:00.5', '{"a,b","",NULL}', '{"[(0,0),(1,1)]","((0,0))"}',
    '{"((0,0),(1,1),(1,0))"}', '{"<(0,0),1.5>"}', '{"[(0,0),(1,1)]"}', '{08:00:2b:01:02:03}',
    '{16/B374D848,0/0}', '[2024-01-01,infinity)', '(-1.50,NaN]', '["2024-01-01 00:00:00",)',
    '[-9223372036854775808,9223372036854775807)', '{[2024-01-01,2024-02-01)}',
    '$.a[*] ? (@ > 1)', '{0,4294967295}', '{0,18446744073709551615}',
    '{"10000-01-01 00:00:00+00","4714-11-24 00:00:00+00 BC",-infinity}',
    '[0:1]={"1 day","-1 years +2 mons -3 days +04:05:06.000001"}', '[2:2]={ok}'
), (
    2, '{}', '{}', '-00:00:00.001', '178956970 years 7 mons', '00:00:00', '{}', '{}', '{}',
    '{}', '{}', '{}', '{}', 'empty', 'empty', 'empty', 'empty', '{}', '$', '{}', '{}', '{}',
    '{}', '{}'
);
"""

# The modes the replay accepts (decimal_handling: double and interval_handling: numeric
# are refused, see test_lossy_modes_are_refused_when_built), each with the text fallback
# where the mode meets values it cannot represent (NaN in precise, µs in connect).
MODES: dict[str, ValueOptions] = {
    "default": ValueOptions(),
    "debezium": ValueOptions(
        decimal_handling="precise",
        binary_handling="hex",
        time_precision="adaptive_time_microseconds",
        hstore_handling="json",
        on_conversion_error="text",
    ),
    "other": ValueOptions(
        binary_handling="base64-url-safe",
        time_precision="isostring",
        hstore_handling="map",
    ),
    "connect": ValueOptions(time_precision="connect", on_conversion_error="text"),
    "precise": ValueOptions(decimal_handling="precise", on_conversion_error="text"),
}


@pytest.fixture(scope="module")
def captured(postgres_server: Any) -> Iterator[tuple[str, list[tuple[Relation, TupleData]]]]:
    """The golden and extra tables' rows as pgoutput sent them (one capture per module)."""
    with scratch_database(postgres_server, "replay_values", SCHEMA + EXTRA_SCHEMA) as (_, dsn):
        slot = dsn.rsplit("/", 1)[1]
        with psycopg.connect(dsn, autocommit=True, options=SESSION_OPTIONS) as conn:
            conn.execute(f"CREATE PUBLICATION {slot} FOR ALL TABLES")
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
            conn.execute(ROWS)
            conn.execute(EXTRA_ROWS)
            changes = conn.execute(
                "SELECT data FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL,"
                " 'proto_version', '1', 'publication_names', %s)",
                (slot, slot),
            ).fetchall()
        decoder = PgoutputDecoder(1)
        messages = [decoder.decode(bytes(data)) for (data,) in changes]
        inserts = [(m.relation, m.new) for m in messages if isinstance(m, Insert)]
        yield dsn, inserts


def sql_types(conn: psycopg.Connection[Any], relation: Relation) -> list[str]:
    """format_type of each column, in the Relation's order."""
    rows = conn.execute(
        "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
        (relation.oid,),
    ).fetchall()
    by_name = dict(rows)
    return [by_name[c.name] for c in relation.columns]


def read_back(
    conn: psycopg.Connection[Any], texts: list[str | None], names: list[str]
) -> list[str | None]:
    """What the type's output function prints for each text read by its input function.

    The raw text of the result, not ``::text``: some casts to text are not the output
    function (``true::text`` is ``'true'`` where boolout prints ``t``, ``inet::text``
    shows the netmask that inet_out leaves out).
    """
    cursor = conn.execute("SELECT " + ", ".join(f"%s::{name}" for name in names), texts)
    result = cursor.pgresult
    assert result is not None
    raw = [result.get_value(0, i) for i in range(len(names))]
    return [None if value is None else bytes(value).decode() for value in raw]


def replay_round_trip(
    conn: psycopg.Connection[Any],
    inserts: list[tuple[Relation, TupleData]],
    options: ValueOptions,
) -> tuple[list[tuple[str, str, str | None, str | None]], set[str]]:
    """(column, type, source text, text read back) of every value that differs, and the
    SQL types checked."""
    catalog = TypeCatalog(conn)
    failures: list[tuple[str, str, str | None, str | None]] = []
    checked: set[str] = set()
    shapes: dict[int, tuple[RowConverter, list[TextConverter], list[str]]] = {}
    for relation, values in inserts:
        if relation.oid not in shapes:
            types: dict[int, TypeInfo | None] = catalog.resolve(
                c.type_oid for c in relation.columns
            )
            shapes[relation.oid] = (
                RowConverter(
                    relation.columns, options, types=catalog.lookup, stats=ConversionStats()
                ),
                [
                    text_converter_for(
                        c.type_oid, c.type_modifier, options, types=types, column=c.name
                    )
                    for c in relation.columns
                ],
                sql_types(conn, relation),
            )
        forward, inverses, names = shapes[relation.oid]
        # Through JSON bytes, as the replay reads an event from Kafka.
        event = orjson.loads(orjson.dumps(forward.convert(values)))
        texts = [
            inverse(event[c.name]) for c, inverse in zip(relation.columns, inverses, strict=True)
        ]
        back = read_back(conn, texts, names)
        for column, name, source, read in zip(relation.columns, names, values, back, strict=True):
            checked.add(name)
            if source != read:
                assert source is None or isinstance(source, str)
                failures.append((column.name, name, source, read))
    return failures, checked


@pytest.mark.parametrize("mode", list(MODES))
def test_every_type_reads_back_as_the_source_text(
    captured: tuple[str, list[tuple[Relation, TupleData]]], mode: str
) -> None:
    dsn, inserts = captured
    with psycopg.connect(dsn, autocommit=True, options=SESSION_OPTIONS) as conn:
        failures, checked = replay_round_trip(conn, inserts, MODES[mode])
    assert failures == []
    assert len(checked) > 100


def test_lossy_modes_are_refused_when_built(
    captured: tuple[str, list[tuple[Relation, TupleData]]],
) -> None:
    """Every numeric, money and interval column (also inside arrays, domains and
    composites) is refused under the settings that lost the value; the others build."""
    dsn, inserts = captured
    relation = inserts[0][0]
    with psycopg.connect(dsn, autocommit=True) as conn:
        types = TypeCatalog(conn).resolve(c.type_oid for c in relation.columns)
    lossy = {"n", "n52", "m", "a_num", "dom_num", "comp", "a_comp", "iv", "a_iv"}
    for options, setting in (
        (ValueOptions(decimal_handling="double"), "decimal_handling: double"),
        (ValueOptions(interval_handling="numeric"), "interval_handling: numeric"),
    ):
        refused: dict[str, ReplayValueError] = {}
        for c in relation.columns:
            try:
                text_converter_for(c.type_oid, c.type_modifier, options, types=types, column=c.name)
            except ReplayValueError as exc:
                refused[c.name] = exc
        assert all(setting in str(exc) and exc.column == name for name, exc in refused.items())
        expected = {
            "decimal_handling: double": lossy - {"iv", "a_iv"},
            "interval_handling: numeric": {"iv", "a_iv"},
        }[setting]
        assert set(refused) == expected


def test_an_array_of_a_domain_over_an_array_is_refused(postgres_server: Any) -> None:
    schema = "CREATE DOMAIN ints AS int[]; CREATE TABLE t (x ints[]);"
    with (
        scratch_database(postgres_server, "replay_values_dia", schema) as (_, dsn),
        psycopg.connect(dsn, autocommit=True) as conn,
    ):
        row = conn.execute(
            "SELECT atttypid::int8 FROM pg_attribute WHERE attrelid = 't'::regclass"
            " AND attname = 'x'"
        ).fetchone()
        assert row is not None
        types = TypeCatalog(conn).resolve([row[0]])
    with pytest.raises(ReplayValueError, match="domain over an array"):
        text_converter_for(row[0], -1, ValueOptions(), types=types, column="x")
