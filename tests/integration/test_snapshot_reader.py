"""The snapshot reader on a real server: table shapes, COPY text forms, snapshots, chunks."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from cdc.errors import SourceError
from cdc.lsn import parse_lsn
from cdc.postgres.snapshot_reader import SnapshotReader, TableShape
from cdc.postgres.source import SESSION_OPTIONS
from cdc.protocol.messages import Column, Insert, LogicalMessage, Relation, ReplicaIdentity
from cdc.protocol.pgoutput import PgoutputDecoder
from tests.integration.helpers import scratch_database

INT4 = 23
INT8 = 20
TEXT = 25
NUMERIC = 1700

SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE with_pk (id bigint PRIMARY KEY, v text);
CREATE TABLE composite (tenant text, id int, v text, PRIMARY KEY (tenant, id));
CREATE TABLE by_index (code text NOT NULL, v text, id int PRIMARY KEY);
CREATE UNIQUE INDEX by_index_code ON by_index (code);
ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_code;
CREATE TABLE full_identity (id int PRIMARY KEY, v text);
ALTER TABLE full_identity REPLICA IDENTITY FULL;
CREATE TABLE no_key (v text);
CREATE TABLE dropped (id int PRIMARY KEY, gone text, kept text);
ALTER TABLE dropped DROP COLUMN gone;
CREATE TABLE generated (id int PRIMARY KEY, a int, twice int GENERATED ALWAYS AS (a * 2) STORED);
CREATE TABLE typed (id int PRIMARY KEY, amount numeric(12,2), feeling mood);
"""


@pytest.fixture
def database(postgres_server: Any) -> Iterator[str]:
    with scratch_database(postgres_server, "snap", SCHEMA) as (_, dsn):
        yield dsn


@pytest.fixture
def reader(database: str) -> Iterator[SnapshotReader]:
    snapshot_reader = SnapshotReader(database, application_name="cdc:test-snapshot")
    yield snapshot_reader
    snapshot_reader.close()


def execute(dsn: str, statement: str, params: Any = None) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement, params)


def all_rows(reader: SnapshotReader, shape: TableShape, **kwargs: Any) -> list[tuple[Any, ...]]:
    return [row for batch in reader.copy_rows(shape, **kwargs) for row in batch]


def pgoutput_inserts(dsn: str, slot: str, publication: str) -> tuple[Relation, list[Any]]:
    """The Relation and the Insert tuples pgoutput produces, decoded by cdc's decoder.

    pg_logical_slot_get_binary_changes runs the output functions in this session, so it
    gets the same session options the walsender gets from cdc.
    """
    decoder = PgoutputDecoder(1)
    with psycopg.connect(dsn, autocommit=True, options=SESSION_OPTIONS) as conn:
        changes = conn.execute(
            "SELECT data FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL,"
            " 'proto_version', '1', 'publication_names', %s)",
            (slot, publication),
        ).fetchall()
    messages = [decoder.decode(bytes(data)) for (data,) in changes]
    relations = [m for m in messages if isinstance(m, Relation)]
    inserts = [m for m in messages if isinstance(m, Insert)]
    return relations[0], [m.new for m in inserts]


def slot_name(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]  # the database's name: drop_database drops this slot


# --- table_shape ---------------------------------------------------------------------------


def columns_of(shape: TableShape) -> list[tuple[int, str, int, int]]:
    return [(c.flags, c.name, c.type_oid, c.type_modifier) for c in shape.relation.columns]


def test_shape_of_a_primary_key_table(reader: SnapshotReader, database: str) -> None:
    shape = reader.table_shape("public", "with_pk")
    with psycopg.connect(database) as conn:
        row = conn.execute("SELECT 'public.with_pk'::regclass::oid::int8").fetchone()
    assert row is not None
    assert (row[0], "public", "with_pk", None) == (
        shape.relation.oid,
        shape.relation.namespace,
        shape.relation.name,
        shape.relation.xid,
    )
    assert shape.relation.replica_identity == ReplicaIdentity.DEFAULT
    assert shape.key_columns == ("id",)
    assert columns_of(shape) == [(1, "id", INT8, -1), (0, "v", TEXT, -1)]


