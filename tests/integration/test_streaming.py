"""The daemon's main job on a real PostgreSQL and a real Kafka: changes in, both topics out."""

from __future__ import annotations

import base64
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from cdc.testing.kafka import start_kafka
from cdc.testing.postgres import start_postgres
from tests.integration.helpers import (
    Daemon,
    Message,
    at_least,
    consume,
    create_database,
    current_wal_lsn,
    drop_database,
    read_all,
    scratch_database,
    slot_confirmed_lsn,
    unique_name,
    wait_until,
    write_config,
)

SCHEMA = """
CREATE TABLE customers (
    id bigint PRIMARY KEY, name text NOT NULL, email text,
    balance numeric(12,2), updated_at timestamptz
);
CREATE TABLE orders (
    id bigint PRIMARY KEY, customer_id bigint, amount numeric(10,2), status text, meta jsonb
);
CREATE TABLE audit_log (at timestamptz, message text);
"""


@dataclass
class Env:
    """One test's database, connector and daemon files."""

    name: str
    dsn: str
    admin_dsn: str
    slot: str
    bootstrap: str
    config: Path
    connectors: Path
    log_path: Path
    daemons: list[Daemon]

    def sql(self, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
        with psycopg.connect(self.dsn, autocommit=False) as conn:
            for statement in statements:
                if isinstance(statement, tuple):
                    conn.execute(statement[0], statement[1])
                else:
                    conn.execute(statement)
            conn.commit()

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(query).fetchall()

    def start(self) -> Daemon:
        daemon = Daemon.start(self.config, self.connectors, self.log_path)
        self.daemons.append(daemon)
        daemon.wait_for_log("streaming_started")
        return daemon

    def topic(self, table: str, *, compacted: bool = False) -> str:
        return f"{self.name}.public.{table}" + (".latest" if compacted else "")


@pytest.fixture
def env(postgres_server: Any, kafka_server: Any, tmp_path: Path) -> Iterator[Env]:
    admin_dsn = postgres_server.dsn()
    with scratch_database(postgres_server, "it", SCHEMA) as (name, dsn):
        connector = {
            "name": name,
            "postgres": {"dsn": dsn},
            "slot": name,
            "publication": name,
            "tables": ["public.customers", "public.orders"],
            "status_interval_seconds": 1,
        }
        config, connectors = write_config(tmp_path, kafka_server.bootstrap_servers, [connector])
        environment = Env(
            name,
            dsn,
            admin_dsn,
            name,
            kafka_server.bootstrap_servers,
            config,
            connectors,
            tmp_path / "daemon.log",
            [],
        )
        try:
            yield environment
        finally:
            for daemon in environment.daemons:
                daemon.stop_quietly()


WORKLOAD = [
    [
        "INSERT INTO customers VALUES"
        " (1, 'Ada', 'ada@example.com', 10.50, '2026-01-02 03:04:05.123456+00')",
        "INSERT INTO customers VALUES (2, 'Brian', NULL, 0, NULL)",
        "INSERT INTO customers VALUES (3, 'Cleo', 'c@example.com', -1.25, now())",
    ],
    [
        f"INSERT INTO orders VALUES ({i}, {1 + i % 3}, {i}.99, 'new', '{{\"n\": {i}}}')"
        for i in range(1, 6)
    ],
    [
        "UPDATE customers SET name = 'Ada L.' WHERE id = 1",
        "UPDATE orders SET status = 'paid' WHERE id = 2",
        "UPDATE orders SET status = 'shipped' WHERE id = 2",
    ],
    ["DELETE FROM orders WHERE id = 3", "DELETE FROM customers WHERE id = 3"],
    ["UPDATE customers SET id = 20 WHERE id = 2"],
    [
        "INSERT INTO orders VALUES (6, 1, 1.00, 'new', NULL)",
        "UPDATE orders SET amount = 2.00 WHERE id = 6",
        "DELETE FROM orders WHERE id = 6",
    ],
]
# Retention events per table: insert 3 + update 1 + delete 1 + key change (d + c) = 7
CUSTOMER_EVENTS = 7
ORDER_EVENTS = 5 + 2 + 1 + 3


def _run_workload(env: Env) -> None:
    for transaction in WORKLOAD:
        env.sql(*transaction)


def _by_key(messages: list[Message]) -> dict[str, list[Message]]:
    grouped: dict[str, list[Message]] = {}
    for message in sorted(messages, key=lambda m: (m.partition, m.offset)):
        grouped.setdefault(repr(message.key), []).append(message)
    return grouped


def _latest(messages: list[Message]) -> dict[Any, Any]:
    state: dict[Any, Any] = {}
    for message in sorted(messages, key=lambda m: (m.partition, m.offset)):
        state[message.key["id"]] = message.value
    return {k: v for k, v in state.items() if v is not None}


def test_changes_reach_the_retention_topic_in_commit_order_per_key(env: Env) -> None:
    daemon = env.start()
    _run_workload(env)
    customers = consume(env.bootstrap, env.topic("customers"), until=at_least(CUSTOMER_EVENTS))
    orders = consume(env.bootstrap, env.topic("orders"), until=at_least(ORDER_EVENTS))
    assert len(customers) == CUSTOMER_EVENTS
    assert len(orders) == ORDER_EVENTS

    ops = {key: [m.value["op"] for m in msgs] for key, msgs in _by_key(customers).items()}
    assert ops == {
        repr({"id": 1}): ["c", "u"],
        repr({"id": 2}): ["c", "d"],
        repr({"id": 3}): ["c", "d"],
        repr({"id": 20}): ["c"],
    }
    order_ops = {key: [m.value["op"] for m in msgs] for key, msgs in _by_key(orders).items()}
    assert order_ops[repr({"id": 2})] == ["c", "u", "u"]
    assert order_ops[repr({"id": 6})] == ["c", "u", "d"]
    statuses = [m.value["after"]["status"] for m in _by_key(orders)[repr({"id": 2})]]
    assert statuses == ["new", "paid", "shipped"]
    trouble = {"connector_restarting", "connector_failed", "connector_crashed"}
    assert [e for e in daemon.log_lines() if e.get("event") in trouble] == []


def test_events_carry_debezium_envelope_fields(env: Env) -> None:
    env.start()
    _run_workload(env)
    customers = consume(env.bootstrap, env.topic("customers"), until=at_least(CUSTOMER_EVENTS))
    first = next(m for m in customers if m.key == {"id": 1} and m.value["op"] == "c").value
    assert first["before"] is None
    assert first["after"] == {
        "id": 1,
        "name": "Ada",
        "email": "ada@example.com",
        "balance": "10.50",
        "updated_at": "2026-01-02T03:04:05.123456Z",
    }
    source = first["source"]
    assert source["connector"] == "postgresql"
    assert source["name"] == env.name
    assert source["db"] == env.name
    assert (source["schema"], source["table"]) == ("public", "customers")
    assert source["snapshot"] == "false"
    assert isinstance(source["txId"], int)
    assert isinstance(source["lsn"], int)
    assert source["ts_ms"] <= first["ts_ms"]
    lsns = [
        m.value["source"]["lsn"]
        for m in sorted(customers, key=lambda m: m.offset)
        if m.partition == customers[0].partition
    ]
    assert lsns == sorted(lsns)


def test_compacted_topic_holds_latest_rows_and_tombstones(env: Env) -> None:
    env.start()
    _run_workload(env)
    latest = consume(
        env.bootstrap, env.topic("customers", compacted=True), until=at_least(CUSTOMER_EVENTS)
    )
    tombstones = [m for m in latest if m.raw_value is None]
    assert sorted(m.key["id"] for m in tombstones) == [2, 3]
    table = {row[0]: row[1] for row in env.rows("SELECT id, name FROM customers")}
    assert {k: v["name"] for k, v in _latest(latest).items()} == table

    orders = consume(
        env.bootstrap, env.topic("orders", compacted=True), until=at_least(ORDER_EVENTS)
    )
    state = _latest(orders)
    assert sorted(state) == [r[0] for r in env.rows("SELECT id FROM orders ORDER BY id")]
    assert state[2] == {
        "id": 2,
        "customer_id": 3,
        "amount": "2.99",
        "status": "shipped",
        "meta": '{"n": 2}',
    }


def test_topics_are_created_with_their_cleanup_policies(env: Env) -> None:
    env.start()
    admin = AdminClient({"bootstrap.servers": env.bootstrap})
    resources = [
        ConfigResource(ConfigResource.Type.TOPIC, env.topic("orders")),
        ConfigResource(ConfigResource.Type.TOPIC, env.topic("orders", compacted=True)),
    ]
    configs = {r.name: f.result() for r, f in admin.describe_configs(resources).items()}
    retention = configs[env.topic("orders")]
    compacted = configs[env.topic("orders", compacted=True)]
    assert retention["cleanup.policy"].value == "delete"
    assert retention["retention.ms"].value == "-1"
    assert compacted["cleanup.policy"].value == "compact"
    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics[env.topic("orders")].partitions) == 3


