"""``cdc check`` and ``cdc run``'s preflight on a real PostgreSQL and Kafka: a healthy
connector passes, a role without REPLICATION, a missing table and a table whose UPDATEs
would fail are named with their fix, and ``cdc run`` refuses a connector that blocks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import structlog
from click.testing import CliRunner, Result

from cdc.cli import cli
from tests.integration.helpers import Daemon, scratch_database, write_config

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE items (id bigint PRIMARY KEY, note text);
CREATE TABLE events (at timestamptz, body text);
"""


@dataclass
class Env:
    name: str
    dsn: str
    bootstrap: str
    tmp_path: Path

    def connector(self, **extra: Any) -> dict[str, Any]:
        return {
            "name": self.name,
            "postgres": {"dsn": self.dsn},
            "slot": self.name,
            "publication": self.name,
            "tables": ["public.items"],
            **extra,
        }

    def check(self, connector: dict[str, Any], *args: str) -> Result:
        config, connectors = write_config(self.tmp_path, self.bootstrap, [connector])
        result = CliRunner().invoke(
            cli,
            ["check", self.name, "--config", str(config), "--connectors", str(connectors), *args],
        )
        structlog.reset_defaults()  # check configured logging for this process
        return result


@pytest.fixture
def env(postgres_server: Any, kafka_server: Any, tmp_path: Path) -> Iterator[Env]:
    with scratch_database(postgres_server, "check", SCHEMA) as (name, dsn):
        yield Env(name, dsn, kafka_server.bootstrap_servers, tmp_path)


@pytest.fixture
def no_replication_role(pg_conn: psycopg.Connection[Any]) -> Iterator[str]:
    pg_conn.execute("DROP ROLE IF EXISTS cdc_check_norepl")
    pg_conn.execute("CREATE ROLE cdc_check_norepl LOGIN")
    yield "cdc_check_norepl"
    pg_conn.execute("DROP ROLE cdc_check_norepl")


def test_healthy_connector_exits_0_and_creates_nothing(env: Env) -> None:
    result = env.check(env.connector())
    assert result.exit_code == 0, result.output
    assert "BLOCK" not in result.output
    assert "OK    postgres: role 'postgres' is a superuser." in result.output
    assert f"INFO  postgres.slot: replication slot '{env.name}' will be created." in result.output
    assert "OK    kafka: reachable at" in result.output
    # The test broker runs without an authorizer (DescribeAcls: SECURITY_DISABLED).
    assert (
        f"OK    kafka: the cluster has no authorizer: any principal may use transactional id"
        f" 'cdc-{env.name}'." in result.output
    ), result.output
    with psycopg.connect(env.dsn) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s),"
            " (SELECT count(*) FROM pg_publication WHERE pubname = %s)",
            (env.name, env.name),
        ).fetchone()
    assert counts == (0, 0)


def test_role_without_replication_is_refused_with_the_fix(
    no_replication_role: str, env: Env
) -> None:
    # The role fixture comes first, so the database (holding its grant) is dropped first.
    with psycopg.connect(env.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE PUBLICATION {env.name} FOR TABLE items")
        conn.execute(f"GRANT SELECT ON items TO {no_replication_role}")
    dsn = env.dsn.replace("postgres@", f"{no_replication_role}@")
    result = env.check(env.connector(postgres={"dsn": dsn}, create_publication=False))
    assert result.exit_code == 1, result.output
    assert (
        f"BLOCK postgres: role '{no_replication_role}' has neither REPLICATION nor superuser:"
        f" it cannot stream. Fix: ALTER ROLE <user> REPLICATION (here: ALTER ROLE"
        f' "{no_replication_role}" REPLICATION)'
    ) in result.output


def test_table_without_key_or_full_identity_is_reported(env: Env) -> None:
    result = env.check(env.connector(tables=["public.items", "public.events"]), "--json")
    assert result.exit_code == 0, result.output
    findings = [orjson.loads(line) for line in result.output.splitlines()]
    events = [f for f in findings if f["subject"] == "public.events"]
    assert [f["severity"] for f in events] == ["warn"]
    assert "rejects its UPDATE and DELETE" in events[0]["message"]
    assert events[0]["fix"] == (
        "add a primary key, or ALTER TABLE public.events REPLICA IDENTITY FULL"
    )


def test_missing_table_blocks(env: Env) -> None:
    result = env.check(env.connector(tables=["public.items", "public.nope"]))
    assert result.exit_code == 1, result.output
    assert (
        "BLOCK public.nope: table does not exist. Fix: fix `tables` in the connector file,"
        " or create the table"
    ) in result.output


def test_run_refuses_to_start_a_connector_whose_check_blocks(env: Env) -> None:
    connector = env.connector(tables=["public.items", "public.nope"])
    config, connectors = write_config(env.tmp_path, env.bootstrap, [connector])
    daemon = Daemon.start(config, connectors, env.tmp_path / "daemon.log")
    failed = daemon.failure()
    assert f"preflight refused to start connector '{env.name}'" in failed["error"]
    assert "public.nope: table does not exist" in failed["error"]
    events = [line.get("event") for line in daemon.log_lines()]
    assert "connector_restarting" not in events
    assert "slot_created" not in events
    # The no-key table is not configured here: no warning, and nothing was written.
    with psycopg.connect(env.dsn) as conn:
        slots = conn.execute(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (env.name,)
        ).fetchone()
    assert slots == (0,)