def test_shape_of_a_composite_primary_key_keeps_index_order(reader: SnapshotReader) -> None:
    shape = reader.table_shape("public", "composite")
    assert shape.key_columns == ("tenant", "id")
    assert columns_of(shape) == [(1, "tenant", TEXT, -1), (1, "id", INT4, -1), (0, "v", TEXT, -1)]
    assert shape.key_indexes == (0, 1)


def test_shape_under_replica_identity_index_uses_that_index(reader: SnapshotReader) -> None:
    shape = reader.table_shape("public", "by_index")
    assert shape.relation.replica_identity == ReplicaIdentity.INDEX
    assert shape.key_columns == ("code",)
    assert [c.flags for c in shape.relation.columns] == [1, 0, 0]


def test_shape_under_replica_identity_full_keys_by_the_primary_key(reader: SnapshotReader) -> None:
    shape = reader.table_shape("public", "full_identity")
    assert shape.relation.replica_identity == ReplicaIdentity.FULL
    assert shape.key_columns == ("id",)
    assert [c.flags for c in shape.relation.columns] == [1, 0]


def test_shape_of_a_table_without_key(reader: SnapshotReader) -> None:
    shape = reader.table_shape("public", "no_key")
    assert shape.key_columns == ()
    assert columns_of(shape) == [(0, "v", TEXT, -1)]


def test_shape_skips_dropped_and_generated_columns(reader: SnapshotReader) -> None:
    assert [c.name for c in reader.table_shape("public", "dropped").relation.columns] == [
        "id",
        "kept",
    ]
    assert [c.name for c in reader.table_shape("public", "generated").relation.columns] == [
        "id",
        "a",
    ]


def test_shape_carries_typmod_and_custom_type_oid(reader: SnapshotReader, database: str) -> None:
    with psycopg.connect(database) as conn:
        row = conn.execute("SELECT 'mood'::regtype::oid::int8").fetchone()
    assert row is not None
    shape = reader.table_shape("public", "typed")
    assert [
        (1, "id", INT4, -1),
        (0, "amount", NUMERIC, ((12 << 16) | 2) + 4),
        (0, "feeling", row[0], -1),
    ] == columns_of(shape)


def test_estimated_rows_is_zero_before_analyze_then_reltuples(
    reader: SnapshotReader, database: str
) -> None:
    assert reader.table_shape("public", "with_pk").estimated_rows == 0
    execute(database, "INSERT INTO with_pk SELECT g, 'x' FROM generate_series(1, 500) g")
    execute(database, "ANALYZE with_pk")
    assert reader.table_shape("public", "with_pk").estimated_rows == 500


