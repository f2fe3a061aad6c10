"""Prometheus metrics of the daemon: one definition point, labelled by connector.

The pipeline keeps plain integer counters on its hot path and publishes them here in its
periodic housekeeping, so no per-event call reaches prometheus-client.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

__all__ = [
    "BACKPRESSURE_SECONDS",
    "CONFIRMED_LSN",
    "CONNECTOR_RESTARTS",
    "CONNECTOR_UP",
    "EVENTS",
    "IN_FLIGHT_RECORDS",
    "LAG_BYTES",
    "LAST_COMMIT_TIMESTAMP",
    "RECEIVED_LSN",
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
