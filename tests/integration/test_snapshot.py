"""Snapshots on a real PostgreSQL and Kafka: initial (exported snapshot) and incremental
(DBLog watermarks), under a concurrent workload and SIGKILLs."""

from __future__ import annotations

import random
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from click.testing import CliRunner

from cdc.cli import cli
from cdc.testing import free_port
from tests.integration.helpers import (
    Daemon,
    Message,
    consume,
    current_wal_lsn,
    read_all,
    records_in,
    scratch_database,
    slot_confirmed_lsn,
    wait_until,
    write_config,
)

SCHEMA = """
CREATE TABLE items (id bigint PRIMARY KEY, qty int NOT NULL, note text, price numeric(12,2));
CREATE TABLE empty_one (id int PRIMARY KEY, v text);
CREATE TABLE nokey (v text, n int);
"""


@dataclass
class SnapEnv:
    name: str
    dsn: str
    admin_dsn: str
    bootstrap: str
    config: Path
    connectors: Path
    log_path: Path
    daemons: list[Daemon]

    def topic(self, table: str, *, compacted: bool = False) -> str:
        return f"{self.name}.public.{table}" + (".latest" if compacted else "")

    def start(self, *, wait: str = "streaming_started", timeout: float = 120) -> Daemon:
        daemon = Daemon.start(self.config, self.connectors, self.log_path)
        self.daemons.append(daemon)
        daemon.wait_for_log(wait, timeout=timeout)
        return daemon

    def table(self, name: str) -> dict[int, tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(f"SELECT id, qty, note, price::text FROM {name}").fetchall()
        return {r[0]: r for r in rows}

    def configure(self, **snapshot: Any) -> None:
        path = self.connectors / f"{self.name}.yaml"
        connector = yaml.safe_load(path.read_text())
        connector["snapshot"] = {**connector.get("snapshot", {}), **snapshot}
        path.write_text(yaml.safe_dump(connector))


@pytest.fixture
def snap(postgres_server: Any, kafka_server: Any, tmp_path: Path) -> Iterator[SnapEnv]:
    admin_dsn = postgres_server.dsn()
    with scratch_database(postgres_server, "snap", SCHEMA) as (name, dsn):
        connector = {
            "name": name,
            "postgres": {"dsn": dsn},
            "slot": name,
            "publication": name,
            "tables": ["public.items", "public.empty_one", "public.nokey"],
            "status_interval_seconds": 1,
        }
        config, connectors = write_config(tmp_path, kafka_server.bootstrap_servers, [connector])
        env = SnapEnv(
            name, dsn, admin_dsn, kafka_server.bootstrap_servers, config, connectors,
            tmp_path / "daemon.log", [],
        )  # fmt: skip
        try:
            yield env
        finally:
            for daemon in env.daemons:
                daemon.stop_quietly()


def _fill(dsn: str, count: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO items SELECT g, g %% 100, 'row ' || g, g / 100.0"
            " FROM generate_series(1, %s) g",
            (count,),
        )


class Workload(threading.Thread):
    """Inserts, updates and deletes random rows of items until stopped."""

    def __init__(self, dsn: str, key_space: int) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.key_space = key_space
        self.stop_event = threading.Event()
        self.deleted: set[int] = set()
        self.transactions = 0

    def run(self) -> None:
        rnd = random.Random(7)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop_event.is_set():
                with conn.transaction():
                    for _ in range(10):
                        key = rnd.randint(1, self.key_space)
                        action = rnd.random()
                        if action < 0.4:
                            conn.execute(
                                "UPDATE items SET qty = qty + 1, note = 'upd' WHERE id = %s",
                                (key,),
                            )
                        elif action < 0.7:
                            conn.execute("DELETE FROM items WHERE id = %s", (key,))
                            self.deleted.add(key)
                        else:
                            conn.execute(
                                "INSERT INTO items VALUES (%s, 1, 'ins', 1.00)"
                                " ON CONFLICT (id) DO UPDATE SET note = 'reins'",
                                (key,),
                            )
                            self.deleted.discard(key)
                self.transactions += 1
                time.sleep(0.002)

    def finish(self) -> None:
        self.stop_event.set()
        self.join()


def _latest(messages: list[Message]) -> dict[int, Any]:
    state: dict[int, Any] = {}
    for m in sorted(messages, key=lambda m: (m.partition, m.offset)):
        state[m.key["id"]] = m.value
    return state


def _matches_table(env: SnapEnv) -> Any:
    table = env.table("items")

    def done(messages: list[Message]) -> bool:
        state = {k: v for k, v in _latest(messages).items() if v is not None}
        if set(state) != set(table):
            return False
        return all((v["id"], v["qty"], v["note"], v["price"]) == table[k] for k, v in state.items())

    return done


def test_initial_snapshot_under_a_workload_matches_the_table(snap: SnapEnv) -> None:
    _fill(snap.dsn, 100_000)
    snap.configure(max_workers=1)
    daemon = snap.start(wait="snapshot_started")  # the slot and its snapshot exist now
    workload = Workload(snap.dsn, 110_000)
    workload.start()
    try:
        daemon.wait_for_log("snapshot_finished", timeout=120)
        during = workload.transactions
        time.sleep(1.0)
    finally:
        workload.finish()
    assert during > 10, "the workload must overlap the snapshot"
    latest = consume(
        snap.bootstrap,
        snap.topic("items", compacted=True),
        until=_matches_table(snap),
        timeout=120,
    )
    state = _latest(latest)
    gone = set(range(1, 100_001)) - set(snap.table("items"))
    # Every key that existed at the snapshot and was deleted since ends in a tombstone.
    assert len(gone) > 10
    assert all(k in state and state[k] is None for k in gone)
    assert daemon.wait_for_log("snapshot_finished")["rows"] == 100_000


def test_snapshot_events_are_reads_marked_first_true_last(snap: SnapEnv) -> None:
    _fill(snap.dsn, 50)
    with psycopg.connect(snap.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO nokey VALUES ('a', 1), ('b', 2)")
    snap.start(wait="snapshot_finished")
    items = consume(snap.bootstrap, snap.topic("items"), until=lambda m: len(m) >= 50)
    nokey = consume(snap.bootstrap, snap.topic("nokey"), until=lambda m: len(m) >= 2)
    events = [m.value for m in items + nokey]
    assert {e["op"] for e in events} == {"r"}
    flags = [e["source"]["snapshot"] for e in events]
    assert flags.count("first") == 1
    assert flags.count("last") == 1
    assert flags.count("true") == 50
    assert all(e["before"] is None for e in events)
    assert {m.key for m in nokey} == {None}
    assert sorted(e["after"]["v"] for e in (m.value for m in nokey)) == ["a", "b"]
    admin_topics = consume(
        snap.bootstrap, snap.topic("items", compacted=True), until=lambda m: len(m) >= 50
    )
    assert len({m.key["id"] for m in admin_topics}) == 50


def test_empty_table_snapshot_then_streaming(snap: SnapEnv) -> None:
    daemon = snap.start(wait="snapshot_finished")
    assert daemon.wait_for_log("snapshot_finished")["rows"] == 0
    with psycopg.connect(snap.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO empty_one VALUES (1, 'x')")
    messages = consume(snap.bootstrap, snap.topic("empty_one"), until=lambda m: len(m) >= 1)
    assert [m.value["op"] for m in messages] == ["c"]


def test_snapshot_mode_never_streams_only(snap: SnapEnv) -> None:
    _fill(snap.dsn, 10)
    snap.configure(mode="never")
    daemon = snap.start()
    with psycopg.connect(snap.dsn, autocommit=True) as conn:
        conn.execute("UPDATE items SET qty = 0 WHERE id = 1")
    end = current_wal_lsn(snap.dsn)
    wait_until(lambda: slot_confirmed_lsn(snap.admin_dsn, snap.name) >= end, what="the update")
    messages = read_all(snap.bootstrap, snap.topic("items"))
    assert [m.value["op"] for m in messages] == ["u"]
    assert not [e for e in daemon.log_lines() if e.get("event") == "snapshot_started"]


def test_incremental_snapshot_resumes_after_sigkill_and_matches_the_table(
    snap: SnapEnv,
) -> None:
    """`cdc snapshot` while streaming; killed twice; resumes from the last finished chunk."""
    snap.configure(mode="never", chunk_rows=500, max_rows_per_second=4_000)
    daemon = snap.start()
    _fill(snap.dsn, 12_000)  # streamed as inserts; the snapshot re-reads them as "r"
    workload = Workload(snap.dsn, 12_000)
    workload.start()
    try:
        result = CliRunner().invoke(
            cli,
            ["snapshot", snap.name, "--table", "public.items", "--config", str(snap.config),
             "--connectors", str(snap.connectors)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        daemon.wait_for_log("snapshot_started")
        for _ in range(2):
            # Killed once this daemon has read a few chunks of the snapshot (its own log
            # lines: each daemon reads only its part of the shared log file).
            daemon.wait_for_log("snapshot_chunk_read", timeout=120, count=3)
            daemon.kill()
            daemon = snap.start()
        daemon.wait_for_log("snapshot_finished", timeout=120)
    finally:
        workload.finish()
    consume(
        snap.bootstrap,
        snap.topic("items", compacted=True),
        until=_matches_table(snap),
        timeout=120,
    )
    lines = daemon.log_lines(all_runs=True)
    resumed = [
        e["resumed_after_chunks"]
        for e in lines
        if e.get("event") == "snapshot_started" and e.get("resumed_after_chunks")
    ]
    assert len(resumed) == 2, "both kills must land while the snapshot runs"
    assert resumed == sorted(resumed)
    reads = [e for e in lines if e.get("event") == "snapshot_chunk_read"]
    chunks = {(e["chunk"]) for e in reads}
    finished = daemon.wait_for_log("snapshot_finished")
    # Each kill re-reads at most the chunk that was in flight.
    assert len(reads) <= finished["chunks"] + 2
    assert len(chunks) == finished["chunks"]
    snapshot_rows = consume(
        snap.bootstrap,
        snap.topic("items"),
        until=lambda m: sum(1 for x in m if x.value["op"] == "r") >= 1,
    )
    assert {m.value["source"]["snapshot"] for m in snapshot_rows if m.value["op"] == "r"} == {
        "incremental"
    }


def _slot_exists(env: SnapEnv) -> bool:
    with psycopg.connect(env.admin_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (env.name,)
        ).fetchone()
    assert row is not None
    return bool(row[0])


def test_initial_only_snapshots_then_stops_and_leaves_no_slot(snap: SnapEnv) -> None:
    _fill(snap.dsn, 300)
    snap.configure(mode="initial_only")
    daemon = Daemon.start(snap.config, snap.connectors, snap.log_path)
    snap.daemons.append(daemon)
    assert daemon.process.wait(120) == 0
    daemon.wait_for_log("initial_only_finished")
    assert not _slot_exists(snap)
    items = consume(snap.bootstrap, snap.topic("items"), until=lambda m: len(m) >= 300)
    assert {m.value["op"] for m in items} == {"r"}


def test_when_needed_snapshots_again_after_the_slot_is_lost(snap: SnapEnv) -> None:
    _fill(snap.dsn, 100)
    snap.configure(mode="when_needed")
    daemon = snap.start(wait="snapshot_finished")
    assert daemon.terminate() == 0
    with psycopg.connect(snap.admin_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (snap.name,))
    with psycopg.connect(snap.dsn, autocommit=True) as conn:  # lost with the slot
        conn.execute("INSERT INTO items VALUES (5000, 1, 'while no slot', 1)")
    snap.log_path.write_text("")
    daemon = snap.start(wait="snapshot_finished")
    daemon.wait_for_log("slot_recreated_snapshot_follows")
    consume(
        snap.bootstrap, snap.topic("items", compacted=True), until=_matches_table(snap), timeout=60
    )


def test_always_snapshots_again_at_every_start(snap: SnapEnv) -> None:
    _fill(snap.dsn, 100)
    snap.configure(mode="always", chunk_rows=30)
    daemon = snap.start(wait="snapshot_finished")
    assert daemon.terminate() == 0
    snap.log_path.write_text("")
    daemon = snap.start(wait="snapshot_finished")
    finished = daemon.wait_for_log("snapshot_finished")
    assert (finished["mode"], finished["rows"]) == ("incremental", 100)


def test_initial_snapshot_killed_midway_resumes_incrementally(snap: SnapEnv) -> None:
    """The exported snapshot dies with the daemon: the rest continues in chunks, nothing lost."""
    _fill(snap.dsn, 300_000)
    with psycopg.connect(snap.dsn, autocommit=True) as conn:
        conn.execute("ANALYZE items")
    snap.configure(max_workers=1, chunk_rows=20_000)
    daemon = snap.start(wait="snapshot_started")
    # Killed once part of the table is published: the interrupted snapshot's progress is
    # then somewhere inside the table.
    wait_until(
        lambda: records_in(snap.bootstrap, snap.topic("items")) > 20_000,
        what="the initial snapshot to publish part of the table",
    )
    daemon.kill()
    with psycopg.connect(snap.dsn, autocommit=True) as conn:
        conn.execute("UPDATE items SET note = 'after kill' WHERE id % 1000 = 0")
        conn.execute("DELETE FROM items WHERE id % 1000 = 1")
    daemon = snap.start()
    daemon.wait_for_log("initial_snapshot_resumed_incrementally")
    daemon.wait_for_log("snapshot_finished", timeout=180)
    consume(
        snap.bootstrap,
        snap.topic("items", compacted=True),
        until=_matches_table(snap),
        timeout=180,
    )
    # It resumed after the last published key, not from the start: no row was read twice
    # (exactly_once: the rows of the interrupted Kafka transaction were never visible).
    reads = Counter(
        m.key["id"] for m in read_all(snap.bootstrap, snap.topic("items")) if m.value["op"] == "r"
    )
    assert [k for k, n in reads.items() if n > 1] == []


def test_tables_above_the_threshold_are_snapshotted_incrementally(snap: SnapEnv) -> None:
    _fill(snap.dsn, 3_000)
    with psycopg.connect(snap.dsn, autocommit=True) as conn:
        conn.execute("ANALYZE items")
        conn.execute("INSERT INTO empty_one VALUES (1, 'small')")
    snap.configure(incremental_above_rows=1_000, chunk_rows=500)
    daemon = snap.start(wait="streaming_started")
    started = [e for e in daemon.log_lines() if e.get("event") == "snapshot_started"]
    exported = [e["tables"] for e in started if "mode" not in e]
    assert exported == [["public.empty_one", "public.nokey"]]
    finished = None
    deadline = time.monotonic() + 60
    while finished is None and time.monotonic() < deadline:
        done = [
            e
            for e in daemon.log_lines()
            if e.get("event") == "snapshot_finished" and e.get("mode") == "incremental"
        ]
        finished = done[0] if done else None
        time.sleep(0.2)
    assert finished is not None
    assert finished["rows"] == 3_000
    consume(
        snap.bootstrap, snap.topic("items", compacted=True), until=_matches_table(snap), timeout=60
    )


def test_signal_table_row_starts_an_incremental_snapshot(snap: SnapEnv) -> None:
    with psycopg.connect(snap.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE cdc_signal (id text PRIMARY KEY, type text, data text)")
    snap.configure(mode="never", signal_table="cdc_signal", chunk_rows=100)
    daemon = snap.start()
    _fill(snap.dsn, 250)
    with psycopg.connect(snap.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO cdc_signal VALUES ('s1', 'execute-snapshot',"
            ' \'{"data-collections": ["public.items"], "type": "incremental"}\')'
        )
    finished = daemon.wait_for_log("snapshot_finished", timeout=60)
    assert finished["rows"] == 250
    messages = consume(
        snap.bootstrap,
        snap.topic("items"),
        until=lambda m: sum(1 for x in m if x.value["op"] == "r") >= 250,
    )
    assert sum(1 for m in messages if m.value["op"] == "r") == 250
    assert snap.topic("cdc_signal") not in {m.topic for m in messages}


@pytest.mark.slow
def test_a_million_row_table_snapshots_completely(snap: SnapEnv) -> None:
    _fill(snap.dsn, 1_000_000)
    with psycopg.connect(snap.dsn, autocommit=True) as conn:
        conn.execute("ANALYZE items")
    daemon = snap.start(wait="snapshot_finished", timeout=600)
    finished = daemon.wait_for_log("snapshot_finished")
    assert finished["rows"] == 1_000_000
    keys = {m.key["id"] for m in consume(
        snap.bootstrap, snap.topic("items", compacted=True), until=lambda m: len(m) >= 1_000_000,
        timeout=600,
    )}  # fmt: skip
    assert keys == set(range(1, 1_000_001))


def test_status_endpoint_and_cli_show_streaming_and_snapshot_progress(snap: SnapEnv) -> None:
    port = free_port()
    daemon_config = yaml.safe_load(snap.config.read_text())
    daemon_config["metrics"] = {"host": "127.0.0.1", "port": port}
    snap.config.write_text(yaml.safe_dump(daemon_config))
    _fill(snap.dsn, 3_000)
    snap.configure(mode="never", chunk_rows=100, max_rows_per_second=1_000)
    daemon = snap.start()
    runner = CliRunner()
    args = ["--config", str(snap.config), "--connectors", str(snap.connectors)]
    assert runner.invoke(cli, ["snapshot", snap.name, *args]).exit_code == 0
    daemon.wait_for_log("snapshot_chunk_read")

    def status_shows_the_snapshot() -> bool:  # the board is refreshed about once a second
        # Tables are snapshotted in name order: empty_one (instantly) before items, which
        # the rows/s cap keeps on the board for seconds.
        shown = runner.invoke(cli, ["status", "--config", str(snap.config)])
        return "snapshot (incremental, incremental): table public.items" in shown.output

    wait_until(status_shows_the_snapshot, what="the status board to show the snapshot")
    result = runner.invoke(cli, ["status", "--config", str(snap.config)])
    assert result.exit_code == 0, result.output
    assert f"{snap.name}: streaming" in result.output
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        assert response.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert b"cdc_commit_to_ack_seconds_bucket" in response.read()
    assert daemon.terminate() == 0


def test_watermarks_as_signal_table_rows_for_servers_without_logical_messages(
    snap: SnapEnv,
) -> None:
    """The PostgreSQL < 14 path, forced here: watermarks are signal-table rows."""
    with psycopg.connect(snap.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE cdc_signal (id text PRIMARY KEY, type text, data text)")
    snap.configure(
        mode="never", signal_table="cdc_signal", watermarks="signal_table", chunk_rows=100
    )
    daemon = snap.start()
    _fill(snap.dsn, 450)
    workload = Workload(snap.dsn, 450)
    workload.start()
    try:
        with psycopg.connect(snap.dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO cdc_signal VALUES ('s1', 'execute-snapshot',"
                ' \'{"data-collections": ["public.items"]}\')'
            )
        finished = daemon.wait_for_log("snapshot_finished", timeout=60)
    finally:
        workload.finish()
    # The workload deletes rows meanwhile, so the table ends after 4 or 5 chunks: every
    # chunk but the last is full, the last is not.
    reads = [e["rows"] for e in daemon.log_lines() if e.get("event") == "snapshot_chunk_read"]
    assert finished["chunks"] == len(reads)
    assert reads[:-1] == [100] * (len(reads) - 1)
    assert reads[-1] < 100
    consume(
        snap.bootstrap, snap.topic("items", compacted=True), until=_matches_table(snap), timeout=60
    )
    with psycopg.connect(snap.dsn, autocommit=True) as conn:
        left = conn.execute("SELECT count(*) FROM cdc_signal WHERE type <> 'execute-snapshot'")
        assert left.fetchone() == (0,)  # watermark rows do not accumulate