def test_shape_equals_the_relation_pgoutput_sends(reader: SnapshotReader, database: str) -> None:
    """Except the flags under FULL (pgoutput marks every column there); none of these."""
    slot = slot_name(database)
    tables = ["with_pk", "composite", "by_index", "dropped", "generated", "typed"]
    execute(database, f"CREATE PUBLICATION {slot} FOR TABLE {', '.join(tables)}")
    execute(database, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    execute(database, "INSERT INTO with_pk VALUES (1, 'a')")
    execute(database, "INSERT INTO composite VALUES ('t', 1, 'a')")
    execute(database, "INSERT INTO by_index VALUES ('c', 'a', 1)")
    execute(database, "INSERT INTO dropped VALUES (1, 'k')")
    execute(database, "INSERT INTO generated (id, a) VALUES (1, 2)")
    execute(database, "INSERT INTO typed VALUES (1, 1.5, 'ok')")
    decoder = PgoutputDecoder(1)
    with psycopg.connect(database, autocommit=True, options=SESSION_OPTIONS) as conn:
        changes = conn.execute(
            "SELECT data FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL,"
            " 'proto_version', '1', 'publication_names', %s)",
            (slot, slot),
        ).fetchall()
    relations = {
        m.name: m
        for m in (decoder.decode(bytes(data)) for (data,) in changes)
        if isinstance(m, Relation)
    }
    assert set(tables) == set(relations)
    for table in tables:
        assert relations[table] == reader.table_shape("public", table).relation


def test_missing_table_is_named(reader: SnapshotReader) -> None:
    with pytest.raises(SourceError, match=r"public\.nope does not exist"):
        reader.table_shape("public", "nope")


# --- copy_rows -----------------------------------------------------------------------------

VALUES_TABLE = """
CREATE TABLE vals (
    id int PRIMARY KEY, t text, ts timestamptz, tsp timestamp(3), d date, b bytea, f float8,
    r real, flag boolean, n numeric(12,2), j jsonb, u uuid, ip inet, iv interval,
    arr text[], m mood, tt timetz
)
"""

VALUES_ROWS = """
INSERT INTO vals VALUES
 (1, 'plain', '2024-03-01 12:34:56.789012+02', '2024-03-01 12:34:56.789', '2024-02-29',
  '\\x00ff5c0a'::bytea, 0.1, 1.1, true, 1234567890.12, '{"a": [1, "x\\ty"]}',
  'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '10.0.0.1', '1 day 02:03:04.5',
  '{"a b","c,d",NULL}', 'happy', '11:08:31.7+05:30'),
 (2, '', NULL, NULL, NULL, ''::bytea, 'NaN', '-Infinity', false, -0.5, 'null', NULL,
  '::1/128', '-1 mons', '{}', NULL, NULL),
 (3, NULL, 'infinity', '-infinity', 'infinity', NULL, 1e300, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, 'sad', NULL),
 (4, E'\\\\N', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL),
 (5, E'tab\\there\\nnew line\\r\\\\ back\\\\slash \\b\\f\\x0b\\x01', NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (6, 'unicode: Grüße ✓ 𝄞 日本', '0001-01-01 00:00:00+00 BC', NULL, '0044-03-15 BC',
  NULL, NULL, NULL, NULL, NULL, '"\\u00e9"', NULL, NULL, NULL, NULL, NULL, NULL),
 (7, 'N', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL)
"""


def test_copy_rows_gives_exactly_the_text_pgoutput_sends(
    reader: SnapshotReader, database: str
) -> None:
    slot = slot_name(database)
    execute(database, VALUES_TABLE)
    execute(database, f"CREATE PUBLICATION {slot} FOR TABLE vals")
    execute(database, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    execute(database, VALUES_ROWS)
    relation, streamed = pgoutput_inserts(database, slot, slot)
    shape = reader.table_shape("public", "vals")
    assert relation == shape.relation
    assert streamed == all_rows(reader, shape)


def test_copy_rows_text_forms_follow_the_session_options(
    reader: SnapshotReader, database: str
) -> None:
    execute(database, VALUES_TABLE)
    execute(database, VALUES_ROWS)
    rows = {row[0]: row for row in all_rows(reader, reader.table_shape("public", "vals"))}
    assert rows["1"][2] == "2024-03-01 10:34:56.789012+00"  # UTC, ISO
    assert rows["1"][5] == "\\x00ff5c0a"  # bytea hex
    assert rows["1"][6] == "0.1"  # shortest exact float form (extra_float_digits > 0)
    assert rows["1"][8] == "t"  # the output function's form, not ::text's 'true'
    assert (rows["2"][1], rows["2"][2], rows["2"][5]) == ("", None, "\\x")  # empty vs NULL
    assert None is rows["3"][1]
    assert rows["4"][1] == "\\N"  # the two-character string, not NULL
    assert rows["5"][1] == "tab\there\nnew line\r\\ back\\slash \b\f\x0b\x01"
    assert rows["6"][1] == "unicode: Grüße ✓ 𝄞 日本"
    assert rows["7"][1] == "N"


def test_copy_rows_equals_the_text_cast_where_the_cast_uses_the_output_function(
    reader: SnapshotReader, database: str
) -> None:
    """``col::text`` is an I/O cast for these types (not for bool or inet)."""
    execute(database, VALUES_TABLE)
    execute(database, VALUES_ROWS)
    cols = ["id", "t", "ts", "tsp", "d", "b", "f", "r", "n", "j", "u", "iv", "arr", "m", "tt"]
    shape = reader.table_shape("public", "vals")
    names = [c.name for c in shape.relation.columns]
    copied = [tuple(row[names.index(c)] for c in cols) for row in all_rows(reader, shape)]
    with psycopg.connect(database, options=SESSION_OPTIONS) as conn:
        cast = conn.execute(f"SELECT {', '.join(f'{c}::text' for c in cols)} FROM vals").fetchall()
    assert sorted(cast) == sorted(copied)


def test_copy_rows_yields_bounded_batches(reader: SnapshotReader, database: str) -> None:
    execute(database, "INSERT INTO with_pk SELECT g, g::text FROM generate_series(1, 25) g")
    shape = reader.table_shape("public", "with_pk")
    batches = list(reader.copy_rows(shape, batch_rows=10))
    assert [len(b) for b in batches] == [10, 10, 5]
    assert {(str(i), str(i)) for i in range(1, 26)} == {r for b in batches for r in b}


def test_copy_rows_of_an_empty_table_yields_nothing(reader: SnapshotReader) -> None:
    assert list(reader.copy_rows(reader.table_shape("public", "with_pk"))) == []


def test_abandoned_copy_leaves_the_connection_usable(reader: SnapshotReader, database: str) -> None:
    execute(database, "INSERT INTO with_pk SELECT g, 'x' FROM generate_series(1, 50000) g")
    shape = reader.table_shape("public", "with_pk")
    batches = reader.copy_rows(shape, batch_rows=100)
    assert len(next(batches)) == 100
    batches.close()
    assert len(all_rows(reader, shape)) == 50000


def test_copy_rows_error_names_the_table(reader: SnapshotReader, database: str) -> None:
    shape = reader.table_shape("public", "with_pk")
    execute(database, "DROP TABLE with_pk")
    with pytest.raises(SourceError, match=r"reading table public\.with_pk failed"):
        list(reader.copy_rows(shape))


# --- exported snapshot -----------------------------------------------------------------------


def test_snapshot_read_sees_the_exported_state_only(reader: SnapshotReader, database: str) -> None:
    execute(database, "INSERT INTO with_pk SELECT g, 'before' FROM generate_series(1, 100) g")
    with psycopg.connect(database, autocommit=True, replication="database") as repl:
        created = repl.execute(
            f"CREATE_REPLICATION_SLOT {slot_name(database)} LOGICAL pgoutput EXPORT_SNAPSHOT"
        ).fetchone()
        assert created is not None
        snapshot_name = created[2]
        execute(database, "INSERT INTO with_pk SELECT g, 'after' FROM generate_series(101, 150) g")
        execute(database, "UPDATE with_pk SET v = 'changed' WHERE id <= 10")
        reader.begin_snapshot(snapshot_name)
        shape = reader.table_shape("public", "with_pk")
        rows = all_rows(reader, shape, batch_rows=7)
        ranges = reader.split_ranges(shape, 4)
        ranged = [row for r in ranges for row in all_rows(reader, shape, key_range=r)]
        reader.end_snapshot()
    assert sorted(rows) == sorted((str(i), "before") for i in range(1, 101))
    assert sorted(rows) == sorted(ranged)
    # after end_snapshot the reader sees the present again
    assert len(all_rows(reader, shape)) == 150


def test_a_snapshot_no_longer_exported_is_refused(reader: SnapshotReader, database: str) -> None:
    with psycopg.connect(database, autocommit=True, replication="database") as repl:
        created = repl.execute(
            f"CREATE_REPLICATION_SLOT {slot_name(database)} LOGICAL pgoutput EXPORT_SNAPSHOT"
        ).fetchone()
        assert created is not None
        repl.execute("IDENTIFY_SYSTEM")  # the next command ends the export
        with pytest.raises(SourceError, match=r"importing snapshot .* failed"):
            reader.begin_snapshot(created[2])
    # the failed import left no transaction open: a watermark runs in autocommit again
    parse_lsn(reader.emit_watermark("cdc.test", "x"))


def test_a_malformed_snapshot_name_is_refused_before_the_server(reader: SnapshotReader) -> None:
    with pytest.raises(SourceError, match="not an exported snapshot name"):
        reader.begin_snapshot("1'; DROP TABLE with_pk; --")


# --- split_ranges ----------------------------------------------------------------------------


@pytest.mark.parametrize("parts", [2, 3, 7, 64])
def test_split_ranges_cover_every_row_exactly_once(
    reader: SnapshotReader, database: str, parts: int
) -> None:
    execute(
        database,
        "INSERT INTO with_pk SELECT g * 3, 'x' FROM generate_series(-40, 40) g"
        " UNION ALL SELECT 9223372036854775807, 'max' UNION ALL SELECT -9223372036854775808, 'min'",
    )
    shape = reader.table_shape("public", "with_pk")
    ranges = reader.split_ranges(shape, parts)
    assert len(ranges) == parts
    bounds = [r for r in ranges if r is not None]
    assert len(bounds) == parts
    assert bounds[0][0] is None
    assert bounds[-1][1] is None
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))  # contiguous
    ranged = [row for r in ranges for row in all_rows(reader, shape, key_range=r)]
    assert sorted(all_rows(reader, shape)) == sorted(ranged)
    assert len(set(ranged)) == len(ranged)


