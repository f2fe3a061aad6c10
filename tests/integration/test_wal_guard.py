"""The guard of the legacy server's disk on a real PostgreSQL: the connector's own slot
retains WAL, the daemon says so (log and metric), then stops with the DBA's options."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.helpers import Daemon, scratch_database, write_config

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
SCHEMA = """
CREATE TABLE orders (id bigint PRIMARY KEY, status text);
CREATE TABLE filler (t text);
"""
# About 1 KiB of incompressible text per row (TOAST would compress a repeat()).
FILLER = (
    "INSERT INTO filler SELECT (SELECT string_agg(md5(random()::text || g || s), '')"
    " FROM generate_series(1, 32) s) FROM generate_series(1, %s) g"
)


def _metric(port: int, name: str, connector: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf'^{name}{{connector="{re.escape(connector)}"}} (\S+)$', text, re.M)
    assert match is not None, f"{name} not published"
    return float(match[1])


def test_retained_wal_warns_then_stops_the_connector(
    postgres_server: Any, kafka_server: Any, tmp_path: Path
) -> None:
    """An open transaction pins the slot's restart_lsn (the decoder needs it from its
    start), so WAL written meanwhile stays retained: past warn_bytes the daemon warns and
    publishes the size, past stop_bytes the connector stops naming the slot and the fix."""
    with scratch_database(postgres_server, "walg", SCHEMA) as (name, dsn):
        connector = {
            "name": name,
            "postgres": {"dsn": dsn},
            "slot": name,
            "publication": name,
            "tables": ["public.orders"],
            "snapshot": {"mode": "never"},
            "wal_retention": {
                "warn_bytes": "1 MiB",
                "stop_bytes": "16 MiB",
                "check_interval_seconds": 0.2,
            },
        }
        config, connectors = write_config(
            tmp_path, kafka_server.bootstrap_servers, [connector], metrics_port=0
        )
        daemon = Daemon.start(config, connectors, tmp_path / "daemon.log")
        pin = psycopg.connect(dsn)
        try:
            daemon.wait_for_log("streaming_started")
            port = int(daemon.wait_for_log("metrics_listening")["port"])
            pin.execute("INSERT INTO filler VALUES ('pin')")  # an xid, left open
            with psycopg.connect(dsn, autocommit=True) as writer:
                writer.execute(FILLER, (2 * 1024,))
                warned = daemon.wait_for_log("slot_wal_retained")
                assert warned["level"] == "warning"
                assert warned["slot"] == name
                assert warned["retained_bytes"] >= MiB
                assert warned["retained"].endswith("MiB")
                assert _metric(port, "cdc_slot_retained_wal_bytes", name) >= MiB

                writer.execute(FILLER, (20 * 1024,))
                failed = daemon.wait_for_log("connector_failed")
            assert daemon.process.wait(60) == 1
            error = failed["error"]
            assert f"replication slot {name!r} retains" in error
            assert "wal_retention.stop_bytes (16777216 bytes, 16.0 MiB)" in error
            assert f"SELECT pg_drop_replication_slot('{name}')" in error
            assert not [e for e in daemon.log_lines() if e.get("event") == "connector_restarting"]
        finally:
            pin.rollback()
            pin.close()
            daemon.stop_quietly()
