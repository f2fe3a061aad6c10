"""Mistakes only a person can fix stop the connector with the fix, and are never retried.

Each case is tried as an operator would make it, against the real PostgreSQL and Kafka:
the daemon must exit 1 with one ``connector_failed`` line naming the setting or the SQL
that fixes it, and no ``connector_restarting`` line (a retry loop would hide the message
behind a warning every few seconds).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.helpers import Daemon, scratch_database, unique_name, write_config

SCHEMA = "CREATE TABLE items (id bigint PRIMARY KEY, note text); INSERT INTO items VALUES (1, 'a')"


@dataclass
class Case:
    """An operator's mistake: how to make it, and what the error must say."""

    connector: Callable[[str, str], dict[str, Any]]  # (dsn, name) -> connector file
    fix: str  # a piece of the message that tells what to do
    daemon: dict[str, Any]  # write_config keyword arguments


def _connector(dsn: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "postgres": {"dsn": dsn}, "tables": ["public.items"], **extra}


def _as_role(role: str) -> Callable[[str, str], dict[str, Any]]:
    def make(dsn: str, name: str) -> dict[str, Any]:
        return _connector(dsn.replace("postgres@", f"{role}@"), name, create_publication=False)

    return make


CASES = {
    "replication factor above the brokers": Case(
        _connector, "topics.replication_factor", {"replication_factor": 3}
    ),
    "database that does not exist": Case(
        lambda dsn, name: _connector(dsn.rsplit("/", 1)[0] + "/no_such_db", name),
        "does not exist",
        {},
    ),
    "role without REPLICATION": Case(_as_role("cdc_norepl"), "ALTER ROLE <user> REPLICATION", {}),
    "role without SELECT on a published table": Case(_as_role("cdc_noselect"), "GRANT SELECT", {}),
    "DSN that is not a connection string": Case(
        lambda _dsn, name: _connector("host=127.0.0.1 port", name),
        "postgres.dsn is not a connection string",
        {},
    ),
    "unknown librdkafka property": Case(
        _connector, "kafka.properties", {"kafka_properties": {"linger.mss": 5}}
    ),
}


@pytest.fixture
def roles(pg_conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A role without REPLICATION, and one with it but without SELECT on the tables."""
    pg_conn.execute("DROP ROLE IF EXISTS cdc_norepl")
    pg_conn.execute("DROP ROLE IF EXISTS cdc_noselect")
    pg_conn.execute("CREATE ROLE cdc_norepl LOGIN")
    pg_conn.execute("CREATE ROLE cdc_noselect LOGIN REPLICATION")
    yield
    pg_conn.execute("DROP ROLE cdc_norepl")
    pg_conn.execute("DROP ROLE cdc_noselect")


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_mistake_only_a_person_can_fix_stops_with_the_fix_and_is_not_retried(
    case: Case, roles: None, postgres_server: Any, kafka_server: Any, tmp_path: Path
) -> None:
    with scratch_database(postgres_server, "err", SCHEMA) as (name, dsn):
        with psycopg.connect(dsn, autocommit=True) as conn:
            # The DBA's publication, for the roles that may not create one.
            conn.execute(f'CREATE PUBLICATION "cdc_{name}" FOR TABLE items')
        config, connectors = write_config(
            tmp_path, kafka_server.bootstrap_servers, [case.connector(dsn, name)], **case.daemon
        )
        daemon = Daemon.start(config, connectors, tmp_path / "d.log")
        failed = daemon.failure()
        assert case.fix in failed["error"]
        events = [e.get("event") for e in daemon.log_lines()]
        assert "connector_restarting" not in events
        assert "connector_crashed" not in events


def test_the_metrics_port_in_use_is_one_line_naming_the_setting(
    kafka_server: Any, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        connector = _connector("postgresql://127.0.0.1/x", unique_name("m"))
        config, connectors = write_config(
            tmp_path, kafka_server.bootstrap_servers, [connector], metrics_port=port
        )
        result = subprocess.run(
            [sys.executable, "-m", "cdc", "run", "--config", str(config), "--connectors",
             str(connectors), "--log-format", "json"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("cdc:")]
    assert "metrics.port" in line
    assert str(port) in line
