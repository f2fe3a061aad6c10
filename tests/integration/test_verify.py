"""``cdc verify`` on a real PostgreSQL and Kafka, with the real daemon streaming: equal
tables pass, a wrong record or a changed target row is named, concurrent writes raise no
false alarm, a bad DSN is an error."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import structlog
from click.testing import CliRunner, Result
from confluent_kafka import Consumer, Producer, TopicPartition

from cdc.cli import cli
from cdc.errors import SourceError
from cdc.postgres.verify_reader import VerifyReader
from tests.integration.helpers import (
    Daemon,
    current_wal_lsn,
    scratch_database,
    slot_confirmed_lsn,
    unique_name,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE items (
    id bigint PRIMARY KEY, name text NOT NULL, amount numeric(10,2),
    seen_at timestamptz, tags text[], body text
);
CREATE TABLE pairs (tenant text, n int, v jsonb, PRIMARY KEY (tenant, n));
"""

# Small chunks, so every table is read in several chunks and only some of them differ.
CHUNK_ROWS = 7


@dataclass
class Env:
    """One test's legacy database, connector files and running daemon."""

    name: str
    dsn: str
    bootstrap: str
    config: Path
    connectors: Path
    daemon: Daemon | None = None

    def sql(self, statement: str, params: Any = None, *, dsn: str | None = None) -> None:
        with psycopg.connect(dsn or self.dsn, autocommit=True) as conn:
            conn.execute(statement, params)

    def topic(self, table: str, *, compacted: bool = True) -> str:
        return f"{self.name}.public.{table}" + (".latest" if compacted else "")

    def wait_streamed(self) -> None:
        """Until the daemon confirmed every change written so far (so Kafka holds it)."""
        target = current_wal_lsn(self.dsn)
        wait_until(
            lambda: slot_confirmed_lsn(self.dsn, self.name) >= target,
            what="the slot to confirm the changes written",
        )

    def verify(self, *args: str) -> Result:
        result = CliRunner().invoke(
            cli,
            [
                "verify",
                self.name,
                "--config",
                str(self.config),
                "--connectors",
                str(self.connectors),
                *args,
            ],
        )
        structlog.reset_defaults()  # verify configured logging for this process
        return result


def fill(env: Env, rows: int) -> None:
    env.sql(
        "INSERT INTO items SELECT i, 'item ' || i, i * 1.25, '2026-01-02 03:04:05+00'::timestamptz"
        " + i * interval '1 minute', ARRAY['a', 'b' || i], repeat('x', i %% 5)"
        " FROM generate_series(1, %s) AS i",
        (rows,),
    )
    env.sql(
        "INSERT INTO pairs SELECT t, n, jsonb_build_object('n', n) FROM unnest(ARRAY['a', 'b'])"
        " AS t, generate_series(1, 20) AS n"
    )


@pytest.fixture
def env(postgres_server: Any, kafka_server: Any, tmp_path: Path) -> Iterator[Env]:
    with scratch_database(postgres_server, "verify", SCHEMA) as (name, dsn):
        connector = {
            "name": name,
            "postgres": {"dsn": dsn},
            "slot": name,
            "publication": name,
            "tables": ["public.items", "public.pairs"],
            "status_interval_seconds": 1,
            "snapshot": {"chunk_rows": CHUNK_ROWS},
        }
        config, connectors = write_config(tmp_path, kafka_server.bootstrap_servers, [connector])
        environment = Env(name, dsn, kafka_server.bootstrap_servers, config, connectors)
        fill(environment, 60)  # read by the initial snapshot
        environment.daemon = Daemon.start(config, connectors, tmp_path / "daemon.log")
        try:
            environment.daemon.wait_for_log("streaming_started")
            # Streamed changes on top of the snapshot: updates, a delete, inserts.
            environment.sql("UPDATE items SET amount = amount + 1, tags = NULL WHERE id % 4 = 0")
            environment.sql("DELETE FROM items WHERE id IN (3, 33)")
            environment.sql("INSERT INTO items (id, name) VALUES (100, 'late'), (101, 'later')")
            environment.sql("UPDATE pairs SET v = '{\"changed\": true}' WHERE n = 5")
            environment.wait_streamed()
            yield environment
        finally:
            environment.daemon.stop_quietly()


