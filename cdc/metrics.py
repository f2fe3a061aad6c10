"""Prometheus metrics of the daemon: one definition point, labelled by connector.

The pipeline keeps plain integer counters on its hot path and publishes them here in its
periodic housekeeping, so no per-event call reaches prometheus-client.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BACKPRESSURE_SECONDS",
    "COMMIT_TO_ACK_SECONDS",
    "CONFIRMED_LSN",
    "CONNECTOR_RESTARTS",
    "CONNECTOR_UP",
    "DEAD_LETTER_RECORDS",
    "EVENTS",
    "FLEET_CONNECTORS_OWNED",
    "FLEET_REBALANCES",
    "IN_FLIGHT_RECORDS",
    "KAFKA_COMMIT_SECONDS",
    "LAG_BYTES",
    "LAST_COMMIT_TIMESTAMP",
    "RECEIVED_LSN",
    "SLOT_RETAINED_WAL_BYTES",
    "SLOT_SAFE_WAL_SIZE_BYTES",
    "SLOT_WAL_STATUS",
    "SNAPSHOT_ROWS",
    "TEXT_FALLBACKS",
    "TOAST_UNAVAILABLE",
    "TRANSACTIONS",
]

EVENTS = Counter("cdc_events", "Row change events published, by operation", ["connector", "op"])
TRANSACTIONS = Counter("cdc_transactions", "Source transactions fully read", ["connector"])
CONFIRMED_LSN = Gauge(
    "cdc_confirmed_lsn", "LSN confirmed to the slot (all before it is in Kafka)", ["connector"]
)
RECEIVED_LSN = Gauge("cdc_received_lsn", "Highest WAL position received", ["connector"])
LAG_BYTES = Gauge(
    "cdc_lag_bytes",
    "WAL bytes between the server's position and the confirmed LSN (WAL the slot holds back)",
    ["connector"],
)
IN_FLIGHT_RECORDS = Gauge(
    "cdc_in_flight_records", "Kafka records produced and not yet acknowledged", ["connector"]
)
BACKPRESSURE_SECONDS = Counter(
    "cdc_backpressure_seconds",
    "Time reading was paused because Kafka acknowledged too slowly",
    ["connector"],
)
LAST_COMMIT_TIMESTAMP = Gauge(
    "cdc_last_commit_timestamp_seconds",
    "Commit time of the newest source transaction read",
    ["connector"],
)
CONNECTOR_UP = Gauge("cdc_connector_up", "1 while the connector streams", ["connector"])
CONNECTOR_RESTARTS = Counter(
    "cdc_connector_restarts", "Restarts after a retryable error", ["connector"]
)
COMMIT_TO_ACK_SECONDS = Histogram(
    "cdc_commit_to_ack_seconds",
    "From a source transaction's commit to the moment Kafka has acknowledged all of its"
    " records and those of every earlier transaction (so its LSN can be confirmed)",
    ["connector"],
    buckets=(
        0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
        0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0,
    ),
)  # fmt: skip
KAFKA_COMMIT_SECONDS = Histogram(
    "cdc_kafka_commit_seconds",
    "exactly_once: how long commit_transaction() took (flushing what is in flight, then"
    " Kafka's transaction commit): the floor of the commit-to-consumer latency, and the"
    " time the stream waits on each commit",
    ["connector"],
    buckets=(
        0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
        0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
    ),
)  # fmt: skip
SNAPSHOT_ROWS = Counter(
    "cdc_snapshot_rows",
    "Rows published by snapshots (op r), by kind: initial (exported) or incremental",
    ["connector", "kind"],
)
TEXT_FALLBACKS = Counter(
    "cdc_conversion_text_fallbacks",
    "Values published as their PostgreSQL text form because they could not be converted"
    " (values.on_conversion_error: text)",
    ["connector"],
)
TOAST_UNAVAILABLE = Counter(
    "cdc_toast_unavailable_values",
    "Unchanged TOASTed values published as the placeholder (not sent, not remembered)",
    ["connector"],
)
SLOT_RETAINED_WAL_BYTES = Gauge(
    "cdc_slot_retained_wal_bytes",
    "WAL the server keeps for the connector's slot (pg_current_wal_lsn() - restart_lsn),"
    " read every wal_retention.check_interval_seconds",
    ["connector"],
)
SLOT_SAFE_WAL_SIZE_BYTES = Gauge(
    "cdc_slot_safe_wal_size_bytes",
    "WAL that can still be written before PostgreSQL invalidates the slot"
    " (pg_replication_slots.safe_wal_size; absent when max_slot_wal_keep_size is unlimited)",
    ["connector"],
)
SLOT_WAL_STATUS = Gauge(
    "cdc_slot_wal_status",
    "1 for the slot's current pg_replication_slots.wal_status (reserved, extended,"
    " unreserved, lost), 0 for the others (PostgreSQL 13+)",
    ["connector", "status"],
)
DEAD_LETTER_RECORDS = Counter(
    "cdc_dead_letter_records",
    "Records Kafka refused for good that went to the dead-letter topic instead"
    " (dead_letter.enabled), by reason: too_large or refused",
    ["connector", "reason"],
)
FLEET_CONNECTORS_OWNED = Gauge(
    "cdc_fleet_connectors_owned",
    "Connectors the fleet's group assigns to this instance (fleet.group)",
    ["instance"],
)
FLEET_REBALANCES = Counter(
    "cdc_fleet_rebalances",
    "The fleet group's callbacks on this instance, by kind: assigned, revoked (handed over"
    " cleanly), lost (session expired: abandoned)",
    ["instance", "kind"],
)
