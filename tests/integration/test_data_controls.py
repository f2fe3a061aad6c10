"""Data controls on a real PostgreSQL 15 and Kafka: column lists, row filters and masks
hold in the initial snapshot and in the stream, on both topics."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.helpers import (
    Daemon,
    Message,
    consume,
    scratch_database,
    write_config,
)

pytestmark = pytest.mark.integration

KEY = "data-controls-test-key-0123456789"

# customers: REPLICA IDENTITY FULL, so its row filter may use any column, but a column
# list cannot be pushed down (PostgreSQL would refuse its UPDATEs): ssn is dropped by the
# encoder. orders: the default identity (its key), so the row filter on the key and the
# column list are both pushed into the publication.
SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, email text, ssn text, country text, phone text);
ALTER TABLE customers REPLICA IDENTITY FULL;
CREATE TABLE orders (id int PRIMARY KEY, amount int, secret text);
INSERT INTO customers VALUES
  (1, 'ada@example.org', '111-11-1111', 'UK', '+44 1'),
  (2, 'bob@example.org', '222-22-2222', 'XX', '+99 2');
INSERT INTO orders VALUES (2, 20, 'hidden-2'), (3, 30, 'hidden-3');
"""

SECRETS = [b"111-11-1111", b"333-33-3333", b"hidden-", b"@example.org", b"+44", b"+99"]


def hashed(text: str) -> str:
    return hmac.new(KEY.encode(), text.encode(), hashlib.sha256).hexdigest()


def connector(name: str, dsn: str, key_file: Path, **options: Any) -> dict[str, Any]:
    return {
        "name": name,
        "postgres": {"dsn": dsn},
        "slot": name,
        "publication": name,
        "tables": ["public.customers", "public.orders"],
        "masking_key": f"${{file:{key_file}}}",
        "status_interval_seconds": 1,
        "delivery": "at_least_once",
        "table_options": options
        or {
            "customers": {
                "columns": {"exclude": ["ssn"]},
                "where": "country <> 'XX'",
                "mask": {"email": "hash", "phone": "redact"},
            },
            "orders": {"columns": {"include": ["id", "amount"]}, "where": "id % 2 = 0"},
        },
    }


def values(messages: list[Message]) -> list[dict[str, Any]]:
    return [m.value for m in messages if m.value is not None]