def test_split_ranges_of_few_keys_makes_fewer_ranges(reader: SnapshotReader, database: str) -> None:
    execute(database, "INSERT INTO with_pk VALUES (5, 'a'), (6, 'b')")
    shape = reader.table_shape("public", "with_pk")
    assert reader.split_ranges(shape, 8) == [(None, 5), (5, None)]


def test_split_ranges_is_one_whole_table_range_otherwise(
    reader: SnapshotReader, database: str
) -> None:
    execute(database, "INSERT INTO composite VALUES ('t', 1, 'a'), ('t', 2, 'b')")
    execute(database, "INSERT INTO by_index VALUES ('c', 'a', 1), ('d', 'b', 2)")
    assert reader.split_ranges(reader.table_shape("public", "with_pk"), 4) == [None]  # empty
    assert reader.split_ranges(reader.table_shape("public", "composite"), 4) == [None]
    assert reader.split_ranges(reader.table_shape("public", "by_index"), 4) == [None]  # text
    assert reader.split_ranges(reader.table_shape("public", "no_key"), 4) == [None]
    execute(database, "INSERT INTO with_pk VALUES (1, 'a'), (2, 'b')")
    assert reader.split_ranges(reader.table_shape("public", "with_pk"), 1) == [None]


def test_a_key_range_needs_a_single_integer_key(reader: SnapshotReader) -> None:
    with pytest.raises(ValueError, match="no single integer key"):
        list(reader.copy_rows(reader.table_shape("public", "composite"), key_range=(1, 2)))


