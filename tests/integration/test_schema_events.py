"""Schema-change events on a real PostgreSQL and Kafka: every table's shape, custom types
included, is in the log before the table's first event, snapshot rows too."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import yaml
from click.testing import CliRunner
from confluent_kafka import Consumer, TopicPartition

from cdc.cli import cli
from cdc.protocol.values import ValueOptions, converter_for
from cdc.stream.schema_changes import parse_schema_event, type_infos
from tests.integration.helpers import (
    Daemon,
    Message,
    current_wal_lsn,
    read_all,
    scratch_database,
    slot_confirmed_lsn,
    unique_name,
    wait_until,
    write_config,
)

SCHEMA = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN price AS numeric(7,2) CHECK (VALUE > 0);
CREATE TYPE feeling AS (moods mood[], p price);
CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL, balance numeric(12,2));
CREATE TABLE moods (id int PRIMARY KEY, m mood, p price NOT NULL, f feeling, fs feeling[]);
INSERT INTO accounts VALUES (1, 'Ada', 10.50), (2, 'Grace', 20.00), (3, 'Edsger', NULL);
INSERT INTO moods VALUES (1, 'ok', 12.50, ROW(ARRAY['sad', 'happy']::mood[], 3.00), NULL);
"""


@dataclass
class SchemaEnv:
    name: str
    dsn: str
    admin_dsn: str
    bootstrap: str
    config: Path
    connectors: Path
    log_path: Path
    daemons: list[Daemon]

    def topic(self, table: str) -> str:
        return f"{self.name}.public.{table}"

    @property
    def schema_topic(self) -> str:
        return f"{self.name}.__schema"

    def sql(self, *statements: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def configure(self, **settings: Any) -> None:
        path = self.connectors / f"{self.name}.yaml"
        connector = yaml.safe_load(path.read_text())
        connector.update(settings)
        path.write_text(yaml.safe_dump(connector))

    def start(self, *, wait: str = "streaming_started") -> Daemon:
        daemon = Daemon.start(self.config, self.connectors, self.log_path)
        self.daemons.append(daemon)
        daemon.wait_for_log(wait, timeout=120)
        return daemon

    def wait_streamed(self) -> None:
        """Until the slot is confirmed past everything written so far."""
        end = current_wal_lsn(self.dsn)
        wait_until(lambda: slot_confirmed_lsn(self.admin_dsn, self.name) >= end, what="the slot")

    def schema_events(self, table: str) -> list[Message]:
        return [
            m
            for m in read_all(self.bootstrap, self.schema_topic)
            if m.key == {"schema": "public", "table": table}
        ]


@pytest.fixture
def env(postgres_server: Any, kafka_server: Any, tmp_path: Path) -> Iterator[SchemaEnv]:
    with scratch_database(postgres_server, "schema", SCHEMA) as (name, dsn):
        connector = {
            "name": name,
            "postgres": {"dsn": dsn},
            "slot": name,
            "publication": name,
            "status_interval_seconds": 1,
        }
        config, connectors = write_config(tmp_path, kafka_server.bootstrap_servers, [connector])
        environment = SchemaEnv(
            name, dsn, postgres_server.dsn(), kafka_server.bootstrap_servers, config,
            connectors, tmp_path / "daemon.log", [],
        )  # fmt: skip
        try:
            yield environment
        finally:
            for daemon in environment.daemons:
                daemon.stop_quietly()


def _timestamps(bootstrap: str, topic: str) -> list[tuple[int, Any]]:
    """(Kafka timestamp, decoded value) of every committed record of ``topic``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("ts"),
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        found: list[tuple[int, Any]] = []
        ended: set[int] = set()
        while len(ended) < len(partitions):
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                error = msg.error()
                if error is not None:
                    assert error.code() == -191, error  # _PARTITION_EOF
                    ended.add(msg.partition() or 0)
                    continue
                raw = msg.value()
                found.append((msg.timestamp()[1], None if raw is None else orjson.loads(raw)))
        return found
    finally:
        consumer.close()


def test_a_table_with_rows_before_the_start_is_announced_before_its_snapshot_rows(
    env: SchemaEnv,
) -> None:
    daemon = env.start()  # after the initial snapshot
    assert daemon.wait_for_log("snapshot_schemas_announced")["tables"] == 2
    env.sql("INSERT INTO accounts VALUES (4, 'Barbara', 1.00)")  # the same shape, streamed
    env.wait_streamed()

    (event,) = env.schema_events("accounts")
    value = event.value
    assert value["schema_version"] == 1
    assert value["columns"] == [
        {"name": "id", "type": "bigint", "type_oid": 20, "type_modifier": -1, "key": True,
         "not_null": True},
        {"name": "name", "type": "text", "type_oid": 25, "type_modifier": -1, "key": False,
         "not_null": True},
        {"name": "balance", "type": "numeric(12,2)", "type_oid": 1700,
         "type_modifier": 786438, "key": False, "not_null": False},
    ]  # fmt: skip
    assert (value["key_columns"], value["replica_identity"], value["types"]) == (
        ["id"],
        "default",
        [],
    )
    assert value["source"]["snapshot"] == "true"

    data = _timestamps(env.bootstrap, env.topic("accounts"))
    reads = [v for _, v in data if v["op"] == "r"]
    streamed = [v for _, v in data if v["op"] == "c"]
    assert (len(reads), len(streamed)) == (3, 1)
    # The event carries the rows' LSN: every event at or after it has its shape.
    assert {r["source"]["lsn"] for r in reads} == {value["source"]["lsn"]}
    assert streamed[0]["source"]["lsn"] >= value["source"]["lsn"]
    assert set(streamed[0]["after"]) == {c["name"] for c in value["columns"]}
    # Produced before the first row.
    (schema_ts,) = [ts for ts, v in _timestamps(env.bootstrap, env.schema_topic)
                    if v["source"]["table"] == "accounts"]  # fmt: skip
    assert schema_ts <= min(ts for ts, _ in data)


def test_custom_types_are_defined_transitively_dependencies_first(env: SchemaEnv) -> None:
    env.start()
    (event,) = env.schema_events("moods")
    types = event.value["types"]
    assert [t["name"] for t in types] == ["mood", "price", "_mood", "feeling", "_feeling"]
    by_name = {t["name"]: t for t in types}
    oids = {name: t["oid"] for name, t in by_name.items()}
    assert by_name["mood"]["labels"] == ["sad", "ok", "happy"]
    assert (by_name["mood"]["kind"], by_name["mood"]["category"]) == ("e", "E")
    price = by_name["price"]
    assert (price["kind"], price["not_null"], price["checks"]) == (
        "d",
        False,
        ["CHECK ((VALUE > (0)::numeric))"],
    )
    assert price["base"] == {"type": "numeric(7,2)", "type_oid": 1700, "type_modifier": 458758}
    assert by_name["feeling"]["attributes"] == [
        {"name": "moods", "type": "mood[]", "type_oid": oids["_mood"], "type_modifier": -1},
        {"name": "p", "type": "price", "type_oid": oids["price"], "type_modifier": -1},
    ]
    assert {k: by_name["_feeling"][k] for k in ("kind", "category", "element_oid")} == {
        "kind": "b",
        "category": "A",
        "element_oid": oids["feeling"],
    }
    assert all(t["extension"] is None for t in types)
    columns = {c["name"]: c for c in event.value["columns"]}
    assert (columns["p"]["type"], columns["p"]["not_null"]) == ("price", True)
    assert (columns["fs"]["type"], columns["fs"]["type_oid"]) == ("feeling[]", oids["_feeling"])

    # The definitions convert the values as the catalog's did when the rows were published.
    shape = parse_schema_event(event.raw_value or b"")
    infos = type_infos(shape)
    (row,) = [m.value["after"] for m in read_all(env.bootstrap, env.topic("moods"))]
    convert = converter_for(oids["feeling"], -1, ValueOptions(), types=infos.get)
    assert convert is not None
    assert convert('("{sad,happy}",3.00)') == row["f"] == {"moods": ["sad", "happy"], "p": "3.00"}


def test_a_streamed_schema_change_defines_the_types_it_adds(env: SchemaEnv) -> None:
    env.start()
    env.sql(
        "CREATE TYPE floatrange AS RANGE (subtype = float8)",
        'CREATE TYPE textrange AS RANGE (subtype = text, collation = "C")',
        "ALTER TABLE accounts ADD COLUMN r floatrange, ADD COLUMN t textrange NOT NULL"
        " DEFAULT 'empty'",
        "INSERT INTO accounts VALUES (5, 'Alan', 2.00, '[1,2)', '[a,b)')",
    )
    env.wait_streamed()
    events = env.schema_events("accounts")
    assert [e.value["schema_version"] for e in events] == [1, 2]
    second = events[1].value
    assert second["change"]["added"] == ["r", "t"]
    assert second["source"]["snapshot"] == "false"
    assert [(c["name"], c.get("not_null")) for c in second["columns"][3:]] == [
        ("r", False),
        ("t", True),
    ]
    by_name = {t["name"]: t for t in second["types"]}
    assert by_name["floatrange"]["subtype"] == {"type": "double precision", "type_oid": 701}
    assert "collation" not in by_name["floatrange"]
    assert by_name["textrange"]["collation"] == 'pg_catalog."C"'
    assert "subtype_opclass" not in by_name["textrange"]


def test_an_extension_type_is_defined_by_its_extension(env: SchemaEnv) -> None:
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'hstore'").fetchone():
            conn.execute("CREATE EXTENSION hstore")
        else:
            pytest.skip("the hstore extension is not installed on this machine")
        conn.execute("CREATE TABLE tags (id int PRIMARY KEY, h hstore, hs hstore[])")
        conn.execute("INSERT INTO tags VALUES (1, 'a=>1', NULL)")
    env.start()
    (event,) = env.schema_events("tags")
    types = event.value["types"]
    assert [(t["name"], t["kind"], t["category"], t["extension"]) for t in types] == [
        ("hstore", "b", "U", "hstore"),
        ("_hstore", "b", "A", None),  # comes with its element, created by the extension
    ]
    assert types[1]["element_oid"] == types[0]["oid"]


def test_an_incremental_snapshot_of_a_table_the_stream_never_touched_is_announced_first(
    env: SchemaEnv,
) -> None:
    env.configure(snapshot={"mode": "never", "chunk_rows": 2})
    daemon = env.start()
    assert env.schema_events("accounts") == []
    result = CliRunner().invoke(
        cli,
        ["snapshot", env.name, "--table", "public.accounts", "--config", str(env.config),
         "--connectors", str(env.connectors)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    daemon.wait_for_log("snapshot_finished")
    env.sql("UPDATE accounts SET name = 'Ada L.' WHERE id = 1")  # the same shape, streamed
    env.wait_streamed()

    (event,) = env.schema_events("accounts")
    value = event.value
    assert (value["schema_version"], value["source"]["snapshot"]) == (1, "incremental")
    assert [c["name"] for c in value["columns"]] == ["id", "name", "balance"]
    data = _timestamps(env.bootstrap, env.topic("accounts"))
    reads = [v for _, v in data if v["op"] == "r"]
    assert len(reads) == 3
    # The first chunk's rows carry the event's LSN, the later chunks' a later one.
    assert min(r["source"]["lsn"] for r in reads) == value["source"]["lsn"]
    (schema_ts,) = [ts for ts, v in _timestamps(env.bootstrap, env.schema_topic)
                    if v["source"]["table"] == "accounts"]  # fmt: skip
    assert schema_ts <= min(ts for ts, _ in data)
    assert [v["op"] for _, v in data if v["op"] != "r"] == ["u"]


def test_schema_changes_off_publish_no_event_for_snapshots(env: SchemaEnv) -> None:
    env.configure(schema_changes="off")
    daemon = env.start()
    assert not [e for e in daemon.log_lines() if e.get("event") == "snapshot_schemas_announced"]
    consumer = Consumer({"bootstrap.servers": env.bootstrap, "group.id": unique_name("t")})
    try:
        assert env.schema_topic not in consumer.list_topics(timeout=30).topics
    finally:
        consumer.close()


def test_an_alter_table_during_an_incremental_snapshot_keeps_every_event_s_shape_announced(
    env: SchemaEnv,
) -> None:
    """Chunks read after the schema change have the new column; every event (chunk row
    or streamed) has exactly the columns of the latest schema event at or before it."""
    env.sql("INSERT INTO accounts SELECT g, 'n' || g, g FROM generate_series(10, 40) g")
    # 34 chunks of one row at 5 rows/s: the snapshot lasts at least six seconds.
    env.configure(snapshot={"mode": "never", "chunk_rows": 1, "max_rows_per_second": 5})
    daemon = env.start()
    result = CliRunner().invoke(
        cli,
        ["snapshot", env.name, "--table", "public.accounts", "--config", str(env.config),
         "--connectors", str(env.connectors)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    daemon.wait_for_log("snapshot_chunk_read", count=2)
    env.sql(
        "ALTER TABLE accounts ADD COLUMN note text",
        "UPDATE accounts SET note = 'x' WHERE id = 1",
    )
    daemon.wait_for_log("snapshot_finished", timeout=120)
    env.sql("UPDATE accounts SET note = 'y' WHERE id = 2")
    env.wait_streamed()

    shapes = sorted(
        (
            e.value["source"]["lsn"],
            e.value["schema_version"],
            {c["name"] for c in e.value["columns"]},
        )
        for e in env.schema_events("accounts")
    )
    events = [m.value for m in read_all(env.bootstrap, env.topic("accounts"))]
    for event in events:
        lsn = event["source"]["lsn"]
        columns = [c for at, _, c in shapes if at <= lsn][-1]
        assert set(event["after"]) == columns, (event, shapes)
    reads = [e for e in events if e["op"] == "r"]
    assert len(reads) == 34
    assert {"note" in e["after"] for e in reads} == {True, False}, "the DDL came mid-snapshot"
