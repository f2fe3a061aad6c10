"""Delivery under trouble, on the real services: each test is a way the log could lose,
repeat, stall or corrupt changes, tried as a user would meet it."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from cdc.cli import cli
from cdc.testing.kafka import KafkaServer, start_kafka
from tests.integration.helpers import (
    Daemon,
    current_wal_lsn,
    read_all,
    records_in,
    scratch_database,
    slot_confirmed_lsn,
    wait_until,
    write_config,
)

SCHEMA = """
CREATE TABLE orders (id bigint PRIMARY KEY, note text);
CREATE TABLE outbox (id text PRIMARY KEY, aggregatetype text, aggregateid text, type text,
                     payload jsonb);
CREATE TABLE cdc_signal (id text PRIMARY KEY, type text, data text);
CREATE TABLE docs (id int PRIMARY KEY, n int, body text);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
"""


@dataclass
class Setup:
    """One test's database, daemon files and daemons (stopped at the end)."""

    name: str
    dsn: str
    admin_dsn: str
    bootstrap: str
    tmp: Path
    connector: dict[str, Any]
    daemons: list[Daemon] = field(default_factory=list)
    daemon_config: dict[str, Any] = field(default_factory=dict)

    @property
    def slot(self) -> str:
        return str(self.connector["slot"])

    def write(self) -> tuple[Path, Path]:
        return write_config(self.tmp, self.bootstrap, [self.connector], **self.daemon_config)

    def start(self, *, wait: bool = True) -> Daemon:
        config, connectors = self.write()
        daemon = Daemon.start(config, connectors, self.tmp / "daemon.log")
        self.daemons.append(daemon)
        if wait:
            daemon.wait_for_log("streaming_started")
        return daemon

    def sql(self, statement: str, params: Any = None) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(statement, params)

    def topic(self, table: str, *, compacted: bool = False) -> str:
        return f"{self.name}.public.{table}" + (".latest" if compacted else "")

    def caught_up(self, timeout: float = 120.0) -> None:
        """Wait until the slot is confirmed past everything written so far."""
        end = current_wal_lsn(self.dsn)
        wait_until(
            lambda: slot_confirmed_lsn(self.admin_dsn, self.slot) >= end,
            timeout=timeout,
            what="the daemon to confirm everything written",
        )


@pytest.fixture
def setup(postgres_server: Any, kafka_server: Any, tmp_path: Path) -> Iterator[Setup]:
    with scratch_database(postgres_server, "dl", SCHEMA) as (name, dsn):
        connector = {
            "name": name,
            "postgres": {"dsn": dsn},
            "slot": name,
            "publication": name,
            "tables": ["public.orders"],
            "status_interval_seconds": 1,
        }
        env = Setup(name, dsn, postgres_server.dsn(), kafka_server.bootstrap_servers, tmp_path,
                    connector)  # fmt: skip
        try:
            yield env
        finally:
            for daemon in env.daemons:
                daemon.stop_quietly()


def _ids(messages: list[Any]) -> Counter[int]:
    return Counter(m.key["id"] for m in messages if m.key is not None)


def _walsender(dsn: str, slot: str) -> tuple[int, Any] | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT r.pid, r.reply_time FROM pg_stat_replication r"
            " JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = %s",
            (slot,),
        ).fetchone()
    return None if row is None else (int(row[0]), row[1])


def _pause(kafka: KafkaServer, sig: signal.Signals) -> None:
    process = kafka._process
    assert process is not None
    os.killpg(process.pid, sig)


# --- wide rows while Kafka hangs -------------------------------------------------------------