# --- read_chunk ------------------------------------------------------------------------------

CHUNKED = """
CREATE TABLE chunked (
    name text, id uuid, at timestamptz, n int, payload text,
    PRIMARY KEY (name, id, at)
);
INSERT INTO chunked
SELECT (ARRAY['a', 'b''q', 'c\\d', 'Ü', 'a b'])[1 + g % 5],
       md5((g % 13)::text)::uuid,
       timestamptz '2024-01-01 00:00:00.123456+00' + g * interval '1 hour 1.5 sec',
       g, repeat('x', g % 3)
FROM generate_series(1, 1000) g;
"""


def test_read_chunk_pages_text_uuid_timestamptz_key_in_key_order(
    reader: SnapshotReader, database: str
) -> None:
    execute(database, CHUNKED)
    shape = reader.table_shape("public", "chunked")
    got: list[tuple[Any, ...]] = []
    after: tuple[str | None, ...] | None = None
    sizes = []
    while chunk := reader.read_chunk(shape, after, 97):
        sizes.append(len(chunk))
        got.extend(chunk)
        after = reader.key_of(shape, chunk[-1])
    with psycopg.connect(database, options=SESSION_OPTIONS) as conn:
        expected = conn.execute(
            "SELECT name, id::text, at::text, n::text, payload FROM chunked c"
            " ORDER BY c.name, c.id, c.at"
        ).fetchall()
    assert len(expected) == 1000
    assert expected == got
    assert sizes == [97] * 10 + [30]