def test_existing_topic_with_wrong_cleanup_policy_stops_the_connector(env: Env) -> None:
    admin = AdminClient({"bootstrap.servers": env.bootstrap})
    topic = env.topic("customers")
    futures = admin.create_topics(
        [
            NewTopic(
                topic, num_partitions=1, replication_factor=1, config={"cleanup.policy": "compact"}
            )
        ]
    )
    futures[topic].result()
    daemon = Daemon.start(env.config, env.connectors, env.log_path)
    env.daemons.append(daemon)
    assert daemon.process.wait(60) == 1
    failed = daemon.wait_for_log("connector_failed")
    assert topic in failed["error"]
    assert "cleanup.policy=delete" in failed["error"]


def test_sigterm_flushes_confirms_and_restarts_without_duplicates(env: Env) -> None:
    daemon = env.start()
    _run_workload(env)
    consume(env.bootstrap, env.topic("orders"), until=at_least(ORDER_EVENTS))
    end_of_workload = current_wal_lsn(env.dsn)
    assert daemon.terminate() == 0
    assert slot_confirmed_lsn(env.admin_dsn, env.slot) >= end_of_workload - 1024
    env.sql("INSERT INTO orders VALUES (7, 1, 7.00, 'new', NULL)")
    after_insert = current_wal_lsn(env.dsn)
    env.start()
    wait_until(
        lambda: slot_confirmed_lsn(env.admin_dsn, env.slot) >= after_insert,
        what="the restarted daemon to confirm the new insert",
    )
    orders = read_all(env.bootstrap, env.topic("orders"))
    assert len(orders) == ORDER_EVENTS + 1
    assert max(m.key["id"] for m in orders) == 7