def report_of(result: Result) -> dict[str, Any]:
    assert result.exit_code in (0, 1), (result.exit_code, result.output, result.stderr)
    document: dict[str, Any] = orjson.loads(result.stdout)
    return document


def table_report(document: dict[str, Any], table: str) -> dict[str, Any]:
    found: dict[str, Any] = next(t for t in document["tables"] if t["table"] == table)
    return found


# --- against the compacted topic -------------------------------------------------------------


def same_partitions_producer(env: Env) -> Producer:
    """A plain producer whose records land in the partition of the daemon's records of the
    same key (Java-compatible murmur2, as the daemon partitions)."""
    return Producer({"bootstrap.servers": env.bootstrap, "partitioner": "murmur2_random"})


def test_tables_equal_to_their_compacted_topics_pass(env: Env) -> None:
    result = env.verify()
    assert (result.exit_code, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert "public.items: 60 rows equal" in lines
    assert "public.pairs: 40 rows equal" in lines
    assert lines[-1] == f"{env.name}: 2 tables compared with the compacted topics: equal"


def test_json_report_of_equal_tables(env: Env) -> None:
    document = report_of(env.verify("--json", "--table", "items"))
    assert (document["equal"], document["compared_with"]) == (True, "compacted_topic")
    items = table_report(document, "public.items")
    assert (items["rows"], items["differences"]["total"], items["shown"]) == (60, 0, [])
    assert items["compared_with"] == env.topic("items")
    assert items["chunks"] == 60 // CHUNK_ROWS + 1


def seeded_row(i: int) -> dict[str, Any]:
    """Row ``i`` as ``fill`` wrote it (ids not updated since: i % 4 != 0), as the daemon
    publishes it on the compacted topic."""
    return {
        "id": i,
        "name": f"item {i}",
        "amount": f"{i * 1.25:.2f}",
        "seen_at": f"2026-01-02T03:{4 + i:02d}:05.000000Z",
        "tags": ["a", f"b{i}"],
        "body": "x" * (i % 5),
    }


def test_a_wrong_record_in_the_compacted_topic_is_named_with_its_column(env: Env) -> None:
    producer = same_partitions_producer(env)
    topic = env.topic("items")
    producer.produce(topic, key=b'{"id":5}', value=orjson.dumps(seeded_row(5)))  # still right
    producer.produce(
        topic, key=b'{"id":6}', value=orjson.dumps({**seeded_row(6), "amount": "1.00"})
    )
    producer.produce(topic, key=b'{"id":7}', value=None)  # a lost row
    producer.produce(topic, key=b'{"id":999}', value=orjson.dumps(seeded_row(5)))  # a stray one
    assert producer.flush(30) == 0

    result = env.verify("--table", "public.items")
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "public.items: 60 rows, 3 differ (1 with other values, 1 missing from the compacted"
        " topic, 1 only in the compacted topic)"
    )
    assert '  {"id":6}: amount: legacy "7.50", compacted topic "1.00"' in lines
    assert '  {"id":7}: missing from the compacted topic' in lines
    assert '  {"id":999}: only in the compacted topic, not in the legacy table' in lines

    items = table_report(report_of(env.verify("--json", "--table", "items")), "public.items")
    assert items["differences"] == {"total": 3, "differs": 1, "missing": 1, "extra": 1}
    shown = {orjson.dumps(d["key"]).decode(): d for d in items["shown"]}
    assert shown['{"id":6}']["columns"] == [
        {"column": "amount", "legacy": "7.50", "other": "1.00", "only_in": None}
    ]
    assert items["catch_up"] is None  # the re-checks ran: the topic had caught up


