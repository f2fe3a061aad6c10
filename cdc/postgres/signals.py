"""Edge: asks a running connector for an incremental snapshot, through the WAL itself.

The one job: write an ``execute-snapshot`` signal where the connector will read it, in
order with the data: a logical decoding message (``pg_logical_emit_message``, PostgreSQL
14+), or a row in the connector's signal table (Debezium's format) where one is
configured. No Kafka, no daemon RPC: the signal reaches every instance reading the slot,
even one started later.
"""

from __future__ import annotations

import uuid

import orjson
import psycopg
from psycopg import sql

from cdc.errors import SourceError
from cdc.postgres.errors import source_error
from cdc.snapshots.window import SIGNAL_PREFIX

__all__ = ["request_snapshot", "snapshot_signal"]

MIN_LOGICAL_MESSAGE_VERSION = 140000  # pgoutput passes logical messages from PostgreSQL 14


def snapshot_signal(tables: list[str]) -> bytes:
    """Debezium's ``execute-snapshot`` signal; an empty list means every published table."""
    return orjson.dumps(
        {"type": "execute-snapshot", "data": {"data-collections": tables, "type": "incremental"}}
    )


def request_snapshot(dsn: str, tables: list[str], *, signal_table: str | None) -> str:
    """Write the signal; returns how ("logical message at <lsn>" or "signal table row")."""
    signal = snapshot_signal(tables)
    try:
        with psycopg.connect(dsn, autocommit=True, application_name="cdc:snapshot") as conn:
            row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
            assert row is not None
            if signal_table is not None:
                schema, _, table = signal_table.partition(".")
                data = orjson.dumps(orjson.loads(signal)["data"]).decode()
                conn.execute(
                    sql.SQL("INSERT INTO {} (id, type, data) VALUES (%s, %s, %s)").format(
                        sql.Identifier(schema, table)
                    ),
                    (uuid.uuid4().hex, "execute-snapshot", data),
                )
                return f"row in signal table {signal_table}"
            if row[0] < MIN_LOGICAL_MESSAGE_VERSION:
                raise SourceError(
                    "PostgreSQL before 14 cannot carry the signal as a logical message:"
                    " configure snapshot.signal_table for this connector"
                )
            lsn = conn.execute(
                "SELECT pg_logical_emit_message(true, %s, %s)::text",
                (SIGNAL_PREFIX, signal.decode()),
            ).fetchone()
    except psycopg.Error as exc:
        raise source_error("writing the snapshot signal", exc) from exc
    assert lsn is not None
    return f"logical message at {lsn[0]}"