def _orders_workload(env: Env, stop: threading.Event, committed: list[int]) -> None:
    """Transactions of 20 inserts, as fast as they commit, until ``stop``."""
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        next_id = 1000
        while not stop.is_set():
            with conn.transaction():
                for _ in range(20):
                    conn.execute("INSERT INTO orders VALUES (%s, 1, 1.00, 'new', NULL)", (next_id,))
                    next_id += 1
            committed.extend(range(next_id - 20, next_id))


def _kill_after_progress(env: Env, daemon: Daemon) -> Daemon:
    """SIGKILL ``daemon`` once it has confirmed something new, and start the next one."""
    confirmed = slot_confirmed_lsn(env.admin_dsn, env.slot)
    wait_until(
        lambda: slot_confirmed_lsn(env.admin_dsn, env.slot) > confirmed,
        what="the daemon to confirm progress before it is killed",
    )
    daemon.kill()
    return env.start()


def test_sigkill_at_any_moment_loses_and_repeats_no_committed_change(env: Env) -> None:
    """Kill -9 twice while a workload commits: every row reaches the retention topic
    exactly once (exactly_once, the default), and the compacted topic equals the table."""
    stop = threading.Event()
    committed: list[int] = []
    writer = threading.Thread(target=_orders_workload, args=(env, stop, committed))
    daemon = env.start()
    writer.start()
    try:
        for _ in range(2):
            daemon = _kill_after_progress(env, daemon)
    finally:
        stop.set()
        writer.join()
    assert len(committed) > 100
    end = current_wal_lsn(env.dsn)
    wait_until(
        lambda: slot_confirmed_lsn(env.admin_dsn, env.slot) >= end,
        timeout=120,
        what="the daemon to catch up",
    )
    seen = Counter(m.key["id"] for m in read_all(env.bootstrap, env.topic("orders")))
    assert set(seen) == set(committed)
    assert [k for k, n in seen.items() if n > 1] == []
    latest = read_all(env.bootstrap, env.topic("orders", compacted=True))
    assert set(_latest(latest)) == {r[0] for r in env.rows("SELECT id FROM orders")}


def test_table_without_key_streams_with_null_keys_to_retention_only(env: Env) -> None:
    env.sql(
        "CREATE TABLE events_nokey (at timestamptz, message text)",
        f"CREATE PUBLICATION {env.name} FOR TABLE customers, orders, events_nokey",
    )
    daemon = env.start()
    warning = daemon.wait_for_log("table_without_key")
    assert warning["table"] == "public.events_nokey"
    env.sql("INSERT INTO events_nokey VALUES (now(), 'hello'), (now(), 'world')")
    messages = consume(env.bootstrap, env.topic("events_nokey"), until=at_least(2))
    assert [m.key for m in messages] == [None, None]
    assert sorted(m.value["after"]["message"] for m in messages) == ["hello", "world"]
    admin = AdminClient({"bootstrap.servers": env.bootstrap})
    assert env.topic("events_nokey", compacted=True) not in admin.list_topics(timeout=10).topics