def test_read_chunk_pages_a_1000_row_composite_key_table(
    reader: SnapshotReader, database: str
) -> None:
    execute(
        database,
        "INSERT INTO composite SELECT 't' || g % 10, g, 'v' FROM generate_series(1, 1000) g",
    )
    shape = reader.table_shape("public", "composite")
    got: list[tuple[Any, ...]] = []
    after = None
    while chunk := reader.read_chunk(shape, after, 97):
        got.extend(chunk)
        after = reader.key_of(shape, chunk[-1])
    with psycopg.connect(database) as conn:
        expected = conn.execute(
            "SELECT tenant, id::text, v FROM composite c ORDER BY c.tenant, c.id"
        ).fetchall()
    assert expected == got
    assert len(set(got)) == 1000


def test_read_chunk_of_a_table_without_key_is_refused(reader: SnapshotReader) -> None:
    with pytest.raises(SourceError, match=r"public\.no_key has no primary key"):
        reader.read_chunk(reader.table_shape("public", "no_key"), None, 10)


def test_key_of_picks_the_key_columns_in_key_order(reader: SnapshotReader) -> None:
    shape = reader.table_shape("public", "by_index")
    assert reader.key_of(shape, ("c", "v", "1")) == ("c",)


def test_a_shape_with_an_unknown_key_column_is_a_bug() -> None:
    relation = Relation(None, 1, "s", "t", ReplicaIdentity.DEFAULT, (Column(0, "a", TEXT, -1),))
    with pytest.raises(ValueError, match="not columns"):
        TableShape(relation, ("b",), 0)


# --- watermarks ------------------------------------------------------------------------------


def test_emit_watermark_returns_the_lsn_of_a_message_in_the_stream(
    reader: SnapshotReader, database: str
) -> None:
    slot = slot_name(database)
    execute(database, f"CREATE PUBLICATION {slot} FOR TABLE with_pk")
    execute(database, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
    lsn = reader.emit_watermark("cdc.watermark", '{"snapshot":1,"chunk":0,"kind":"low"}')
    decoder = PgoutputDecoder(2)
    with psycopg.connect(database, autocommit=True) as conn:
        changes = conn.execute(
            "SELECT data FROM pg_logical_slot_get_binary_changes(%s, NULL, NULL,"
            " 'proto_version', '2', 'publication_names', %s, 'messages', 'true')",
            (slot, slot),
        ).fetchall()
    messages = [m for (d,) in changes if isinstance(m := decoder.decode(bytes(d)), LogicalMessage)]
    assert [(parse_lsn(lsn), "cdc.watermark", b'{"snapshot":1,"chunk":0,"kind":"low"}', True)] == [
        (m.lsn, m.prefix, m.content, m.transactional) for m in messages
    ]


def test_watermarks_and_chunks_refuse_to_run_inside_a_snapshot(
    reader: SnapshotReader, database: str
) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        reader.begin_snapshot(row[0])
        with pytest.raises(SourceError, match="end the snapshot transaction first"):
            reader.emit_watermark("cdc.watermark", "x")
        with pytest.raises(SourceError, match="end the snapshot transaction first"):
            reader.read_chunk(reader.table_shape("public", "with_pk"), None, 10)
        reader.end_snapshot()
    parse_lsn(reader.emit_watermark("cdc.watermark", "x"))


def test_bad_credentials_are_reported_without_the_password(postgres_server: Any) -> None:
    dsn = postgres_server.dsn().replace("postgres@", "nobody:s3cret-pw@")
    with pytest.raises(SourceError, match="connecting to PostgreSQL") as info:
        SnapshotReader(dsn, application_name="cdc:test")
    assert "s3cret-pw" not in str(info.value)
