"""`cdc replay` on a real PostgreSQL and a real Kafka: the log rebuilds an equal database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from tests.integration.helpers import (
    Daemon,
    create_database,
    current_wal_lsn,
    drop_database,
    scratch_database,
    slot_confirmed_lsn,
    unique_name,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE customers (
    id bigint PRIMARY KEY, name text NOT NULL, email text,
    balance numeric(12,2), updated_at timestamptz
);
CREATE TABLE orders (
    id bigint PRIMARY KEY, customer_id bigint, amount numeric(10,2), status text, meta jsonb,
    body text
);
ALTER TABLE orders ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE TABLE audit_log (at timestamptz, message text);
ALTER TABLE audit_log REPLICA IDENTITY FULL;
INSERT INTO customers SELECT g, 'name ' || g, NULL, g * 1.25, '2026-01-01 00:00:00+00'
  FROM generate_series(1, 50) g;
"""

SESSION = (
    "SET DateStyle = ISO; SET TimeZone = 'UTC'; SET IntervalStyle = postgres;"
    " SET bytea_output = hex; SET extra_float_digits = 3"
)


@dataclass
class Env:
    name: str
    dsn: str
    target_dsn: str
    slot: str
    config: Path
    connectors: Path
    log_path: Path
    daemons: list[Daemon] = field(default_factory=list)

    def sql(self, *statements: str | tuple[str, tuple[Any, ...]]) -> None:
        with psycopg.connect(self.dsn, autocommit=False) as conn:
            for statement in statements:
                if isinstance(statement, tuple):
                    conn.execute(statement[0], statement[1])
                else:
                    conn.execute(statement)
            conn.commit()

    def start(self) -> Daemon:
        daemon = Daemon.start(self.config, self.connectors, self.log_path)
        self.daemons.append(daemon)
        daemon.wait_for_log("streaming_started")
        return daemon

    def caught_up(self) -> None:
        """Wait until the daemon has made everything written so far durable in Kafka."""
        lsn = current_wal_lsn(self.dsn)
        wait_until(lambda: slot_confirmed_lsn(self.dsn, self.slot) >= lsn, what="slot catch-up")

    def replay(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [
                sys.executable, "-m", "cdc", "replay", self.name,
                "--target-dsn", self.target_dsn,
                "--config", str(self.config), "--connectors", str(self.connectors),
                *args,
            ],
            capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return result

    def start_replay(self, *args: str) -> subprocess.Popen[bytes]:
        log = (self.log_path.parent / "replay.log").open("ab")
        process = subprocess.Popen(
            [
                sys.executable, "-m", "cdc", "replay", self.name,
                "--target-dsn", self.target_dsn,
                "--config", str(self.config), "--connectors", str(self.connectors),
                *args,
            ],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        log.close()
        return process

    def replay_log(self) -> str:
        return (self.log_path.parent / "replay.log").read_text(errors="replace")


def table_text(dsn: str, table: str, order: str) -> list[str]:
    """Every row as PostgreSQL's text form, in a stable order."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SESSION)
        return [r[0] for r in conn.execute(f"SELECT t::text FROM {table} t ORDER BY {order}")]


def target_has(dsn: str, table: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        return bool(row and row[0])


def assert_equal(env: Env, table: str, order: str) -> None:
    assert table_text(env.target_dsn, table, order) == table_text(env.dsn, table, order)


@contextmanager
def replay_env(
    postgres_server: Any,
    kafka_server: Any,
    tmp_path: Path,
    *,
    prefix: str,
    schema: str,
    tables: list[str],
) -> Iterator[Env]:
    """A legacy database with ``schema``, its connector files, and an empty target
    database; the daemons the test started are stopped and the target dropped after."""
    admin_dsn = postgres_server.dsn()
    with scratch_database(postgres_server, prefix, schema) as (name, dsn):
        target = unique_name("target")
        create_database(admin_dsn, target)
        connector = {"name": name, "postgres": {"dsn": dsn}, "slot": name, "publication": name,
                     "tables": tables, "status_interval_seconds": 1}  # fmt: skip
        config, connectors = write_config(tmp_path, kafka_server.bootstrap_servers, [connector])
        environment = Env(
            name, dsn, postgres_server.dsn(dbname=target), name, config, connectors,
            tmp_path / "daemon.log",
        )  # fmt: skip
        try:
            yield environment
        finally:
            for daemon in environment.daemons:
                daemon.stop_quietly()
            drop_database(admin_dsn, target)


@pytest.fixture
def env(postgres_server: Any, kafka_server: Any, tmp_path: Path) -> Iterator[Env]:
    tables = ["public.customers", "public.orders", "public.audit_log"]
    with replay_env(
        postgres_server, kafka_server, tmp_path, prefix="rp", schema=SCHEMA, tables=tables
    ) as environment:
        yield environment


WORKLOAD: list[str] = [
    "INSERT INTO orders VALUES (1, 1, 10.00, 'new', '{\"b\": 1,  \"a\": [1, 2]}', NULL)",
    "INSERT INTO orders SELECT g, g % 7, g * 0.5, 'new', NULL, repeat('x', 5000) || g"
    " FROM generate_series(2, 400) g",
    "UPDATE customers SET email = 'c' || id || '@example.com' WHERE id % 3 = 0",
    "UPDATE orders SET status = 'paid' WHERE id % 5 = 0",  # body unchanged: TOAST
    "DELETE FROM orders WHERE id % 11 = 0",
    "UPDATE customers SET id = 1000 WHERE id = 7",  # key change
    "INSERT INTO audit_log VALUES ('2026-02-02 10:00:00+00', 'one'),"
    " ('2026-02-02 10:00:00+00', 'one'), (NULL, 'two')",
    "DELETE FROM audit_log WHERE message = 'two'",
    "UPDATE audit_log SET message = 'uno' WHERE message = 'one'",
]


def test_a_replay_builds_a_database_equal_to_the_legacy_one(env: Env) -> None:
    env.start()
    for statement in WORKLOAD:
        env.sql(statement)
    env.caught_up()
    result = env.replay()
    assert "replayed" in result.stdout
    assert_equal(env, "customers", "id")
    assert_equal(env, "orders", "id")
    assert_equal(env, "audit_log", "t::text")


def test_a_second_one_shot_replay_continues_where_the_first_stopped(env: Env) -> None:
    env.start()
    env.sql("INSERT INTO audit_log SELECT now(), 'first ' || g FROM generate_series(1, 100) g")
    env.caught_up()
    env.replay()
    env.sql(
        "INSERT INTO audit_log SELECT now(), 'second ' || g FROM generate_series(1, 50) g",
        "UPDATE customers SET name = 'renamed' WHERE id < 10",
    )
    env.caught_up()
    result = env.replay()
    # Append-only keyless rows would show twice if anything were applied again.
    assert_equal(env, "audit_log", "t::text")
    assert_equal(env, "customers", "id")
    assert "replayed 59 changes" in result.stdout, result.stdout


def test_an_unchanged_toast_value_keeps_the_targets_value(env: Env) -> None:
    env.start()
    env.sql("INSERT INTO orders VALUES (1, 1, 1.00, 'new', NULL, repeat('y', 100000))")
    env.caught_up()
    env.replay()
    env.sql("UPDATE orders SET status = 'paid' WHERE id = 1")
    env.caught_up()
    env.replay()
    assert_equal(env, "orders", "id")


def test_truncate_empties_the_target_table(env: Env) -> None:
    env.start()
    env.sql("INSERT INTO orders SELECT g, 1, 1, 'x', NULL, NULL FROM generate_series(1, 20) g")
    env.sql("TRUNCATE orders")
    env.sql("INSERT INTO orders VALUES (99, 1, 1, 'after', NULL, NULL)")
    env.caught_up()
    env.replay()
    assert_equal(env, "orders", "id")


def test_schema_changes_mid_stream_are_applied_in_order_with_the_data(env: Env) -> None:
    env.start()
    env.sql("INSERT INTO orders VALUES (1, 1, 1.50, 'new', NULL, NULL)")
    env.sql(
        "ALTER TABLE orders ADD COLUMN note text",
        "INSERT INTO orders VALUES (2, 1, 2.50, 'new', NULL, NULL, 'hello')",
    )
    env.sql("ALTER TABLE orders RENAME COLUMN status TO state")
    env.sql("UPDATE orders SET state = 'paid' WHERE id = 1")
    env.sql("ALTER TABLE orders DROP COLUMN meta")
    env.sql("INSERT INTO orders VALUES (3, 1, 3.50, 'x', NULL, 'n3')")
    env.sql("ALTER TABLE orders ALTER COLUMN amount TYPE numeric(14,4)")
    env.sql("UPDATE orders SET amount = 1.2345 WHERE id = 2")
    env.sql(
        "ALTER TABLE orders DROP CONSTRAINT orders_pkey",
        "ALTER TABLE orders ADD PRIMARY KEY (id, customer_id)",
    )
    env.sql("INSERT INTO orders VALUES (3, 2, 4.00, 'y', NULL, 'n4')")
    env.caught_up()
    env.replay()
    assert_equal(env, "orders", "id, customer_id")


def test_until_rebuilds_the_database_as_of_a_past_commit(env: Env) -> None:
    env.start()
    env.sql("INSERT INTO orders VALUES (1, 1, 1.00, 'before', NULL, NULL)")
    env.caught_up()
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        conn.execute(SESSION)
        before = table_text(env.dsn, "orders", "id")
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        until = row[0]
    env.sql("UPDATE orders SET status = 'the bug' WHERE id = 1")
    env.sql("INSERT INTO orders VALUES (2, 1, 2.00, 'later', NULL, NULL)")
    env.caught_up()
    env.replay("--until", until)
    assert table_text(env.target_dsn, "orders", "id") == before
    # The rest of the log still applies afterwards.
    env.replay()
    assert_equal(env, "orders", "id")


def test_a_replay_killed_midway_and_rerun_applies_every_change_once(env: Env) -> None:
    env.start()
    for _ in range(10):
        env.sql("INSERT INTO audit_log SELECT now(), 'row ' || g FROM generate_series(1, 2000) g")
    env.caught_up()
    process = env.start_replay("--batch", "500", "--log-level", "info")
    # Kill it once it has committed some batches.
    wait_until(lambda: _applied(env.target_dsn, env.name) >= 2000, what="some batches applied")
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    env.replay()
    assert_equal(env, "audit_log", "t::text")


def test_follow_keeps_applying_until_sigterm(env: Env) -> None:
    env.start()
    process = env.start_replay("--follow")
    try:
        env.sql("INSERT INTO customers VALUES (500, 'live', NULL, 1, NULL)")
        wait_until(
            lambda: (
                target_has(env.target_dsn, "public.customers")
                and table_text(env.target_dsn, "customers", "id")
                == table_text(env.dsn, "customers", "id")
            ),
            what="the live change in the target",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, env.replay_log()


def _applied(dsn: str, connector: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        try:
            row = conn.execute(
                "SELECT changes FROM cdc_replay.progress WHERE connector = %s", (connector,)
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return 0 if row is None else int(row[0])


@pytest.fixture
def golden_env(postgres_server: Any, kafka_server: Any, tmp_path: Path) -> Iterator[Env]:
    from tests.integration.test_types import ROWS
    from tests.integration.test_types import SCHEMA as GOLDEN_SCHEMA

    with replay_env(
        postgres_server, kafka_server, tmp_path,
        prefix="rpg", schema=GOLDEN_SCHEMA + ROWS, tables=["public.golden"],
    ) as environment:  # fmt: skip
        yield environment


def test_every_golden_type_round_trips_through_snapshot_stream_and_replay(
    golden_env: Env,
) -> None:
    """The golden type table (every type of docs/types.md: NaN, infinities, arrays with
    NULLs, bounds and dimensions, timetz offsets, intervals, bit widths, ranges, hstore,
    json whitespace, enums, domains, composites), snapshotted and then streamed (a key
    change re-sends every row), replayed into an empty database with no type defined
    there: every column's text equals the legacy one."""
    env = golden_env
    env.start()
    env.sql("UPDATE golden SET id = id + 100 WHERE id % 2 = 0")
    env.caught_up()
    env.replay()
    assert_equal(env, "golden", "id")


def test_a_random_workload_with_a_daemon_sigkill_replays_equal(env: Env) -> None:
    """Inserts, updates, key changes and deletes at random, the daemon SIGKILLed in the
    middle and restarted: the log it left, replayed, equals the legacy tables."""
    import random

    rnd = random.Random(7)
    daemon = env.start()

    def workload(rounds: int) -> None:
        for _ in range(rounds):
            statements: list[str] = []
            for _ in range(rnd.randint(1, 20)):
                k = rnd.randint(1, 300)
                roll = rnd.random()
                if roll < 0.5:
                    statements.append(
                        f"INSERT INTO orders VALUES ({k}, {k % 9}, {rnd.randint(0, 9999) / 100},"
                        f" 'new', '{{\"n\": {k}}}', NULL) ON CONFLICT (id) DO UPDATE"
                        " SET amount = EXCLUDED.amount + 1"
                    )
                elif roll < 0.7:
                    statements.append(f"UPDATE orders SET status = 's{k}' WHERE id % 17 = {k % 17}")
                elif roll < 0.8:
                    statements.append(
                        f"UPDATE orders SET id = id + 1000 WHERE id = {k}"
                        " AND NOT EXISTS (SELECT 1 FROM orders WHERE id = "
                        f"{k} + 1000)"
                    )
                else:
                    statements.append(f"DELETE FROM orders WHERE id = {k}")
            env.sql(*statements)

    workload(60)
    daemon.kill()
    workload(30)
    env.start()
    workload(30)
    env.caught_up()
    env.replay()
    assert_equal(env, "orders", "id")
    assert_equal(env, "customers", "id")


def test_a_transactional_replay_commits_whole_source_transactions(env: Env) -> None:
    """With transaction metadata on, --transactional applies each source transaction
    in one target transaction, even across tables and with a small batch size."""
    import yaml

    connector_file = env.connectors / f"{env.name}.yaml"
    connector = yaml.safe_load(connector_file.read_text())
    connector["provide_transaction_metadata"] = True
    connector_file.write_text(yaml.safe_dump(connector))
    env.start()
    for i in range(5):
        env.sql(
            f"INSERT INTO orders SELECT g, 1, 1, 'tx{i}', NULL, NULL"
            f" FROM generate_series({i * 100 + 1}, {i * 100 + 100}) g",
            f"UPDATE customers SET name = 'tx{i}' WHERE id <= 10",
        )
    env.caught_up()
    env.replay("--transactional", "--batch", "7")
    assert_equal(env, "orders", "id")
    assert_equal(env, "customers", "id")
    with psycopg.connect(env.target_dsn, autocommit=True) as conn:
        # Every target transaction ended on a source transaction boundary: the stored
        # position is a whole transaction's last change.
        row = conn.execute(
            "SELECT changes FROM cdc_replay.progress WHERE connector = %s", (env.name,)
        ).fetchone()
    assert row is not None


def test_a_transactional_replay_needs_transaction_metadata(env: Env) -> None:
    env.start()
    env.sql("INSERT INTO orders VALUES (1, 1, 1, 'x', NULL, NULL)")
    env.caught_up()
    result = env.replay("--transactional", check=False)
    assert result.returncode == 2
    assert "provide_transaction_metadata" in result.stderr


def test_a_replay_declared_in_the_connector_file_follows_in_cdc_run(env: Env) -> None:
    import yaml

    connector_file = env.connectors / f"{env.name}.yaml"
    connector = yaml.safe_load(connector_file.read_text())
    connector["replays"] = [{"name": "svc", "target_dsn": env.target_dsn}]
    connector_file.write_text(yaml.safe_dump(connector))
    env.start()
    env.sql("INSERT INTO customers VALUES (600, 'followed', NULL, 1, NULL)")
    wait_until(
        lambda: (
            target_has(env.target_dsn, "public.customers")
            and table_text(env.target_dsn, "customers", "id")
            == table_text(env.dsn, "customers", "id")
        ),
        what="the declared replay to apply the change",
    )


def test_a_replay_from_the_compacted_topics_continues_on_the_retention_topics_exactly(
    env: Env,
) -> None:
    """--from-compacted loads the latest row per key, then the retention topics continue
    right after each compacted partition's last change: nothing missed (the final rows
    equal), nothing applied twice (only the keyless table's changes, which have no
    compacted topic, and the later changes are applied from the retention topics)."""
    env.start()
    env.sql("INSERT INTO orders SELECT g, 1, g, 'new', NULL, NULL FROM generate_series(1, 100) g")
    env.sql("UPDATE orders SET status = 'paid' WHERE id <= 60")
    env.sql("DELETE FROM orders WHERE id > 90")
    env.sql("INSERT INTO audit_log VALUES (NULL, 'a'), (NULL, 'b'), (NULL, 'c')")
    env.caught_up()
    first = env.replay("--from-compacted")
    assert "replayed 3 changes" in first.stdout, first.stdout + first.stderr
    assert_equal(env, "orders", "id")
    assert_equal(env, "customers", "id")
    assert_equal(env, "audit_log", "t::text")
    env.sql("UPDATE orders SET status = 'shipped' WHERE id <= 5")
    env.caught_up()
    second = env.replay()
    assert "replayed 5 changes" in second.stdout, second.stdout
    assert_equal(env, "orders", "id")


def test_a_key_declared_in_another_order_than_its_columns_is_one_key_everywhere(
    postgres_server: Any, kafka_server: Any, tmp_path: Path
) -> None:
    """PRIMARY KEY (b, a) on columns a, b: snapshot rows and streamed changes get the same
    key bytes, so the compacted topic holds one record per row, never two."""
    from tests.integration.helpers import read_all

    schema = (
        "CREATE TABLE pairs (a int, b int, v text, PRIMARY KEY (b, a));"
        "INSERT INTO pairs VALUES (1, 2, 'snap')"
    )
    with scratch_database(postgres_server, "rpk", schema) as (name, dsn):
        connector = {"name": name, "postgres": {"dsn": dsn}, "slot": name, "publication": name,
                     "tables": ["public.pairs"]}  # fmt: skip
        config, connectors = write_config(tmp_path, kafka_server.bootstrap_servers, [connector])
        daemon = Daemon.start(config, connectors, tmp_path / "daemon.log")
        try:
            daemon.wait_for_log("streaming_started")
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("UPDATE pairs SET v = 'streamed'")
                lsn = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
            assert lsn is not None
            wait_until(lambda: slot_confirmed_lsn(dsn, name) >= int(lsn[0]), what="catch-up")
            records = read_all(kafka_server.bootstrap_servers, f"{name}.public.pairs.latest")
            assert {orjson.dumps(m.key) for m in records} == {b'{"a":1,"b":2}'}
        finally:
            daemon.stop_quietly()


def test_verify_passes_after_a_replay_and_names_a_key_changed_by_hand(env: Env) -> None:
    env.start()
    for statement in WORKLOAD:
        env.sql(statement)
    env.caught_up()
    env.replay()
    files = ["--config", str(env.config), "--connectors", str(env.connectors)]
    verify = [sys.executable, "-m", "cdc", "verify", env.name, "--target-dsn", env.target_dsn]
    passed = subprocess.run([*verify, *files], capture_output=True, text=True, check=False)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    with psycopg.connect(env.target_dsn, autocommit=True) as conn:
        conn.execute("UPDATE orders SET status = 'tampered' WHERE id = 2")
    failed = subprocess.run([*verify, *files], capture_output=True, text=True, check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert '{"id":"2"}: status' in failed.stdout, failed.stdout


def test_an_enum_label_added_without_a_new_schema_version_is_added_to_the_target(
    postgres_server: Any, kafka_server: Any, tmp_path: Path
) -> None:
    """ALTER TYPE ... ADD VALUE changes no table shape, so no schema event lists the new
    label; the replay adds it to the target's type before the rows that use it."""
    schema = (
        "CREATE TYPE mood AS ENUM ('sad', 'ok');"
        "CREATE TABLE feelings (id int PRIMARY KEY, m mood);"
        "INSERT INTO feelings VALUES (1, 'sad')"
    )
    with replay_env(
        postgres_server, kafka_server, tmp_path,
        prefix="rpe", schema=schema, tables=["public.feelings"],
    ) as env:  # fmt: skip
        env.start()
        with psycopg.connect(env.dsn, autocommit=True) as conn:
            conn.execute("ALTER TYPE mood ADD VALUE 'happy'")
        env.sql("INSERT INTO feelings VALUES (2, 'happy')", "UPDATE feelings SET m = 'ok'"
                " WHERE id = 1")  # fmt: skip
        env.caught_up()
        env.replay()
        assert_equal(env, "feelings", "id")


def test_a_connector_with_in_band_schema_events_replays_equal(env: Env) -> None:
    """schema_changes: inband puts the schema events into the retention topics' partitions
    themselves; the replay reads them there, in order with the data."""
    import yaml

    connector_file = env.connectors / f"{env.name}.yaml"
    connector = yaml.safe_load(connector_file.read_text())
    connector["schema_changes"] = "inband"
    connector_file.write_text(yaml.safe_dump(connector))
    env.start()
    env.sql("INSERT INTO orders VALUES (1, 1, 1.50, 'new', NULL, NULL)")
    env.sql("ALTER TABLE orders ADD COLUMN note text", "UPDATE orders SET note = 'n' WHERE id = 1")
    env.caught_up()
    env.replay()
    assert_equal(env, "orders", "id")
    assert_equal(env, "customers", "id")