@pytest.mark.slow
def test_wide_rows_while_the_broker_hangs_wait_keep_the_slot_and_lose_nothing(
    postgres_server: Any, tmp_path: Path
) -> None:
    """Regression: 8 KB rows while the broker hung (SIGSTOP) filled librdkafka's byte
    limit; BufferError crashed the connector and most rows never reached the topic."""
    kafka = start_kafka(tmp_path / "kafka")
    try:
        with scratch_database(postgres_server, "wide", SCHEMA) as (name, dsn):
            with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
                # A short timeout makes a silent client fail fast: we must keep talking.
                conn.execute(f"ALTER DATABASE \"{name}\" SET wal_sender_timeout = '3s'")
            env = Setup(name, dsn, postgres_server.dsn(), kafka.bootstrap_servers, tmp_path, {
                "name": name, "postgres": {"dsn": dsn}, "slot": name, "publication": name,
                "tables": ["public.orders"], "max_in_flight_events": 100_000,
            })  # fmt: skip
            # The byte limit, not our record count, is what fills up here.
            env.daemon_config = {"kafka_properties": {"queue.buffering.max.kbytes": 1024}}
            daemon = env.start()
            try:
                insert = (
                    "INSERT INTO orders SELECT g, repeat(md5(g::text), 256)"  # 8 KB each
                    " FROM generate_series(%s::bigint, %s::bigint) g"
                )
                env.sql(insert, (1, 100))
                env.caught_up()
                walsender = _walsender(dsn, name)
                assert walsender is not None
                _pause(kafka, signal.SIGSTOP)
                try:
                    for first in range(101, 3101, 100):
                        env.sql(insert, (first, first + 99))
                    daemon.wait_for_log("kafka_backpressure_started", timeout=60)
                    # Our status updates keep coming while we wait: PostgreSQL sees at
                    # least four replies, past its 3 s timeout, from the same walsender.
                    replies: set[tuple[int, Any] | None] = set()

                    def replied_often() -> bool:
                        replies.add(_walsender(dsn, name))
                        return len(replies) >= 5

                    wait_until(replied_often, timeout=60, what="status updates while Kafka hangs")
                    assert replies == {r for r in replies if r is not None}
                    assert {r[0] for r in replies if r is not None} == {walsender[0]}
                finally:
                    _pause(kafka, signal.SIGCONT)
                env.caught_up()
                assert daemon.process.poll() is None
                seen = _ids(read_all(kafka.bootstrap_servers, env.topic("orders")))
                assert seen == Counter(range(1, 3101))
                events = [e.get("event") for e in daemon.log_lines()]
                assert "connector_crashed" not in events
                assert "connector_restarting" not in events
            finally:
                daemon.stop_quietly()
    finally:
        kafka.stop()


# --- TRUNCATE of tables that are routed, not captured ------------------------------------------


def test_truncating_the_outbox_and_signal_tables_does_not_stall_the_slot(setup: Setup) -> None:
    """Regression: the TRUNCATE made a record for a topic that is never created; the
    connector restarted on it forever and the slot never moved."""
    setup.connector["outbox"] = {"table": "public.outbox"}
    setup.connector["snapshot"] = {"mode": "never", "signal_table": "public.cdc_signal"}
    daemon = setup.start()
    setup.sql("TRUNCATE outbox, cdc_signal")
    setup.sql("TRUNCATE outbox")
    setup.sql("INSERT INTO orders VALUES (1, 'after the truncates')")
    setup.caught_up()
    assert _ids(read_all(setup.bootstrap, setup.topic("orders"))) == Counter({1: 1})
    assert "connector_restarting" not in [e.get("event") for e in daemon.log_lines()]


# --- fencing ----------------------------------------------------------------------------


def test_a_second_instance_fences_the_first_and_nothing_is_lost_or_repeated(
    setup: Setup,
) -> None:
    """Two daemons with the same connector: the second's init_transactions fences the
    first, which stops without confirming anything more; the second takes the slot."""
    first = setup.start()
    setup.sql("INSERT INTO orders SELECT g, 'a' FROM generate_series(1, 100) g")
    setup.caught_up()
    second = setup.start(wait=False)
    second.wait_for_log("connector_restarting", timeout=60)  # the slot is still taken
    setup.sql("INSERT INTO orders SELECT g, 'b' FROM generate_series(101, 200) g")
    assert first.process.wait(60) == 1
    failed = first.wait_for_log("connector_failed")
    assert failed["error_type"] == "FencedError"
    second.wait_for_log("streaming_started", timeout=60)
    setup.sql("INSERT INTO orders SELECT g, 'c' FROM generate_series(201, 300) g")
    setup.caught_up()
    assert _ids(read_all(setup.bootstrap, setup.topic("orders"))) == Counter(range(1, 301))