def test_idle_slot_advances_while_other_tables_are_busy(env: Env) -> None:
    """WAL written by unpublished tables does not pile up behind the slot."""
    env.start()
    env.sql("INSERT INTO customers VALUES (1, 'Ada', NULL, 1, now())")
    consume(env.bootstrap, env.topic("customers"), until=at_least(1))
    for _ in range(5):
        env.sql(
            "INSERT INTO audit_log SELECT now(), repeat('x', 1000) FROM generate_series(1, 200)"
        )
    target = current_wal_lsn(env.dsn)
    deadline = time.monotonic() + 30
    while slot_confirmed_lsn(env.admin_dsn, env.slot) < target and time.monotonic() < deadline:
        time.sleep(0.5)
    assert slot_confirmed_lsn(env.admin_dsn, env.slot) >= target


def test_unreachable_kafka_is_a_retried_error_not_a_crash(
    postgres_server: Any, tmp_path: Path
) -> None:
    name = unique_name("it")
    admin_dsn = postgres_server.dsn()
    create_database(admin_dsn, name)
    try:
        with psycopg.connect(postgres_server.dsn(dbname=name), autocommit=True) as conn:
            conn.execute(SCHEMA)
        connector = {"name": name, "postgres": {"dsn": postgres_server.dsn(dbname=name)}}
        config, connectors = write_config(tmp_path, "127.0.0.1:1", [connector])
        daemon = Daemon.start(config, connectors, tmp_path / "d.log")
        try:
            line = daemon.wait_for_log("connector_restarting", timeout=90)
            assert "cannot reach Kafka at 127.0.0.1:1" in line["error"]
            assert "kafka.bootstrap_servers" in line["error"]
            assert daemon.terminate() == 0
        finally:
            daemon.stop_quietly()
    finally:
        drop_database(admin_dsn, name, slot=f"cdc_{name}")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _walsender_pids(dsn: str, application_name: str) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_replication WHERE application_name = %s",
            (application_name,),
        ).fetchall()
    return [r[0] for r in rows]


