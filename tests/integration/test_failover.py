"""Multi-host DSNs on real servers: libpq's target_session_attrs picks the writable server
for every connection of the connector; a DSN that could land on a standby is refused.

PostgreSQL 15, the suite's server. Failover slots (17+) with a real standby and a
promotion: tests/integration/test_failover_slots.py, on PostgreSQL 18.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc.testing import free_port
from cdc.testing.postgres import PostgresServer, start_postgres
from tests.integration.helpers import (
    Daemon,
    at_least,
    connector_config,
    consume,
    scratch_database,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE items (id bigint PRIMARY KEY, name text);"


@pytest.fixture(scope="module")
def read_only_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A server libpq sees as not writable (default_transaction_read_only, as a standby
    reports it), without building a standby."""
    server = start_postgres(
        tmp_path_factory.mktemp("pg-ro"), settings={"default_transaction_read_only": "on"}
    )
    try:
        yield server
    finally:
        server.stop()


def _started_or_restarting(daemon: Daemon) -> dict[str, Any]:
    """The first streaming_started or connector_restarting line (whichever comes first)."""
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = [
            e
            for e in daemon.log_lines()
            if e.get("event") in ("streaming_started", "connector_restarting")
        ]
        return bool(found) or daemon.process.poll() is not None

    wait_until(seen, timeout=120, what="streaming_started or connector_restarting")
    assert found, daemon.log_lines()
    return found[0]


def test_several_hosts_with_read_write_stream_from_the_writable_one(
    postgres_server: Any, read_only_postgres: PostgresServer, kafka_server: Any, tmp_path: Path
) -> None:
    """First a host that is down, then a read-only server, then the primary."""
    if not isinstance(postgres_server, PostgresServer):
        pytest.skip("needs the local PostgreSQL (its port)")
    with scratch_database(postgres_server, "mh", SCHEMA) as (name, dsn):
        # The same database on the read-only server: libpq does not try the next host
        # after a refused startup ("database does not exist"), only after a read-only one.
        with psycopg.connect(
            read_only_postgres.dsn(),
            autocommit=True,
            options="-c default_transaction_read_only=off",
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO items VALUES (1, 'snapshot')")
        ports = f"{free_port()},{read_only_postgres.port},{postgres_server.port}"
        multi = (
            f"host=127.0.0.1,127.0.0.1,127.0.0.1 port={ports} dbname={name} user=postgres"
            " target_session_attrs=read-write connect_timeout=5"
        )
        config, connectors = write_config(
            tmp_path,
            kafka_server.bootstrap_servers,
            [connector_config(name, multi, "public.items")],
        )
        daemon = Daemon.start(config, connectors, tmp_path / "d.log")
        try:
            first = _started_or_restarting(daemon)
            assert first["event"] == "streaming_started", first["error"]
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("INSERT INTO items VALUES (2, 'streamed')")
                here = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name IN (%s, %s)",
                    (f"cdc:{name}", f"cdc:{name}:setup"),
                ).fetchone()
            events = consume(
                kafka_server.bootstrap_servers, f"{name}.public.items", until=at_least(2)
            )
            # Keys 1 and 2 may sit on different partitions: only per-key order is defined.
            assert sorted((e.key["id"], e.value["op"]) for e in events) == [(1, "r"), (2, "c")]
            assert here == (2,)
        finally:
            daemon.stop_quietly()
            with psycopg.connect(
                read_only_postgres.dsn(),
                autocommit=True,
                options="-c default_transaction_read_only=off",
            ) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_several_hosts_without_read_write_stop_the_connector_with_the_fix(
    postgres_server: Any, kafka_server: Any, tmp_path: Path
) -> None:
    if not isinstance(postgres_server, PostgresServer):
        pytest.skip("needs the local PostgreSQL (its port)")
    with scratch_database(postgres_server, "mhno", SCHEMA) as (name, _):
        multi = (
            f"host=127.0.0.1,127.0.0.1 port={postgres_server.port},{postgres_server.port}"
            f" dbname={name} user=postgres"
        )
        config, connectors = write_config(
            tmp_path,
            kafka_server.bootstrap_servers,
            [connector_config(name, multi, "public.items")],
        )
        daemon = Daemon.start(config, connectors, tmp_path / "d.log")
        failed = daemon.failure()
        assert "target_session_attrs=read-write" in failed["error"]
        assert "connector_restarting" not in [e.get("event") for e in daemon.log_lines()]