# --- SIGTERM mid-transaction ------------------------------------------------------------


def test_sigterm_mid_transaction_at_least_once_finishes_it_and_repeats_nothing(
    setup: Setup,
) -> None:
    """Regression: a stop mid-transaction confirmed nothing of it, so the restart sent
    the whole transaction again although the docs promise no duplicate after SIGTERM."""
    setup.connector["delivery"] = "at_least_once"
    daemon = setup.start()
    setup.sql("INSERT INTO orders SELECT g, 'x' FROM generate_series(1, 100000) g")
    # Stop while the daemon reads the transaction: once its first records are in Kafka.
    wait_until(
        lambda: records_in(setup.bootstrap, setup.topic("orders")) > 0,
        what="the transaction's first records",
    )
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(60) == 0
    events = [e.get("event") for e in daemon.log_lines()]
    assert "stop_after_transaction" in events
    assert "stopped_mid_transaction" not in events
    setup.start()
    setup.caught_up()
    assert _ids(read_all(setup.bootstrap, setup.topic("orders"))) == Counter(range(1, 100001))


# --- TOAST fill from an incremental snapshot ----------------------------------------------------


def test_rows_read_by_an_incremental_snapshot_fill_later_unchanged_toast_values(
    setup: Setup,
) -> None:
    """Regression: a row read by an incremental snapshot was not remembered, so its first
    update that left the TOASTed column alone published the placeholder."""
    setup.connector.update(
        tables=["public.docs"],
        snapshot={"mode": "never"},
        toast={"mode": "fill", "store": str(setup.tmp / "{connector}.toast")},
    )
    body = "".join(f"{i:05d}-" for i in range(2000))  # 12 KB, stored out of line
    setup.sql("INSERT INTO docs SELECT g, 0, %s FROM generate_series(1, 3) g", (body,))
    daemon = setup.start()
    config, connectors = setup.write()
    result = CliRunner().invoke(
        cli, ["snapshot", setup.name, "--table", "public.docs", "--config", str(config),
              "--connectors", str(connectors)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    daemon.wait_for_log("snapshot_finished", timeout=60)
    setup.sql("UPDATE docs SET n = 1")
    setup.caught_up()
    events = [m.value for m in read_all(setup.bootstrap, setup.topic("docs"))]
    updates = [e for e in events if e["op"] == "u"]
    assert len(updates) == 3
    assert all(e["after"]["body"] == body for e in updates)
    assert all("unavailable_columns" not in e for e in updates)


def test_sigkill_with_toast_fill_never_publishes_a_value_of_a_later_transaction(
    setup: Setup,
) -> None:
    """Regression: the fill store was committed ahead of what Kafka held, so an event
    replayed after a crash was filled from a later transaction."""
    setup.connector.update(
        tables=["public.docs"],
        delivery="at_least_once",  # replays after a crash: the case the store must survive
        toast={"mode": "fill", "store": str(setup.tmp / "{connector}.toast")},
    )
    setup.daemon_config = {"kafka_properties": {}}
    first = "".join(f"{i:05d}a" for i in range(2000))
    second = "".join(f"{i:05d}b" for i in range(2000))
    daemon = setup.start()
    setup.sql("INSERT INTO docs VALUES (1, 0, %s)", (first,))
    setup.caught_up()
    for n in range(1, 40):
        setup.sql("UPDATE docs SET n = %s" + (", body = %s" if n == 20 else ""),
                  (n, second) if n == 20 else (n,))  # fmt: skip
        if n == 25:
            daemon.kill()
            daemon = setup.start()
    setup.caught_up()
    for message in read_all(setup.bootstrap, setup.topic("docs")):
        after = message.value["after"]
        expected = first if after["n"] < 20 else second
        assert after["body"] == expected, f"update n={after['n']} filled from another commit"