@pytest.mark.slow
def test_kafka_outage_pauses_reading_keeps_the_slot_alive_and_loses_nothing(
    postgres_server: Any, tmp_path: Path
) -> None:
    """Kafka down: bounded memory, the walsender is not timed out, all rows arrive after."""
    name = unique_name("it")
    admin_dsn = postgres_server.dsn()
    create_database(admin_dsn, name)
    dsn = postgres_server.dsn(dbname=name)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        # A short timeout makes a silent client fail fast: the daemon must keep talking.
        conn.execute(f"ALTER DATABASE {name} SET wal_sender_timeout = '3s'")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
    kafka = start_kafka(tmp_path / "kafka")
    daemon: Daemon | None = None
    try:
        connector = {
            "name": name,
            "postgres": {"dsn": dsn},
            "tables": ["public.orders"],
            "max_in_flight_events": 500,
        }
        config, connectors = write_config(tmp_path, kafka.bootstrap_servers, [connector])
        daemon = Daemon.start(config, connectors, tmp_path / "d.log")
        daemon.wait_for_log("streaming_started")
        topic = f"{name}.public.orders"
        insert = (
            "INSERT INTO orders SELECT g, 1, 1.00, 'new', NULL"
            " FROM generate_series(%s::bigint, %s::bigint) g"
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(insert, (1, 100))
        consume(kafka.bootstrap_servers, topic, until=at_least(100))
        walsenders = _walsender_pids(dsn, f"cdc:{name}")
        assert len(walsenders) == 1

        kafka.kill()
        with psycopg.connect(dsn, autocommit=True) as conn:
            for first in range(101, 20_101, 1000):
                conn.execute(insert, (first, first + 999))
        daemon.wait_for_log("kafka_backpressure_started", timeout=30)
        time.sleep(8)  # well past wal_sender_timeout
        assert _walsender_pids(dsn, f"cdc:{name}") == walsenders
        assert _rss_mb(daemon.process.pid) < 250
        assert not [e for e in daemon.log_lines() if e.get("event") == "connector_restarting"]

        kafka.restart()
        seen = consume(
            kafka.bootstrap_servers,
            topic,
            until=lambda msgs: len({m.key["id"] for m in msgs}) >= 20_100,
            timeout=120,
        )
        assert {m.key["id"] for m in seen} == set(range(1, 20_101))
        assert daemon.terminate() == 0
    finally:
        if daemon is not None:
            daemon.stop_quietly()
        kafka.stop()
        drop_database(admin_dsn, name, slot=f"cdc_{name}")


@pytest.mark.slow
def test_postgres_crash_restarts_the_connector_and_loses_nothing(
    kafka_server: Any, tmp_path: Path
) -> None:
    """PostgreSQL killed and restarted: the connector retries, then every row arrives."""
    pg = start_postgres(tmp_path / "pg")
    daemon: Daemon | None = None
    try:
        dsn = pg.dsn()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SCHEMA)
        name = unique_name("it")
        connector = {"name": name, "postgres": {"dsn": dsn}, "tables": ["public.orders"]}
        config, connectors = write_config(tmp_path, kafka_server.bootstrap_servers, [connector])
        daemon = Daemon.start(config, connectors, tmp_path / "d.log")
        daemon.wait_for_log("streaming_started")
        insert = (
            "INSERT INTO orders SELECT g, 1, 1.00, 'new', NULL"
            " FROM generate_series(%s::bigint, %s::bigint) g"
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(insert, (1, 500))
        pg.kill()
        daemon.wait_for_log("connector_restarting", timeout=30)
        pg.restart()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(insert, (501, 1000))
        seen = consume(
            kafka_server.bootstrap_servers,
            f"{name}.public.orders",
            until=lambda msgs: len({m.key["id"] for m in msgs}) >= 1000,
            timeout=90,
        )
        assert {m.key["id"] for m in seen} == set(range(1, 1001))
        assert not [e for e in daemon.log_lines() if e.get("event") == "connector_crashed"]
        assert daemon.terminate() == 0
    finally:
        if daemon is not None:
            daemon.stop_quietly()
        pg.stop()


def test_wide_rows_pass_and_an_oversized_one_stops_with_a_clear_error(env: Env) -> None:
    """Legacy rows of several MB go through; one beyond the limit is a loud, named stop."""
    daemon = env.start()
    env.sql("INSERT INTO customers VALUES (1, repeat('x', 3 * 1024 * 1024), NULL, 0, NULL)")
    wide = consume(env.bootstrap, env.topic("customers"), until=at_least(1))
    assert len(wide[0].value["after"]["name"]) == 3 * 1024 * 1024
    env.sql("INSERT INTO customers VALUES (2, repeat('y', 17 * 1024 * 1024), NULL, 0, NULL)")
    assert daemon.process.wait(60) == 1
    failed = daemon.wait_for_log("connector_failed")
    assert failed["error_type"] == "RecordTooLargeError"
    assert "message.max.bytes" in failed["error"]
    assert env.topic("customers") in failed["error"]


def test_lost_slot_is_detected_not_silently_recreated(env: Env) -> None:
    """A dropped slot (failover, upgrade) would skip changes: refuse unless told to."""
    daemon = env.start()
    env.sql("INSERT INTO orders VALUES (1, 1, 1.00, 'new', NULL)")
    consume(env.bootstrap, env.topic("orders"), until=at_least(1))
    assert daemon.terminate() == 0
    with psycopg.connect(env.admin_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (env.slot,))
    env.sql("INSERT INTO orders VALUES (2, 1, 1.00, 'lost', NULL)")

    refused = Daemon.start(env.config, env.connectors, env.log_path)
    env.daemons.append(refused)
    assert refused.process.wait(60) == 1
    failed = refused.wait_for_log("connector_failed")
    assert "recreate_slot: true" in failed["error"]
    assert env.topic("orders") in failed["error"]

    connector_file = env.connectors / f"{env.name}.yaml"
    connector = yaml.safe_load(connector_file.read_text())
    connector_file.write_text(yaml.safe_dump({**connector, "recreate_slot": True}))
    env.log_path.write_text("")
    accepted = env.start()
    warning = accepted.wait_for_log("slot_recreated_with_possible_gap")
    assert warning["topic"] == env.topic("orders")
    # snapshot.mode initial snapshots once: the recreated slot does not snapshot again.
    assert not [e for e in accepted.log_lines() if e.get("event") == "snapshot_started"]


def test_schema_changes_take_effect_at_once_and_are_announced_in_order(env: Env) -> None:
    """ALTER TABLE under a workload: no event lost, every event has the shape of its moment."""
    daemon = env.start()
    stop = threading.Event()
    inserted: list[int] = []

    def workload() -> None:
        with psycopg.connect(env.dsn, autocommit=True) as conn:
            next_id = 1
            while not stop.is_set():
                conn.execute("INSERT INTO orders (id, customer_id) VALUES (%s, 7)", (next_id,))
                inserted.append(next_id)
                next_id += 1
                time.sleep(0.002)

    writer = threading.Thread(target=workload)
    writer.start()
    try:
        for ddl in [
            "ALTER TABLE orders ADD COLUMN note text DEFAULT 'new column'",
            "ALTER TABLE orders RENAME COLUMN status TO state",
            "ALTER TABLE orders ALTER COLUMN amount TYPE numeric(14,4)",
            "ALTER TABLE orders DROP COLUMN meta",
            "ALTER TABLE orders DROP CONSTRAINT orders_pkey, ADD PRIMARY KEY (id, customer_id)",
        ]:
            time.sleep(0.4)
            env.sql(ddl)
        time.sleep(0.4)
    finally:
        stop.set()
        writer.join()
    events = consume(
        env.bootstrap,
        env.topic("orders"),
        until=lambda msgs: {m.value["after"]["id"] for m in msgs} >= set(inserted),
        timeout=60,
    )
    assert {m.value["after"]["id"] for m in events} == set(inserted)
    schemas = consume(
        env.bootstrap, f"{env.name}.__schema", until=lambda msgs: len(msgs) >= 6, timeout=30
    )
    versions = [m.value for m in schemas if m.key == {"schema": "public", "table": "orders"}]
    assert [v["schema_version"] for v in versions] == [1, 2, 3, 4, 5, 6]
    changes = [v["change"] for v in versions[1:]]
    assert changes[0]["added"] == ["note"]
    assert changes[1]["renamed"] == [{"from": "status", "to": "state"}]
    assert changes[2]["retyped"] == ["amount"]
    assert changes[3]["dropped"] == ["meta"]
    assert changes[4]["key_changed"] is True
    assert versions[-1]["key_columns"] == ["id", "customer_id"]
    amount = next(c for c in versions[3]["columns"] if c["name"] == "amount")
    assert amount["type"] == "numeric(14,4)"
    # Every data event has exactly the columns of the newest schema at or before it.
    by_lsn = sorted(((v["source"]["lsn"], v) for v in versions), key=lambda p: p[0])
    for event in events:
        lsn = event.value["source"]["lsn"]
        schema = [v for at, v in by_lsn if at <= lsn][-1]
        assert set(event.value["after"]) == {c["name"] for c in schema["columns"]}
        assert list(event.key) == schema["key_columns"]
    assert daemon.terminate() == 0


def _big_text(env: Env, doc_id: int) -> str:
    """~100 kB of incompressible text, so PostgreSQL stores it out of line (TOAST)."""
    env.sql(
        (
            "INSERT INTO docs SELECT %s, 'v1',"
            " (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 3200))",
            (doc_id,),
        )
    )
    return str(env.rows(f"SELECT body FROM docs WHERE id = {doc_id}")[0][0])


def _toast_env(env: Env, mode: str) -> None:
    env.sql("CREATE TABLE docs (id int PRIMARY KEY, title text, body text)")
    path = env.connectors / f"{env.name}.yaml"
    connector = yaml.safe_load(path.read_text())
    connector["tables"] = ["public.docs"]
    connector["toast"] = {"mode": mode, "store": str(env.log_path.parent / "{connector}.toast")}
    path.write_text(yaml.safe_dump(connector))


def test_toast_placeholder_mode_lists_the_unavailable_column(env: Env) -> None:
    _toast_env(env, "placeholder")
    env.start()
    body = _big_text(env, 1)
    env.sql("UPDATE docs SET title = 'v2' WHERE id = 1")
    events = consume(env.bootstrap, env.topic("docs"), until=at_least(2))
    inserted, updated = sorted(events, key=lambda m: m.offset)
    assert inserted.value["after"]["body"] == body
    assert updated.value["after"]["body"] == "__debezium_unavailable_value"
    assert updated.value["after"]["title"] == "v2"
    assert updated.value["unavailable_columns"] == ["body"]


def test_toast_fill_mode_publishes_whole_rows_across_a_restart(env: Env) -> None:
    _toast_env(env, "fill")
    daemon = env.start()
    body = _big_text(env, 1)
    env.sql("UPDATE docs SET title = 'v2' WHERE id = 1")
    latest = consume(env.bootstrap, env.topic("docs", compacted=True), until=at_least(2))
    assert [m.value["body"] for m in sorted(latest, key=lambda m: m.offset)] == [body, body]
    assert daemon.terminate() == 0
    env.sql("UPDATE docs SET title = 'v3' WHERE id = 1")
    env.start()
    latest = consume(env.bootstrap, env.topic("docs", compacted=True), until=at_least(3))
    last = max(latest, key=lambda m: m.offset).value
    assert (last["title"], last["body"]) == ("v3", body)
    events = consume(env.bootstrap, env.topic("docs"), until=at_least(3))
    assert all("unavailable_columns" not in m.value for m in events)


def test_logical_messages_are_published_in_order_with_the_data(env: Env) -> None:
    env.start()
    env.sql(
        "INSERT INTO orders VALUES (1, 1, 1.00, 'new', NULL)",
        "SELECT pg_logical_emit_message(true, 'audit', 'order 1 placed')",
    )
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_logical_emit_message(false, 'heartbeat', 'beat')")
    messages = consume(env.bootstrap, f"{env.name}.messages", until=at_least(2))
    by_prefix = {m.key["prefix"]: m.value for m in messages}
    audit = by_prefix["audit"]
    assert audit["op"] == "m"
    assert base64.b64decode(audit["message"]["content"]) == b"order 1 placed"
    assert audit["message"]["transactional"] is True
    assert isinstance(audit["source"]["txId"], int)
    assert by_prefix["heartbeat"]["message"]["transactional"] is False
    order = consume(env.bootstrap, env.topic("orders"), until=at_least(1))[0]
    # In order with the data: the message came after the insert in the same transaction.
    assert audit["source"]["lsn"] > order.value["source"]["lsn"]
    assert audit["source"]["txId"] == order.value["source"]["txId"]


def test_outbox_rows_are_routed_by_aggregate_type(env: Env) -> None:
    env.sql(
        "CREATE TABLE outbox (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
        " aggregatetype text NOT NULL, aggregateid text NOT NULL, type text NOT NULL,"
        " payload jsonb)"
    )
    path = env.connectors / f"{env.name}.yaml"
    connector = yaml.safe_load(path.read_text())
    connector["outbox"] = {"table": "public.outbox"}
    path.write_text(yaml.safe_dump(connector))
    env.start()
    env.sql(
        "INSERT INTO orders VALUES (9, 1, 5.00, 'new', NULL)",
        "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) VALUES"
        " ('Order', '9', 'OrderPlaced', '{\"total\": 5.0}')",
        "DELETE FROM outbox",
    )
    routed = consume(env.bootstrap, "outbox.event.Order", until=at_least(1))
    assert len(routed) == 1
    assert routed[0].key == "9"
    assert routed[0].value == {"total": 5.0}
    admin = AdminClient({"bootstrap.servers": env.bootstrap})
    assert env.topic("outbox") not in admin.list_topics(timeout=10).topics


def test_custom_types_are_resolved_through_the_catalog(env: Env) -> None:
    """Enums, domains, composites and arrays reach the events as JSON, not text."""
    env.sql(
        "CREATE TYPE mood AS ENUM ('sad', 'happy')",
        "CREATE DOMAIN positive AS integer CHECK (VALUE > 0)",
        "CREATE TYPE address AS (street text, number integer)",
        "CREATE TABLE people (id int PRIMARY KEY, mood mood, age positive,"
        " home address, scores integer[], tags text[][])",
    )
    path = env.connectors / f"{env.name}.yaml"
    connector = yaml.safe_load(path.read_text())
    connector["tables"] = ["public.people"]
    path.write_text(yaml.safe_dump(connector))
    env.start()
    env.sql(
        "INSERT INTO people VALUES (1, 'happy', 42, ROW('Main St, \"1\"', 7),"
        " '{1,NULL,3}', '{{a,b},{c,d}}')"
    )
    [event] = consume(env.bootstrap, env.topic("people"), until=at_least(1))
    assert event.value["after"] == {
        "id": 1,
        "mood": "happy",
        "age": 42,
        "home": {"street": 'Main St, "1"', "number": 7},
        "scores": [1, None, 3],
        "tags": [["a", "b"], ["c", "d"]],
    }


def test_inband_schema_changes_reach_every_partition_of_the_retention_topic(env: Env) -> None:
    path = env.connectors / f"{env.name}.yaml"
    connector = yaml.safe_load(path.read_text())
    connector["schema_changes"] = "inband"
    path.write_text(yaml.safe_dump(connector))
    env.start()
    env.sql("INSERT INTO customers VALUES (1, 'Ada', NULL, 1, NULL)")
    env.sql("ALTER TABLE customers ADD COLUMN vip boolean DEFAULT false")
    env.sql("INSERT INTO customers VALUES (2, 'Bo', NULL, 1, NULL)")
    messages = consume(
        env.bootstrap,
        env.topic("customers"),
        until=lambda msgs: sum(1 for m in msgs if m.value["op"] == "s") >= 6,
    )
    schema_events = [m for m in messages if m.value["op"] == "s"]
    # Two versions (the first shape, then vip added), each in all 3 partitions.
    assert sorted((m.value["schema_version"], m.partition) for m in schema_events) == [
        (v, p) for v in (1, 2) for p in range(3)
    ]
    assert all(m.key is None for m in schema_events)
    assert schema_events[-1].value["change"]["added"] in ([], ["vip"])


def _interval_env(env: Env, on_error: str) -> None:
    env.sql("CREATE TABLE spans (id int PRIMARY KEY, span interval)")
    path = env.connectors / f"{env.name}.yaml"
    connector = yaml.safe_load(path.read_text())
    connector["tables"] = ["public.spans"]
    connector["values"] = {"interval_handling": "numeric", "on_conversion_error": on_error}
    path.write_text(yaml.safe_dump(connector))


def test_unconvertible_value_stops_the_connector_naming_table_column_type_and_lsn(
    env: Env,
) -> None:
    """Microseconds cannot hold a month exactly: never a wrong number, a clear stop."""
    _interval_env(env, "stop")
    daemon = env.start()
    env.sql("INSERT INTO spans VALUES (1, '1 mon')")
    assert daemon.process.wait(60) == 1
    failed = daemon.wait_for_log("connector_failed")
    assert failed["error_type"] == "ConversionError"
    for part in ("public.spans", "span", "interval", "LSN"):
        assert part in failed["error"]


def test_unconvertible_value_as_text_when_configured(env: Env) -> None:
    _interval_env(env, "text")
    daemon = env.start()
    env.sql("INSERT INTO spans VALUES (1, '1 mon'), (2, '00:00:01')")
    events = consume(env.bootstrap, env.topic("spans"), until=at_least(2))
    spans = {m.value["after"]["id"]: m.value["after"]["span"] for m in events}
    assert spans == {1: "1 mon", 2: 1_000_000}
    assert daemon.wait_for_log("values_published_as_text", timeout=10)["total"] == 1


def test_one_daemon_streams_several_databases(
    postgres_server: Any, kafka_server: Any, tmp_path: Path
) -> None:
    """Every connector file in the folder runs in the same process, each on its own slot."""
    admin_dsn = postgres_server.dsn()
    names = [unique_name("multi"), unique_name("multi")]
    for name in names:
        create_database(admin_dsn, name)
        with psycopg.connect(postgres_server.dsn(dbname=name), autocommit=True) as conn:
            conn.execute(SCHEMA)
    try:
        connectors = [
            {"name": name, "postgres": {"dsn": postgres_server.dsn(dbname=name)}, "slot": name}
            for name in names
        ]
        config, folder = write_config(tmp_path, kafka_server.bootstrap_servers, connectors)
        daemon = Daemon.start(config, folder, tmp_path / "d.log")
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                started = [e for e in daemon.log_lines() if e.get("event") == "streaming_started"]
                if len(started) == 2:
                    break
                time.sleep(0.2)
            for i, name in enumerate(names):
                with psycopg.connect(postgres_server.dsn(dbname=name), autocommit=True) as conn:
                    conn.execute("INSERT INTO customers VALUES (%s, 'x', NULL, 0, NULL)", (i,))
            for i, name in enumerate(names):
                [event] = consume(
                    kafka_server.bootstrap_servers, f"{name}.public.customers", until=at_least(1)
                )
                assert event.value["after"]["id"] == i
                assert event.value["source"]["name"] == name
            assert daemon.terminate() == 0
        finally:
            daemon.stop_quietly()
    finally:
        for name in names:
            drop_database(admin_dsn, name, slot=name)
