"""Decides and runs one connector's snapshots around the streaming loop.

The one job: keep the connector's snapshot state (the ``snapshot`` record of its state
topic), refuse to recreate a lost slot silently (the lost-slot guard), run the initial
snapshot from the slot's exported snapshot before streaming starts, and set up the
incremental snapshots that run while streaming (the window the router feeds, the driver
that reads chunks).

It must not read the replication stream, answer keepalives, decide which LSN is
confirmable or produce streamed change events: the pipeline owns the stream and the slot
ack, and the router publishes the chunk rows of an incremental snapshot at the HIGH
watermark, with the progress they reach, in the same Kafka transaction (or once they
are acknowledged).

Schema-change events (unless ``schema_changes: off``): the initial snapshot publishes
the event of each table whose shape the schema history does not know before its first
row, with ``source.lsn`` the LSN its rows carry (the slot's consistent point); an
incremental snapshot's chunks get theirs from the router, with the table description
the driver hands over.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from typing import Any

from cdc import metrics
from cdc.config import ConnectorConfig, TopicsConfig
from cdc.envelope import Record, TableEncoder, TxContext
from cdc.errors import SinkError, SlotError
from cdc.kafka.sink import KafkaSink
from cdc.kafka.topics import KafkaAdmin
from cdc.lsn import format_lsn
from cdc.masking import data_controls
from cdc.positions import Position
from cdc.postgres.snapshot_reader import SnapshotReader, TableShape
from cdc.postgres.source import SlotInfo, TableInfo
from cdc.snapshots.incremental import IncrementalDriver
from cdc.snapshots.initial import PROGRESS_INTERVAL_S, InitialSnapshot, TableProgress
from cdc.snapshots.progress import ProgressView
from cdc.snapshots.state import STATE_KEY, ConnectorState, SnapshotProgress
from cdc.snapshots.window import ChunkWindow
from cdc.status import BOARD
from cdc.stream.schema_changes import SchemaChanges, TableDescription

__all__ = ["SnapshotControl"]

# pgoutput passes logical decoding messages (our watermarks) from PostgreSQL 14 on.
LOGICAL_MESSAGES_FROM = 140000


class SnapshotControl:
    """One connector's snapshot decisions and state; lives as long as its pipeline run.

    The pipeline calls, in this order: ``open_state`` (with the state topic's records),
    ``before_slot_create`` (as the slot's ``before_create`` hook),
    ``snapshot_before_streaming``, ``start_driver`` (once streaming started); then
    ``report_incremental`` from its housekeeping; and ``close`` at the end, whatever
    happened.
    """

    __slots__ = (
        "_admin",
        "_cfg",
        "_database",
        "_describe",
        "_export_planned",
        "_last_report",
        "_log",
        "_make_encoder",
        "_pending_incremental",
        "_progress_view",
        "_published",
        "_schema_changes",
        "_sink",
        "_snapshot_reader",
        "_state",
        "_stop",
        "_topics",
    )

    def __init__(
        self,
        *,
        connector: ConnectorConfig,
        topics: TopicsConfig,
        database: str,
        sink: KafkaSink,
        admin: KafkaAdmin,
        published: list[str],
        stop: threading.Event,
        log: Any,
        table_encoder: Callable[[TableShape], TableEncoder],
        schema_changes: SchemaChanges | None = None,
        describe_table: Callable[[TableShape], TableDescription] | None = None,
    ) -> None:
        """No I/O here: the pipeline decides when Kafka and PostgreSQL are touched.

        Args:
            connector: the connector's settings (``snapshot``, ``slot``, ``recreate_slot``).
            topics: the effective topic settings, for topic names.
            database: the source database's name, as it appears in topic names and events.
            sink: the connector's Kafka sink (state records, initial snapshot rows).
            admin: the connector's admin client (the lost-slot guard reads offsets).
            published: qualified names of the published tables (an incremental snapshot
                without tables snapshots them all).
            stop: set to interrupt the initial snapshot.
            log: the connector's bound logger (``connector`` and ``slot`` already bound).
            table_encoder: builds the encoder of a table read by a snapshot, with the same
                value settings, type catalog and TOAST memory as the stream's.
            schema_changes: the stream's schema-change events and their history (None:
                ``schema_changes: off``).
            describe_table: a table read by a snapshot, described for its schema-change
                event (type names and definitions from the catalog, topic partitions).
        """
        self._make_encoder = table_encoder
        self._schema_changes = schema_changes
        self._describe = describe_table if schema_changes is not None else None
        self._cfg = connector
        self._topics = topics
        self._database = database
        self._sink = sink
        self._admin = admin
        self._published = published
        self._stop = stop
        self._log = log
        self._state = ConnectorState()
        self._pending_incremental: tuple[tuple[str, ...], SnapshotProgress | None] = ((), None)
        self._progress_view = ProgressView(log)
        self._export_planned = False
        self._last_report = time.monotonic()
        self._snapshot_reader: SnapshotReader | None = None

    # --- the state record -------------------------------------------------------------

    def open_state(self, records: dict[bytes, bytes], topic: str) -> None:
        """The snapshot state, from the state topic's records as read at start.

        Raises:
            SinkError: the stored state is not readable.
        """
        raw = records.get(STATE_KEY)
        if raw is None:
            return
        try:
            self._state = ConnectorState.from_json(raw)
        except ValueError as exc:
            raise SinkError(
                f"the snapshot state in topic {topic!r} is not readable: {exc}",
                topic=topic,
                retryable=False,
            ) from exc

    def _save_state(self, state: ConnectorState) -> None:
        """Store a decision before acting on it (returns once Kafka holds it)."""
        self._state = state
        self._sink.store_state(STATE_KEY, state.to_json())

    # --- before streaming ---------------------------------------------------------------

    def before_slot_create(self, tables: list[TableInfo], *, new_topics: Collection[str]) -> None:
        """Runs only when the slot is about to be created: refuse a silent gap, and record
        durably that an initial snapshot is due before the slot (and its exported
        snapshot) exists, so a crash during the snapshot resumes it instead of
        forgetting it.

        Args:
            tables: the published tables.
            new_topics: topics this start created (empty, so they cannot reveal a gap).

        Raises:
            SlotError: the slot was lost, events are in Kafka, and neither a snapshot nor
                ``recreate_slot`` accepts the gap.
        """
        mode = self._cfg.snapshot.mode
        self._refuse_silent_gap(
            [self._retention_topic(t.schema, t.name) for t in tables],
            new_topics=new_topics,
            snapshot_fills_gap=mode in ("when_needed", "always"),
        )
        # "initial" snapshots once: not again when a lost slot is recreated after the
        # snapshot was done (recreate_slot accepted the gap); the other modes snapshot
        # whenever a slot is created.
        self._export_planned = mode != "never" and not (
            mode == "initial" and self._state.initial_snapshot == "done"
        )
        if self._export_planned:
            self._save_state(
                ConnectorState(
                    initial_snapshot="pending",
                    initial_tables=tuple(t.qualified for t in tables),
                    incremental=self._state.incremental,
                )
            )

    def _refuse_silent_gap(
        self, topics: list[str], *, new_topics: Collection[str], snapshot_fills_gap: bool
    ) -> None:
        """A missing slot with events already in Kafka means the slot was lost (dropped,
        failover before PostgreSQL 17, major upgrade): WAL since then is gone, and a new
        slot would silently skip those changes. Stop unless the user accepts the gap."""
        # Topics created by this start are empty by definition (and may not have a
        # partition leader yet): only the ones that existed before can tell.
        existing = [t for t in topics if t not in new_topics]
        written = {t: n for t, n in self._admin.records_written(existing).items() if n}
        if not written:
            return
        topic, count = next(iter(written.items()))
        if snapshot_fills_gap:
            self._log.warning(
                "slot_recreated_snapshot_follows",
                topic=topic,
                events_in_topic=count,
                detail="the slot was lost; a new snapshot republishes every row",
            )
            return
        if not self._cfg.recreate_slot:
            raise SlotError(
                f"replication slot {self._cfg.slot!r} does not exist, but topic {topic!r}"
                f" already holds {count} events of this connector: the slot was dropped or"
                " lost (failover, major upgrade), and changes made since then are no longer"
                " in the WAL. A new slot would skip them silently. To accept the gap and"
                " stream from now on, set recreate_slot: true for this connector (a later"
                " snapshot can fill the gap)"
            )
        self._log.warning(
            "slot_recreated_with_possible_gap",
            topic=topic,
            events_in_topic=count,
            detail="changes between the lost slot's position and now are not captured",
        )

    def snapshot_before_streaming(self, slot: SlotInfo, tables: list[TableInfo]) -> bool:
        """Run the initial snapshot when the slot was just created with one; queue the
        incremental snapshots that must run while streaming (``start_driver`` starts them).

        Returns:
            False: stop, don't stream (interrupted, or ``initial_only`` finished).
        """
        cfg = self._cfg.snapshot
        state = self._state
        pending_initial: tuple[str, ...] = ()
        if slot.created and slot.snapshot_name is not None and self._export_planned:
            threshold = cfg.incremental_above_rows
            reader = SnapshotReader(
                self._cfg.postgres.dsn.get_secret_value(),
                application_name=f"cdc:{self._cfg.name}:plan",
                controls=data_controls(self._cfg),
            )
            try:
                shapes = [reader.table_shape(t.schema, t.name) for t in tables]
            finally:
                reader.close()
            exported = [s for s in shapes if threshold is None or s.estimated_rows <= threshold]
            deferred = tuple(_qualified(s) for s in shapes if s not in exported)
            rows = self._run_initial_snapshot(slot, exported, deferred)
            if rows is None:
                return False  # stopped: the state still says pending; the next start resumes
            metrics.SNAPSHOT_ROWS.labels(connector=self._cfg.name, kind="initial").inc(
                sum(rows.values())
            )
            state = ConnectorState(
                initial_snapshot="running" if deferred else "done",
                initial_tables=deferred,
                incremental=state.incremental,
            )
            self._save_state(state)
            if cfg.mode == "initial_only":
                if deferred:
                    self._log.warning(
                        "snapshot_tables_skipped",
                        tables=list(deferred),
                        detail="initial_only cannot snapshot incrementally (it does not"
                        " stream); raise snapshot.incremental_above_rows",
                    )
                self._log.info("initial_only_finished", rows=sum(rows.values()))
                return False
            pending_initial = deferred
        elif state.initial_snapshot in ("pending", "running"):
            pending_initial = state.initial_tables
            left = state.incremental.tables if state.incremental is not None else ()
            self._log.info(
                "initial_snapshot_resumed_incrementally",
                tables=list(dict.fromkeys((*left, *pending_initial))),
                detail="the exported snapshot did not survive the restart; the remaining"
                " tables are read in chunks while streaming",
            )
        elif cfg.mode == "always" and not slot.created:
            pending_initial = tuple(t.qualified for t in tables)
        self._pending_incremental = (pending_initial, state.incremental)
        return True

    def _run_initial_snapshot(
        self, slot: SlotInfo, shapes: list[TableShape], deferred: tuple[str, ...]
    ) -> dict[str, int] | None:
        """Rows per table, or None when stopped before the end."""
        assert slot.snapshot_name is not None
        started_us = time.time_ns() // 1000
        BOARD.update(
            self._cfg.name,
            phase="snapshotting",
            snapshot={"kind": "initial", "mode": "exported", "tables": {}},
        )
        self._log.info(
            "snapshot_started",
            kind="initial",
            lsn=format_lsn(slot.confirmed_flush_lsn),
            tables=[_qualified(s) for s in shapes],
            max_workers=self._cfg.snapshot.max_workers,
        )
        encoders = {_qualified(s): self._make_encoder(s) for s in shapes}
        tx = TxContext(
            xid=None,
            commit_lsn=slot.confirmed_flush_lsn,
            commit_ts_us=started_us,
            last_commit_lsn=None,
        )
        schema_events, schema_state = self._schema_events(shapes, tx)
        snapshot = InitialSnapshot(
            dsn=self._cfg.postgres.dsn.get_secret_value(),
            application_name=f"cdc:{self._cfg.name}",
            snapshot_name=slot.snapshot_name,
            tx=tx,
            shapes=shapes,
            deferred=deferred,
            encoder_for=lambda shape: encoders[_qualified(shape)],
            sink=self._sink,
            max_workers=self._cfg.snapshot.max_workers,
            stop=self._stop,
            report=self._report_snapshot,
            schema_events=schema_events,
            schema_state=schema_state,
        )
        started = time.monotonic()
        rows = snapshot.run()
        if rows is None:
            self._log.warning("snapshot_interrupted", kind="initial")
            return None
        elapsed = time.monotonic() - started
        total = sum(rows.values())
        self._log.info(
            "snapshot_finished",
            kind="initial",
            rows=total,
            seconds=round(elapsed, 3),
            rows_per_s=round(total / elapsed) if elapsed > 0 else None,
            tables=rows,
        )
        return rows

    def _schema_events(
        self, shapes: list[TableShape], tx: TxContext
    ) -> tuple[list[Record], bytes | None]:
        """The schema-change events of the tables whose shapes the history does not know,
        to publish before the first row, and the history to store with them.

        Every row carries ``source.lsn`` = the consistent point, and so do these events;
        the history places them there too, before every streamed change (which all
        commit after it), so the stream's first change of an unchanged table announces
        nothing.
        """
        schema, describe = self._schema_changes, self._describe
        if schema is None or describe is None:
            return [], None
        now_us = time.time_ns() // 1000
        at = Position(tx.commit_lsn, 0)
        records: list[Record] = []
        tables = 0
        for shape in shapes:
            announced = schema.announce(
                describe(shape), at=at, tx=tx, lsn=tx.commit_lsn, now_us=now_us, snapshot="true"
            )
            if announced is not None:
                records.extend(announced[0])
                tables += 1
        if not records:
            return [], None
        self._log.info("snapshot_schemas_announced", tables=tables)
        return records, schema.history.to_json()

    def _report_snapshot(self, tables: list[TableProgress], final: bool) -> None:
        self._progress_view.show(tables, final=final)
        name = self._cfg.name
        for table in tables:
            BOARD.snapshot_progress(
                name, table.table, rows=table.rows, estimated_rows=table.estimated_rows,
                done=table.done,
            )  # fmt: skip

    # --- while streaming ----------------------------------------------------------------

    def start_driver(self, server_version: int) -> tuple[IncrementalDriver, ChunkWindow]:
        """The incremental snapshot driver and the window the router feeds, resuming or
        starting what is due.

        Opens the chunk reader's connection; ``close`` closes it.
        """
        snapshot = self._cfg.snapshot
        self._snapshot_reader = SnapshotReader(
            self._cfg.postgres.dsn.get_secret_value(),
            application_name=f"cdc:{self._cfg.name}:chunks",
            controls=data_controls(self._cfg),
        )
        encoders: dict[str, TableEncoder] = {}

        def encoder_for(shape: TableShape) -> TableEncoder:
            encoder = encoders.get(shape.qualified)
            if encoder is None or encoder.relation != shape.relation:
                encoder = encoders[shape.qualified] = self._make_encoder(shape)
            return encoder

        use_table = snapshot.watermarks == "signal_table" or (
            snapshot.watermarks == "auto" and server_version < LOGICAL_MESSAGES_FROM
        )
        if use_table and snapshot.signal_table is None:
            self._log.warning(
                "incremental_snapshots_unavailable",
                detail="PostgreSQL before 14 cannot carry watermarks as logical messages:"
                " set snapshot.signal_table to enable incremental snapshots",
            )
        window = ChunkWindow(self._state)
        driver = IncrementalDriver(
            reader=self._snapshot_reader,
            window=window,
            encoder_for=encoder_for,
            chunk_rows=snapshot.chunk_rows,
            max_rows_per_second=snapshot.max_rows_per_second,
            published_tables=list(self._published),
            log=self._log,
            signal_table=snapshot.signal_table if use_table else None,
            describe=self._describe,
        )
        pending_initial, stored = self._pending_incremental
        if stored is not None:
            driver.resume(stored)
        elif pending_initial:
            driver.start(list(pending_initial), kind="initial")
        return driver, window

    def chunk_published(self, rows: int) -> None:
        """The router published a chunk of ``rows`` rows (metrics)."""
        metrics.SNAPSHOT_ROWS.labels(connector=self._cfg.name, kind="incremental").inc(rows)

    def report_incremental(self, driver: IncrementalDriver) -> None:
        """Every few seconds while an incremental snapshot runs: the terminal bar or a
        ``snapshot_progress`` line for its current table."""
        now = time.monotonic()
        if now - self._last_report < PROGRESS_INTERVAL_S:
            return
        self._last_report = now
        table = driver.table_progress()
        if table is not None:
            self._progress_view.show([table])

    def close(self) -> None:
        """Close the chunk reader's connection, if ``start_driver`` opened one."""
        if self._snapshot_reader is not None:
            self._snapshot_reader.close()

    # --- helpers ------------------------------------------------------------------------

    def _retention_topic(self, schema: str, table: str) -> str:
        return self._topics.retention_topic(self._cfg.name, self._database, schema, table)


def _qualified(shape: TableShape) -> str:
    return f"{shape.relation.namespace}.{shape.relation.name}"