def test_max_differences_limits_the_keys_shown_not_the_count(env: Env) -> None:
    producer = same_partitions_producer(env)
    for key in (10, 11, 12):
        producer.produce(env.topic("items"), key=b'{"id":%d}' % key, value=None)
    assert producer.flush(30) == 0
    document = report_of(env.verify("--json", "--table", "items", "--max-differences", "1"))
    items = table_report(document, "public.items")
    assert (items["differences"]["missing"], len(items["shown"])) == (3, 1)


def test_placeholders_in_the_topic_are_unverifiable_not_differences(env: Env) -> None:
    producer = same_partitions_producer(env)
    row = {**seeded_row(9), "body": "__debezium_unavailable_value"}
    producer.produce(env.topic("items"), key=b'{"id":9}', value=orjson.dumps(row))
    assert producer.flush(30) == 0
    result = env.verify("--table", "items")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:2] == [
        "public.items: 60 rows equal",
        "  1 value unverifiable (the unchanged-TOAST placeholder in the compacted topic): body 1",
    ]


def test_concurrent_writes_raise_no_false_alarm(env: Env) -> None:
    """Rows updated, inserted and deleted while verify reads are not reported: the keys
    that differ during the scan agree once the topic has caught up."""
    env.sql(
        "INSERT INTO items (id, name) SELECT i, 'bulk ' || i FROM generate_series(1000, 5999) i"
    )
    env.wait_streamed()
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        rng = random.Random(7)
        next_id = 10_000
        with psycopg.connect(env.dsn, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute(
                    "UPDATE items SET amount = coalesce(amount, 0) + 1, name = %s WHERE id = %s",
                    (f"rename {written[0]}", rng.randint(1000, 5999)),
                )
                if written[0] % 5 == 0:
                    conn.execute("INSERT INTO items (id, name) VALUES (%s, 'new')", (next_id,))
                    next_id += 1
                if written[0] % 7 == 0:
                    conn.execute("DELETE FROM items WHERE id = %s", (rng.randint(1000, 5999),))
                written[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        wait_until(lambda: written[0] >= 20, what="the writer to start")
        document = report_of(env.verify("--json"))
        written_during = written[0]
    finally:
        stop.set()
        thread.join(30)
    assert document["equal"], orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()
    assert written_during > 20


# --- against a target database -----------------------------------------------------------


def copy_tables(source_dsn: str, target_dsn: str) -> None:
    """What cdc replay will do, by hand: the same tables and rows in the target."""
    with (
        psycopg.connect(source_dsn, autocommit=True) as source,
        psycopg.connect(target_dsn, autocommit=True) as target,
    ):
        target.execute(SCHEMA)
        for table in ("items", "pairs"):
            with (
                source.cursor().copy(f"COPY {table} TO STDOUT") as out,
                target.cursor().copy(f"COPY {table} FROM STDIN") as into,
            ):
                for data in out:
                    into.write(data)


def record_replayed(env: Env, target_dsn: str) -> None:
    """Fill cdc_replay.offsets as cdc replay does once it read every retention topic to
    its end: next_offset = the partition's read_committed end."""
    consumer = Consumer(
        {
            "bootstrap.servers": env.bootstrap,
            "group.id": unique_name("ends"),
            "isolation.level": "read_committed",
        }
    )
    rows = []
    try:
        for table in ("items", "pairs"):
            topic = env.topic(table, compacted=False)
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            for p in partitions:
                end = consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=10, cached=False
                )[1]
                rows.append((env.name, topic, p, end))
    finally:
        consumer.close()
    with psycopg.connect(target_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE SCHEMA IF NOT EXISTS cdc_replay;"
            " CREATE TABLE IF NOT EXISTS cdc_replay.offsets (connector text, topic text,"
            " partition int, next_offset bigint, PRIMARY KEY (connector, topic, partition))"
        )
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO cdc_replay.offsets VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (connector, topic, partition)"
                " DO UPDATE SET next_offset = excluded.next_offset",
                rows,
            )


