"""What one connector reports about itself: metrics, the /status board, log summaries.

The streaming loop keeps plain counters (events by operation, transactions, LSNs) and
never calls prometheus-client per event. About once a second, with each status update,
``ConnectorReport.publish`` turns what changed since the last call into Prometheus
increments and refreshes the connector's entry on the status board; every
``PROGRESS_LOG_INTERVAL_S`` the pipeline also logs a ``stream_progress`` summary. At
set-up, ``report_tables`` warns about tables whose changes cannot be keyed or captured.

It must not touch the replication stream, Kafka (beyond reading how many records are in
flight) or the slot, and must not log per event: every line here is a state change or a
periodic summary.
"""

from __future__ import annotations

from typing import Any

from cdc import metrics
from cdc.envelope import EnvelopeEncoder
from cdc.kafka.sink import KafkaSink
from cdc.lsn import format_lsn
from cdc.postgres.source import TableInfo
from cdc.protocol.values import ConversionStats
from cdc.snapshots.incremental import IncrementalDriver
from cdc.status import BOARD

__all__ = ["PROGRESS_LOG_INTERVAL_S", "ConnectorReport", "report_tables"]

# Periodic structured summary (never a line per row).
PROGRESS_LOG_INTERVAL_S = 60.0


class ConnectorReport:
    """The "published so far" marks of one connector's counters, and their publishing.

    Prometheus counters only go up by increments: this remembers what each counter of
    the streaming loop was when last published, so each call adds only the difference.
    """

    __slots__ = (
        "_events",
        "_events_published",
        "_fallbacks_published",
        "_labels",
        "_last_progress",
        "_log",
        "_stats",
        "_transactions_published",
        "_unavailable_published",
        "encoder",
    )

    def __init__(
        self,
        connector: str,
        *,
        events: dict[str, int],
        stats: ConversionStats,
        log: Any,
        now: float,
    ) -> None:
        """Args:
        connector: the connector's name (the ``connector`` label and board entry).
        events: the streaming loop's live event counters by operation; read, never
            written here.
        stats: the value conversions' shared counters (text fallbacks).
        log: the connector's bound logger (``connector`` and ``slot`` already bound).
        now: ``time.monotonic()`` at start: the first summary comes an interval later.
        """
        self._labels = {"connector": connector}
        self._events = events
        self._events_published = dict.fromkeys(events, 0)
        self._transactions_published = 0
        self._stats = stats
        self._fallbacks_published = 0
        self._unavailable_published = 0
        self._log = log
        self._last_progress = now
        # The stream's encoder, once streaming: it counts TOAST values it could not fill.
        self.encoder: EnvelopeEncoder | None = None

    def publish(
        self,
        *,
        transactions: int,
        confirmed: int,
        received: int,
        server_wal_end: int,
        last_commit_ts_us: int,
        sink: KafkaSink | None,
        driver: IncrementalDriver | None,
    ) -> None:
        """Bring the Prometheus metrics and the status board up to date.

        Args:
            transactions: transactions streamed so far.
            confirmed: the LSN confirmable to the slot.
            received: the highest WAL position received.
            server_wal_end: the server's WAL end, as last reported.
            last_commit_ts_us: the Unix time (µs) of the last commit streamed, or 0.
            sink: the Kafka sink, once made (for the records in flight).
            driver: the incremental snapshot driver, once streaming.
        """
        labels = self._labels
        events = self._events
        for op, count in events.items():
            delta = count - self._events_published[op]
            if delta:
                metrics.EVENTS.labels(connector=labels["connector"], op=op).inc(delta)
                self._events_published[op] = count
        delta = transactions - self._transactions_published
        if delta:
            metrics.TRANSACTIONS.labels(**labels).inc(delta)
            self._transactions_published = transactions
        metrics.CONFIRMED_LSN.labels(**labels).set(confirmed)
        metrics.RECEIVED_LSN.labels(**labels).set(received)
        metrics.LAG_BYTES.labels(**labels).set(max(0, server_wal_end - confirmed))
        if sink is not None:
            metrics.IN_FLIGHT_RECORDS.labels(**labels).set(len(sink))
        if last_commit_ts_us:
            metrics.LAST_COMMIT_TIMESTAMP.labels(**labels).set(last_commit_ts_us / 1e6)
        fallbacks = self._stats.text_fallbacks
        if fallbacks != self._fallbacks_published:
            metrics.TEXT_FALLBACKS.labels(**labels).inc(fallbacks - self._fallbacks_published)
            # At most once a second (this runs with the status updates), never per value.
            self._log.warning(
                "values_published_as_text",
                count=fallbacks - self._fallbacks_published,
                total=fallbacks,
                detail="these values have no exact JSON form in the configured values.*"
                " modes; values.on_conversion_error: text published their PostgreSQL text",
            )
            self._fallbacks_published = fallbacks
        if self.encoder is not None:
            unavailable = self.encoder.unavailable_values()
            if unavailable != self._unavailable_published:
                metrics.TOAST_UNAVAILABLE.labels(**labels).inc(
                    unavailable - self._unavailable_published
                )
                self._unavailable_published = unavailable
        progress = driver.progress if driver is not None else None
        BOARD.update(
            labels["connector"],
            confirmed_lsn=format_lsn(confirmed),
            received_lsn=format_lsn(received),
            lag_bytes=max(0, server_wal_end - confirmed),
            in_flight_records=len(sink) if sink is not None else 0,
            events=dict(events),
            transactions=transactions,
            snapshot=None
            if progress is None
            else {
                "kind": progress.kind,
                "mode": "incremental",
                "snapshot_id": progress.snapshot_id,
                "table": progress.tables[0] if progress.tables else None,
                "tables_left": list(progress.tables),
                "tables_done": list(progress.tables_done),
                "chunks_done": progress.chunks_done,
                "rows_done": progress.rows_done,
            },
        )

    def progress_due(self, now: float) -> bool:
        """Whether the periodic summary is due at ``now`` (``time.monotonic()``)."""
        return now - self._last_progress >= PROGRESS_LOG_INTERVAL_S

    def log_progress(
        self,
        now: float,
        *,
        transactions: int,
        logical_messages: int,
        confirmed: int,
        server_wal_end: int,
        in_flight: int,
    ) -> None:
        """Log the ``stream_progress`` summary; the next is due an interval after ``now``."""
        self._log.info(
            "stream_progress",
            events=dict(self._events),
            transactions=transactions,
            logical_messages=logical_messages,
            lsn=format_lsn(confirmed),
            lag_bytes=max(0, server_wal_end - confirmed),
            in_flight=in_flight,
        )
        self._last_progress = now


def report_tables(log: Any, tables: list[TableInfo]) -> None:
    """Warn about published tables whose events get no key or whose updates fail, then
    list them all (once, at set-up)."""
    for table in tables:
        if not table.key_columns:
            log.warning(
                "table_without_key",
                table=table.qualified,
                replica_identity=table.replica_identity,
                detail="events get a null key on the retention topic and are not"
                " written to the compacted topic; add a primary key or set REPLICA"
                " IDENTITY USING INDEX on a unique index",
            )
        if table.replica_identity == "n" or (
            table.replica_identity == "d" and not table.key_columns
        ):
            log.warning(
                "table_updates_not_capturable",
                table=table.qualified,
                detail="UPDATE and DELETE on this table fail on the primary while it is"
                " published (no replica identity): add a primary key or"
                " ALTER TABLE ... REPLICA IDENTITY FULL",
            )
    log.info("tables_published", tables=[t.qualified for t in tables])