def test_columns_filters_and_masks_hold_in_snapshot_and_stream(
    postgres_server: Any, kafka_server: Any, tmp_path: Path
) -> None:
    """An excluded column is in neither topic, filtered rows are in neither, a masked
    value hashes the same in the snapshot and the stream and never appears in clear."""
    key_file = tmp_path / "mask_key"
    key_file.write_text(KEY + "\n")
    bootstrap = kafka_server.bootstrap_servers
    with scratch_database(postgres_server, "dctl", SCHEMA) as (name, dsn):
        config, connectors = write_config(tmp_path, bootstrap, [connector(name, dsn, key_file)])
        daemon = Daemon.start(config, connectors, tmp_path / "daemon.log")
        try:
            daemon.wait_for_log("streaming_started", timeout=120)
            with psycopg.connect(dsn, autocommit=True) as conn:
                # ada's email again under another id: the same hash as in the snapshot.
                conn.execute(
                    "INSERT INTO customers VALUES"
                    " (3, 'ada@example.org', '333-33-3333', 'FR', '+44 3'),"
                    " (4, 'eve@example.org', '444', 'XX', '+99 4')"
                )
                conn.execute("UPDATE customers SET phone = '+44 9' WHERE id = 1")
                conn.execute("INSERT INTO orders VALUES (4, 40, 'hidden-4'), (5, 50, 'hidden-5')")
                conn.execute("UPDATE orders SET amount = 41, secret = 'hidden-x' WHERE id = 4")
                conn.execute("INSERT INTO customers VALUES (9, 'end', 'x', 'UK', 'x')")
                conn.execute("INSERT INTO orders VALUES (10, 100, 'hidden-end')")
                published = conn.execute(
                    "SELECT tablename, attnames::text[], rowfilter FROM pg_publication_tables"
                    " WHERE pubname = %s ORDER BY 1",
                    (name,),
                ).fetchall()
            customers = consume(
                bootstrap,
                f"{name}.public.customers",
                until=lambda ms: any(m.key == {"id": 9} for m in ms),
            )
            orders = consume(
                bootstrap,
                f"{name}.public.orders",
                until=lambda ms: any(m.key == {"id": 10} for m in ms),
            )
            latest = consume(
                bootstrap,
                f"{name}.public.customers.latest",
                until=lambda ms: any(m.key == {"id": 9} for m in ms),
            )
            latest_orders = consume(
                bootstrap,
                f"{name}.public.orders.latest",
                until=lambda ms: any(m.key == {"id": 10} for m in ms),
            )
        finally:
            daemon.stop_quietly()

    # Pushed down where PostgreSQL allows it: orders' column list and filter, customers'
    # filter (its column list is not: REPLICA IDENTITY FULL).
    assert [(t, list(c), f) for t, c, f in published] == [
        ("customers", ["id", "email", "ssn", "country", "phone"], "(country <> 'XX'::text)"),
        ("orders", ["id", "amount"], "((id % 2) = 0)"),
    ]

    events = values(customers)
    by_id_op = {(e["after"] or e["before"])["id"]: e for e in events if e["op"] in "rc"}
    assert sorted(by_id_op) == [1, 3, 9]  # 2 and 4 are filtered out (country XX)
    snapshot_ada, streamed_ada = by_id_op[1]["after"], by_id_op[3]["after"]
    assert by_id_op[1]["op"] == "r"
    assert by_id_op[3]["op"] == "c"
    assert hashed("ada@example.org") == snapshot_ada["email"] == streamed_ada["email"]
    assert {"id", "email", "country", "phone"} == set(snapshot_ada) == set(streamed_ada)
    assert snapshot_ada["phone"] == "__cdc_redacted"
    update = next(e for e in events if e["op"] == "u")
    assert {"id", "email", "country", "phone"} == set(update["before"]) == set(update["after"])
    assert hashed("ada@example.org") == update["before"]["email"]
    assert sorted({m.key["id"] for m in latest}) == [1, 3, 9]

    order_events = values(orders)
    assert {2, 4, 10} == {(e["after"] or e["before"])["id"] for e in order_events}
    assert all(set(e["after"]) == {"id", "amount"} for e in order_events)
    assert {2, 4, 10} == {m.key["id"] for m in latest_orders}

    for message in [*customers, *orders, *latest, *latest_orders]:
        for secret in SECRETS:
            assert secret not in (message.raw_value or b""), (message, secret)


def test_a_row_filter_postgresql_would_refuse_for_updates_stops_the_connector(
    postgres_server: Any, kafka_server: Any, tmp_path: Path
) -> None:
    """A filter on a column outside the replica identity (orders publishes UPDATE and
    DELETE) stops the connector naming the table, and leaves the publication as it was."""
    key_file = tmp_path / "mask_key"
    key_file.write_text(KEY)
    options = {"orders": {"where": "amount > 10"}}
    with scratch_database(postgres_server, "dctl", SCHEMA) as (name, dsn):
        config, connectors = write_config(
            tmp_path, kafka_server.bootstrap_servers, [connector(name, dsn, key_file, **options)]
        )
        daemon = Daemon.start(config, connectors, tmp_path / "daemon.log")
        try:
            failed = daemon.wait_for_log("connector_failed", timeout=120)
        finally:
            daemon.stop_quietly()
        with psycopg.connect(dsn, autocommit=True) as conn:
            rowfilter = conn.execute(
                "SELECT rowfilter FROM pg_publication_tables WHERE pubname = %s"
                " AND tablename = 'orders'",
                (name,),
            ).fetchone()
            # The application's writes still work.
            conn.execute("UPDATE orders SET amount = 21 WHERE id = 2")
    assert "table public.orders" in failed["error"]
    assert "replica identity" in failed["error"]
    assert rowfilter == (None,)


def test_an_unknown_column_stops_the_connector_naming_table_and_column(
    postgres_server: Any, kafka_server: Any, tmp_path: Path
) -> None:
    key_file = tmp_path / "mask_key"
    key_file.write_text(KEY)
    options = {"customers": {"columns": {"exclude": ["sssn"]}}}
    with scratch_database(postgres_server, "dctl", SCHEMA) as (name, dsn):
        config, connectors = write_config(
            tmp_path, kafka_server.bootstrap_servers, [connector(name, dsn, key_file, **options)]
        )
        daemon = Daemon.start(config, connectors, tmp_path / "daemon.log")
        try:
            failed = daemon.wait_for_log("connector_failed", timeout=120)
        finally:
            daemon.stop_quietly()
    assert "table public.customers has no column 'sssn'" in failed["error"]
    assert "table_options.public.customers.columns.exclude" in failed["error"]