@pytest.fixture
def target(env: Env, postgres_server: Any) -> Iterator[str]:
    with scratch_database(postgres_server, "target") as (_, dsn):
        copy_tables(env.dsn, dsn)
        record_replayed(env, dsn)
        yield dsn


def test_a_target_with_the_same_rows_passes(env: Env, target: str) -> None:
    result = env.verify("--target-dsn", target)
    assert (result.exit_code, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert "public.items: 60 rows equal" in lines
    assert "public.pairs: 40 rows equal" in lines
    assert lines[-1] == f"{env.name}: 2 tables compared with the target database: equal"


def test_a_changed_column_in_the_target_is_named(env: Env, target: str) -> None:
    env.sql("UPDATE items SET name = 'tampered' WHERE id = 17", dsn=target)
    env.sql("UPDATE pairs SET v = '{\"n\": 0}' WHERE tenant = 'b' AND n = 2", dsn=target)
    result = env.verify("--target-dsn", target)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert "public.items: 60 rows, 1 differ (1 with other values)" in lines
    assert '  {"id":"17"}: name: legacy "item 17", target "tampered"' in lines
    assert '  {"tenant":"b","n":"2"}: v: legacy "{\\"n\\": 2}", target "{\\"n\\": 0}"' in lines

    document = report_of(env.verify("--target-dsn", target, "--json", "--table", "items"))
    items = table_report(document, "public.items")
    assert (items["chunks"], items["chunks_differing"]) == (60 // CHUNK_ROWS + 1, 1)
    assert items["shown"] == [
        {
            "key": {"id": "17"},
            "kind": "differs",
            "columns": [
                {"column": "name", "legacy": "item 17", "other": "tampered", "only_in": None}
            ],
        }
    ]


def test_missing_and_extra_target_rows_and_columns_are_differences(env: Env, target: str) -> None:
    env.sql(
        "DELETE FROM items WHERE id = 20; INSERT INTO items (id, name) VALUES (500, 'x')",
        dsn=target,
    )
    env.sql("ALTER TABLE pairs DROP COLUMN v", dsn=target)
    result = env.verify("--target-dsn", target)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert (
        "public.items: 60 rows, 2 differ (1 missing from the target, 1 only in the target)" in lines
    )
    assert '  {"id":"20"}: missing from the target' in lines
    assert '  {"id":"500"}: only in the target, not in the legacy table' in lines
    assert "public.pairs: 40 rows, the columns differ" in lines
    assert "  column v is missing in the target" in lines


def test_a_target_that_never_catches_up_is_reported(env: Env, target: str) -> None:
    env.sql("UPDATE items SET name = 'tampered' WHERE id = 17", dsn=target)
    env.sql("UPDATE cdc_replay.offsets SET next_offset = 0", dsn=target)
    env.sql("UPDATE items SET amount = 0 WHERE id = 1")  # the retention topic has data
    env.wait_streamed()
    result = env.verify("--target-dsn", target, "--table", "items", "--wait", "1")
    assert result.exit_code == 1, result.output
    assert "not re-checked: the target did not catch up to LSN" in result.stdout
    assert "is cdc replay running?" in result.stdout


# --- errors ------------------------------------------------------------------------------


def test_a_bad_target_dsn_is_an_error(env: Env) -> None:
    result = env.verify("--target-dsn", "postgresql://verify:secret@127.0.0.1:1/nowhere")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("cdc verify: the target database (--target-dsn): ")
    assert "secret" not in result.stderr


def test_a_table_the_connector_does_not_capture_is_an_error(env: Env) -> None:
    result = env.verify("--table", "public.nope")
    assert result.exit_code == 2
    assert "--table public.nope: not captured by connector" in result.stderr


# --- the reader ------------------------------------------------------------------------------

READER_SCHEMA = """
CREATE TABLE t (id int, k text, v numeric, at timestamptz, b bytea, PRIMARY KEY (id, k));
CREATE TABLE signals (id text PRIMARY KEY, type text, data text);
"""
READER_ROWS = (
    "INSERT INTO t SELECT i, 'k' || i, i / 3.0, '2026-01-01'::timestamptz + i * interval '1 s',"
    " '\\x00ff' FROM generate_series(1, 25) AS i"
)


@pytest.fixture
def two_databases(postgres_server: Any) -> Iterator[tuple[str, str]]:
    with (
        scratch_database(postgres_server, "legacy", READER_SCHEMA) as (_, legacy),
        scratch_database(postgres_server, "copy", READER_SCHEMA) as (_, copy),
    ):
        for dsn in (legacy, copy):
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(READER_ROWS)
        yield legacy, copy


@pytest.fixture
def readers(two_databases: tuple[str, str]) -> Iterator[tuple[VerifyReader, VerifyReader]]:
    legacy, copy = (
        VerifyReader(dsn, application_name="cdc:test-verify", role=f"database {i}")
        for i, dsn in enumerate(two_databases)
    )
    try:
        yield legacy, copy
    finally:
        legacy.close()
        copy.close()


def test_equal_rows_give_equal_digests_chunk_by_chunk(
    readers: tuple[VerifyReader, VerifyReader],
) -> None:
    legacy, copy = readers
    shape_a, shape_b = legacy.table_shape("public", "t"), copy.table_shape("public", "t")
    first = legacy.digest_range(shape_a, None, limit=10)
    assert (first.rows, first.last_key) == (10, ("10", "k10"))
    assert copy.digest_range(shape_b, None, first.last_key) == first
    rest = legacy.digest_range(shape_a, first.last_key)
    assert rest.rows == 15
    assert copy.digest_range(shape_b, first.last_key) == rest
    assert rest.digest != first.digest


def test_one_changed_value_changes_only_its_chunk_digest(
    readers: tuple[VerifyReader, VerifyReader], two_databases: tuple[str, str]
) -> None:
    legacy, copy = readers
    with psycopg.connect(two_databases[1], autocommit=True) as conn:
        conn.execute("UPDATE t SET at = at + interval '1 microsecond' WHERE id = 17")
    shape_a, shape_b = legacy.table_shape("public", "t"), copy.table_shape("public", "t")
    first = legacy.digest_range(shape_a, None, limit=10)
    assert copy.digest_range(shape_b, None, first.last_key) == first
    assert copy.digest_range(shape_b, first.last_key) != legacy.digest_range(
        shape_a, first.last_key
    )
    rows = copy.read_keys(shape_b, [("17", "k17"), ("99", "k99")])
    assert [row[:2] for row in rows] == [("17", "k17")]


def test_an_empty_range_has_the_digest_of_nothing(
    readers: tuple[VerifyReader, VerifyReader],
) -> None:
    legacy, _ = readers
    shape = legacy.table_shape("public", "t")
    empty = legacy.digest_range(shape, ("25", "k25"))
    assert (empty.rows, empty.last_key) == (0, None)


def test_a_short_transaction_sees_what_committed_before_its_position(
    readers: tuple[VerifyReader, VerifyReader], two_databases: tuple[str, str]
) -> None:
    legacy, _ = readers
    with psycopg.connect(two_databases[0], autocommit=True) as conn:
        conn.execute("UPDATE t SET v = 0 WHERE id = 1")
        committed = current_wal_lsn(two_databases[0])
    with legacy.short_transaction() as lsn:
        assert lsn >= committed
        rows = legacy.read_keys(legacy.table_shape("public", "t"), [("1", "k1")])
    assert rows[0][2] == "0"
    assert lsn <= current_wal_lsn(two_databases[0])


def test_the_verify_reader_cannot_write(readers: tuple[VerifyReader, VerifyReader]) -> None:
    legacy, _ = readers
    with pytest.raises(SourceError, match="read-only transaction"):
        legacy.emit_signal_row("public.signals", "x", "y")
