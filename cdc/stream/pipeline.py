"""Sets up one connector and runs it: source -> router -> sink -> positions -> slot ack.

The one job: connect the edges in order (PostgreSQL, the publication, Kafka topics, the
producer, the stored state, the slot, the initial snapshot), build the pure core (the
envelope encoder and the ``ChangeRouter``) and hand all of it to the ``StreamLoop``, then
close everything, whatever happened. It also carries out the router's rare effects and
resolves what a Relation message (or a table a snapshot reads) needs from the catalog,
so neither the router nor the encoder ever calls out.

Order at start, in ``exactly_once`` mode: ``init_transactions()`` fences any older
producer of this connector and aborts what it left open; a fresh marker is committed and
the state topic read ``read_committed`` until it appears, so the stored position is the
last one committed; the stream resumes from the slot and the router skips what that
position says is already in Kafka.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import structlog

from cdc import metrics
from cdc.config import ConnectorConfig, DaemonConfig
from cdc.dead_letters import RefusedRecords
from cdc.envelope import EnvelopeEncoder, TableEncoder
from cdc.errors import SinkError, SourceError, Stopped
from cdc.kafka.sink import POSITION_KEY, KafkaSink
from cdc.kafka.state import MARKER_KEY, read_state
from cdc.kafka.topics import KafkaAdmin, TableTopics
from cdc.lsn import format_lsn
from cdc.masking import data_controls
from cdc.positions import CommitPolicy, Position, StoredPosition
from cdc.postgres.catalog import TypeCatalog
from cdc.postgres.snapshot_reader import TableShape
from cdc.postgres.source import ReplicationSource, ServerInfo, protocol_version_for
from cdc.protocol.messages import Relation, ReplicaIdentity
from cdc.protocol.pgoutput import PgoutputDecoder
from cdc.protocol.typeinfo import TypeInfo
from cdc.protocol.values import ConversionStats
from cdc.snapshots.control import SnapshotControl
from cdc.snapshots.incremental import IncrementalDriver
from cdc.snapshots.state import STATE_KEY
from cdc.snapshots.window import ChunkWindow
from cdc.status import BOARD
from cdc.stream.loop import StreamLoop, StreamTimings
from cdc.stream.report import ConnectorReport, report_tables
from cdc.stream.router import (
    ChangeRouter,
    ChunkPublished,
    Effect,
    EnsureTopics,
    InvalidateType,
    RelationInfo,
    SchemaAnnounced,
    StartSnapshot,
)
from cdc.stream.routing import MessageRouter, OutboxRouter
from cdc.stream.schema_changes import (
    SCHEMA_STATE_KEY,
    SchemaChanges,
    TableDescription,
    schema_topic_name,
)
from cdc.stream.schema_history import SchemaHistory
from cdc.stream.toast_store import ToastStore
from cdc.stream.transactions import TransactionTopic, transaction_topic_name
from cdc.stream.wal_guard import (
    WalGuard,
    WalLevel,
    format_bytes,
    retained_wal_advice,
    stop_error,
)

__all__ = ["ConnectorPipeline"]

# Records per event, for sizing the producer queue: retention + compacted.
RECORDS_PER_EVENT = 2
# Metrics and the status board follow the stream this often at most: under load the
# housekeeping runs hundreds of times a second, and a scrape comes every few seconds.
REPORT_INTERVAL_S = 0.05


class ConnectorPipeline:
    """Streams one connector until ``stop`` is set; raises CdcError on failure."""

    def __init__(
        self,
        daemon: DaemonConfig,
        connector: ConnectorConfig,
        stop: threading.Event,
        refusals: RefusedRecords | None = None,
    ) -> None:
        """``refusals``: records Kafka refused at delivery in an earlier run of this
        connector (kept by its runner), for the dead-letter topic."""
        self._daemon = daemon
        self._cfg = connector
        self._stop = stop
        self._refusals = refusals
        self._topics = connector.effective_topics(daemon)
        self._log = structlog.get_logger("cdc.pipeline").bind(
            connector=connector.name, slot=connector.slot
        )
        self._value_options = connector.values.options()
        self._controls = data_controls(connector)  # table_options (cdc.masking)
        self._stats = ConversionStats()
        self._labels = {"connector": connector.name}
        self._max_records = max(1, connector.max_in_flight_events) * RECORDS_PER_EVENT
        self._database = ""
        self._toast: ToastStore | None = None
        self._catalog: TypeCatalog | None = None
        self._source: ReplicationSource | None = None
        self._table_topics: TableTopics | None = None
        self._admin: KafkaAdmin | None = None
        self._sink: KafkaSink | None = None
        self._driver: IncrementalDriver | None = None
        self._window: ChunkWindow | None = None
        self._snapshots: SnapshotControl | None = None
        self._report: ConnectorReport | None = None
        self._next_report = 0.0  # monotonic time of the next report.publish
        self._loop: StreamLoop | None = None
        self._router: ChangeRouter | None = None
        self._encoder: EnvelopeEncoder | None = None
        self._partitions: dict[str, int] = {}
        self._wal_guard: WalGuard | None = None
        self._server_version = 0

    # --- set-up ---------------------------------------------------------------------

    def run(self) -> None:
        """Prepare, stream until stopped, then make durable and confirm what was read."""
        cfg = self._cfg
        source = self._source = ReplicationSource(
            cfg.postgres.dsn.get_secret_value(),
            slot=cfg.slot,
            publication=cfg.publication,
            application_name=f"cdc:{cfg.name}",
        )
        try:
            self._run(source)
        finally:
            metrics.CONNECTOR_UP.labels(**self._labels).set(0)
            if self._toast is not None:
                self._toast.close()
            if self._snapshots is not None:
                self._snapshots.close()
            if self._sink is not None:
                self._sink.close()
            source.close()

    def _run(self, source: ReplicationSource) -> None:
        cfg = self._cfg
        info = source.connect()
        self._database = info.database
        self._catalog = TypeCatalog(source.catalog_connection)
        if cfg.toast.mode == "fill":
            self._toast = ToastStore(Path(cfg.toast.store.replace("{connector}", cfg.name)))
        # The signal and outbox tables must be published (their rows reach us through
        # the stream) but are not captured: no table topics, no snapshot.
        special = {t for t in (cfg.snapshot.signal_table, cfg.outbox.table) if t}
        wanted = cfg.table_names
        if wanted is not None:
            wanted = [*wanted, *(_split_table(t) for t in sorted(special))]
        source.ensure_publication(wanted, create=cfg.create_publication)
        evaluated = source.apply_data_controls(
            self._controls, create=cfg.create_publication, server_version=info.version_num
        )
        if evaluated:
            # Row filters the publication cannot apply here: the encoder evaluates them.
            self._controls = {
                table: replace(control, filter_in_cdc=True) if table in evaluated else control
                for table, control in self._controls.items()
            }
            self._log.info("row_filters_evaluated_by_cdc", tables=sorted(evaluated))
        tables = [t for t in source.published_tables() if t.qualified not in special]
        report_tables(self._log, tables)

        properties = self._daemon.kafka.properties
        bootstrap = self._daemon.kafka.bootstrap_servers
        admin = self._admin = KafkaAdmin(
            bootstrap, properties, client_id=f"cdc-{cfg.name}", log=self._log
        )
        admin.list_topics()
        table_topics = self._table_topics = TableTopics(
            connector=cfg.name,
            database=self._database,
            topics=self._topics,
            admin=admin,
            log=self._log,
        )
        state_topic = table_topics.ensure_state_topic()
        table_topics.ensure([(t.schema, t.name, bool(t.key_columns)) for t in tables])
        if cfg.schema_changes == "topic":
            # One partition: every schema change of the connector in order.
            table_topics.ensure_log_topics([schema_topic_name(cfg.name)], partitions=1)
        if cfg.provide_transaction_metadata:
            # One partition: BEGIN and END records in commit order.
            table_topics.ensure_log_topics([transaction_topic_name(cfg.name)], partitions=1)
        dead_letter_topic = None
        if cfg.dead_letter.enabled:
            # One partition: refused records in the order they came; kept forever.
            dead_letter_topic = cfg.dead_letter.topic_name(cfg.name)
            table_topics.ensure_log_topics([dead_letter_topic], partitions=1)
        sink = self._sink = KafkaSink.create(
            bootstrap_servers=bootstrap,
            properties=properties,
            client_id=f"cdc-{cfg.name}",
            mode=cfg.delivery,
            connector=cfg.name,
            state_topic=state_topic,
            max_in_flight=self._max_records,
            policy=CommitPolicy(
                cfg.exactly_once.commit_interval_ms / 1000, cfg.exactly_once.max_records
            ),
            log=self._log,
            dead_letter_topic=dead_letter_topic,
            refusals=self._refusals,
        )
        marker: bytes | None = None
        sink.on_wait = self._stop_check  # until the loop takes over: a stop ends the waits
        if sink.exactly_once:
            sink.init_transactions()
            marker = uuid.uuid4().hex.encode()
            sink.store_state(MARKER_KEY, marker)
        records = read_state(admin, state_topic, marker=marker, group_id=f"cdc-{cfg.name}-state")
        history = self._schema_history(records, state_topic)
        # One SchemaChanges for the snapshots and the stream: versions continue across both.
        schema_changes = (
            None
            if cfg.schema_changes == "off"
            else SchemaChanges(
                connector=cfg.name,
                database=self._database,
                mode=cfg.schema_changes,
                history=history,
            )
        )
        snapshots = self._snapshots = SnapshotControl(
            connector=cfg,
            topics=self._topics,
            database=self._database,
            sink=sink,
            admin=admin,
            published=[t.qualified for t in tables],
            stop=self._stop,
            log=self._log,
            table_encoder=self._table_encoder,
            schema_changes=schema_changes,
            describe_table=self._describe_table,
        )
        snapshots.open_state(records, state_topic)

        mode = cfg.snapshot.mode
        slot = source.ensure_slot(
            create=cfg.create_slot,
            before_create=lambda: snapshots.before_slot_create(
                tables, new_topics=table_topics.created
            ),
            export_snapshot=mode != "never",
            temporary=mode == "initial_only",
        )
        stored = None if slot.created else self._stored_position(records, info)
        if slot.created:
            self._log.info("slot_created", lsn=format_lsn(slot.confirmed_flush_lsn))
        sink.start(
            confirmed=slot.confirmed_flush_lsn,
            durable=stored,
            system_id=info.system_id,
            slot=cfg.slot,
        )
        if not snapshots.snapshot_before_streaming(slot, tables):
            return
        if self._toast is not None:
            self._toast.commit()  # the snapshot's rows, before anything is confirmed
        driver, window = snapshots.start_driver(info.version_num)
        self._driver, self._window = driver, window
        protocol = protocol_version_for(info.version_num)
        source.start(slot.confirmed_flush_lsn, protocol)
        self._log.info(
            "streaming_started",
            lsn=format_lsn(slot.confirmed_flush_lsn),
            protocol_version=protocol,
            server_version=info.version_num,
            tables=len(tables),
            delivery=cfg.delivery,
            resume=None if stored is None else list(stored.reached),
        )
        metrics.CONNECTOR_UP.labels(**self._labels).set(1)
        self._server_version = info.version_num
        retention = cfg.wal_retention
        self._wal_guard = WalGuard(
            warn_bytes=retention.warn_bytes,
            stop_bytes=retention.stop_bytes,
            interval_s=retention.check_interval_seconds,
            now=time.monotonic(),
        )
        BOARD.update(
            cfg.name,
            phase="streaming",
            slot=cfg.slot,
            delivery=cfg.delivery,
            started_lsn=format_lsn(slot.confirmed_flush_lsn),
            snapshot=None,
            error=None,
        )
        router = self._router = self._build_router(
            window, schema_changes, None if stored is None else stored.reached
        )
        self._report = ConnectorReport(
            cfg.name, events=router.events, stats=self._stats, log=self._log, now=time.monotonic()
        )
        self._report.encoder = self._encoder
        self._loop = StreamLoop(
            source=source,
            decoder=PgoutputDecoder(protocol),
            router=router,
            sink=sink,
            stop=self._stop,
            relation_info=self._relation_info,
            handle=self._handle,
            periodic=self._periodic,
            durable=self._toast.durable if self._toast is not None else None,
            observe_latency=self._observe_latency,
            log=self._log,
            timings=StreamTimings(status_interval_s=cfg.status_interval_seconds),
            start_lsn=slot.confirmed_flush_lsn,
            watch=self._watch_wal,
        )
        try:
            self._loop.run()
        finally:
            self._publish_report()  # what the stream did since the last report counts too

    def _stop_check(self) -> None:
        """While Kafka is waited for before streaming: a stop ends the wait."""
        if self._stop.is_set():
            raise Stopped

    def _stored_position(
        self, records: dict[bytes, bytes], info: ServerInfo
    ) -> StoredPosition | None:
        """``exactly_once``: the position the last committed Kafka transaction reached,
        if it belongs to this server and slot."""
        raw = records.get(POSITION_KEY)
        if raw is None or self._cfg.delivery != "exactly_once":
            return None
        try:
            stored = StoredPosition.from_json(raw)
        except ValueError as exc:
            raise SinkError(
                f"the stream position in the state topic is not readable: {exc}",
                retryable=False,
            ) from exc
        if stored.system_id != info.system_id or stored.slot != self._cfg.slot:
            self._log.warning(
                "stored_position_ignored",
                detail="it belongs to another PostgreSQL cluster or slot",
                stored_system_id=stored.system_id,
                stored_slot=stored.slot,
            )
            return None
        return stored

    def _schema_history(self, records: dict[bytes, bytes], topic: str) -> SchemaHistory:
        raw = records.get(SCHEMA_STATE_KEY)
        try:
            return SchemaHistory.from_json(raw) if raw is not None else SchemaHistory()
        except ValueError as exc:
            raise SinkError(
                f"the schema history in topic {topic!r} is not readable: {exc}",
                topic=topic,
                retryable=False,
            ) from exc

    def _build_router(
        self,
        window: ChunkWindow,
        schema_changes: SchemaChanges | None,
        resume: Position | None,
    ) -> ChangeRouter:
        """The pure core of the stream; ``resume``: what committed Kafka transactions hold
        (``exactly_once`` only: ``_stored_position`` gives none otherwise)."""
        cfg = self._cfg
        keys: dict[int, tuple[str, ...] | None] = {}
        types: dict[int, TypeInfo | None] = {}
        encoder = self._encoder = EnvelopeEncoder(
            connector=cfg.name,
            database=self._database,
            retention_topic=self._retention_topic,
            compacted_topic=lambda s, t: self._topics.compacted_topic(
                cfg.name, self._database, s, t
            ),
            options=self._value_options,
            key_columns=lambda relation: keys.get(relation.oid),
            toast=self._toast,
            placeholder=cfg.toast.placeholder,
            types=types.get,
            stats=self._stats,
            controls=self._controls,
        )
        return ChangeRouter(
            encoder=encoder,
            window=window,
            messages=MessageRouter(cfg.messages, connector=cfg.name, database=self._database),
            outbox=OutboxRouter(cfg.outbox, connector=cfg.name),
            signal_table=cfg.snapshot.signal_table,
            schema_changes=schema_changes,
            retention_topic=self._retention_topic,
            known_topics=set(),
            keys=keys,
            types=types,
            resume=resume,
            toast=self._toast,
            transactions=(
                TransactionTopic(transaction_topic_name(cfg.name))
                if cfg.provide_transaction_metadata
                else None
            ),
        )

    def _retention_topic(self, schema: str, table: str) -> str:
        return self._topics.retention_topic(self._cfg.name, self._database, schema, table)

    # --- what the stream asks of the edges -------------------------------------------------

    def _relation_info(self, relation: Relation) -> RelationInfo:
        """What a Relation needs from the catalog and from Kafka, resolved here at the edge:
        the event key, the custom types, the SQL type names, the table's topics."""
        source, catalog, table_topics = self._source, self._catalog, self._table_topics
        assert source is not None
        assert catalog is not None
        assert table_topics is not None
        cfg = self._cfg
        name = (relation.namespace, relation.name)
        qualified = f"{relation.namespace}.{relation.name}"
        types = catalog.resolve(c.type_oid for c in relation.columns)
        if qualified in (cfg.snapshot.signal_table, cfg.outbox.table):
            return RelationInfo(types=types)
        key_columns: tuple[str, ...] | None = None
        if relation.replica_identity in (ReplicaIdentity.FULL, ReplicaIdentity.NOTHING):
            # Under FULL every column is flagged, under NOTHING none: keying by those would
            # make every update a key change, or lose the key altogether.
            key_columns = source.key_columns(*name)
        if name not in table_topics.ensured:
            has_key = bool(key_columns) or any(c.is_key for c in relation.columns)
            table_topics.ensure([(relation.namespace, relation.name, has_key)])
            if not has_key:
                self._log.warning(
                    "table_without_key",
                    table=qualified,
                    detail="events get a null key and skip the compacted topic",
                )
        type_names: tuple[str, ...] = ()
        not_null: tuple[bool | None, ...] = ()
        partitions = 1
        if cfg.schema_changes != "off":
            # The statement that reads the type names reads NOT NULL too (docs/events.md).
            type_names, not_null = catalog.columns(relation)
        if cfg.schema_changes == "inband":
            topic = self._retention_topic(*name)
            if topic not in self._partitions:
                assert self._admin is not None
                self._partitions[topic] = self._admin.partitions(topic)
            partitions = self._partitions[topic]
        return RelationInfo(
            key_columns=key_columns,
            type_names=type_names,
            not_null=not_null,
            types=types,
            partitions=partitions,
        )

    def _describe_table(self, shape: TableShape) -> TableDescription:
        """A table a snapshot reads, for its schema-change event: its custom types from
        the catalog (cached), its retention topic's partitions (in band)."""
        assert self._catalog is not None
        relation = shape.relation
        topic = self._retention_topic(relation.namespace, relation.name)
        partitions = 1
        if self._cfg.schema_changes == "inband":
            if topic not in self._partitions:
                assert self._admin is not None
                self._partitions[topic] = self._admin.partitions(topic)
            partitions = self._partitions[topic]
        return TableDescription(
            relation=relation,
            key_columns=shape.key_columns,
            type_names=shape.type_names,
            not_null=shape.not_null,
            types=self._catalog.resolve(c.type_oid for c in relation.columns),
            retention_topic=topic,
            partitions=partitions,
        )

    def _handle(self, effect: Effect) -> None:
        """The router's rare effects."""
        match effect:
            case EnsureTopics(topics=topics):
                assert self._table_topics is not None
                self._table_topics.ensure_log_topics(topics)
            case StartSnapshot():
                self._start_snapshot(effect)
            case InvalidateType(oid=oid):
                assert self._catalog is not None
                # A custom type was (re)defined: its next use reads the catalog again.
                self._catalog.invalidate(oid)
            case ChunkPublished():
                self._chunk_published(effect)
            case SchemaAnnounced(change=change):
                self._log.info(
                    "schema_changed",
                    table=change.schema.table,
                    schema_version=change.version,
                    **change.describe(),
                )
                if self._driver is not None:
                    # A snapshot's next chunk of the table is read with its new shape.
                    self._driver.forget_shape(change.schema.table)

    def _start_snapshot(self, effect: StartSnapshot) -> None:
        driver, window, sink = self._driver, self._window, self._sink
        assert driver is not None
        assert window is not None
        assert sink is not None
        self._log.info(
            "snapshot_requested", tables=list(effect.tables), via=effect.via, lsn=effect.lsn
        )
        if driver.start(list(effect.tables)):
            # Stored with the signal's position: a restart does not forget the request.
            sink.save_state(STATE_KEY, window.state.to_json())

    def _chunk_published(self, effect: ChunkPublished) -> None:
        assert self._snapshots is not None
        assert self._driver is not None
        assert self._sink is not None
        if self._sink.exactly_once:
            # The chunk and its progress are one whole unit: commit them now, so a crash
            # reads again at most the chunk in flight (a commit per chunk costs nothing).
            self._sink.commit()
        self._snapshots.chunk_published(effect.rows)
        self._driver.chunk_published(effect.progress)
        if effect.finished:
            progress = effect.progress
            self._log.info(
                "snapshot_finished",
                kind=progress.kind,
                mode="incremental",
                snapshot_id=progress.snapshot_id,
                rows=progress.rows_done,
                chunks=progress.chunks_done,
            )

    def _periodic(self) -> None:
        """Between messages: the next snapshot chunk when Kafka has room, reports."""
        self._watch_wal()
        sink, driver, snapshots = self._sink, self._driver, self._snapshots
        assert sink is not None
        if driver is not None and driver.running and len(sink) < self._max_records // 2:
            driver.pump()
            if snapshots is not None:
                snapshots.report_incremental(driver)
        now = time.monotonic()
        if now >= self._next_report:
            self._next_report = now + REPORT_INTERVAL_S
            self._publish_report()
        report, loop, router = self._report, self._loop, self._router
        if report is None or loop is None or router is None:
            return
        if report.progress_due(now):
            report.log_progress(
                now,
                transactions=router.transactions,
                logical_messages=router.logical_messages,
                confirmed=sink.confirmed,
                server_wal_end=loop.server_wal_end,
                in_flight=len(sink),
            )

    def _publish_report(self) -> None:
        """Metrics and the status board brought up to date with the stream."""
        report, loop, router, sink = self._report, self._loop, self._router, self._sink
        if report is None or loop is None or router is None or sink is None:
            return
        report.publish(
            transactions=router.transactions,
            confirmed=sink.confirmed,
            received=loop.received,
            server_wal_end=loop.server_wal_end,
            last_commit_ts_us=router.last_commit_ts_us,
            sink=sink,
            driver=self._driver,
        )

    def _watch_wal(self) -> None:
        """The WAL the slot holds back, at most once per
        ``wal_retention.check_interval_seconds``: between messages and while the sink
        waits for Kafka (when it piles up). A failed query is logged and tried again next
        interval; a lost connection restarts the connector, as anywhere else.

        Raises:
            SlotError: above ``wal_retention.stop_bytes`` (fatal: the DBA decides).
            SourceError: the catalog connection was lost (retryable).
        """
        guard, source = self._wal_guard, self._source
        if guard is None or source is None or not guard.due(time.monotonic()):
            return
        slot = self._cfg.slot
        try:
            wal = source.slot_wal(self._server_version)
        except SourceError as exc:
            if exc.retryable:
                raise
            self._log.warning(
                "slot_wal_check_failed",
                error=str(exc),
                retry_in_s=self._cfg.wal_retention.check_interval_seconds,
            )
            return
        if wal is None:
            return
        verdict = guard.assess(wal, time.monotonic())
        labels = self._labels
        retained = wal.retained_bytes
        human = None if retained is None else format_bytes(retained)
        if retained is not None:
            metrics.SLOT_RETAINED_WAL_BYTES.labels(**labels).set(retained)
        if wal.safe_wal_size is not None:
            metrics.SLOT_SAFE_WAL_SIZE_BYTES.labels(**labels).set(wal.safe_wal_size)
        if wal.wal_status is not None:
            for status in ("reserved", "extended", "unreserved", "lost"):
                metrics.SLOT_WAL_STATUS.labels(status=status, **labels).set(
                    1 if status == wal.wal_status else 0
                )
        if verdict.warn:
            self._log.warning(
                "slot_wal_retained",
                retained_bytes=retained,
                retained=human,
                warn_bytes=guard.warn_bytes,
                stop_bytes=guard.stop_bytes,
                wal_status=wal.wal_status,
                safe_wal_size=wal.safe_wal_size,
                detail=retained_wal_advice(slot),
            )
        elif verdict.recovered:
            self._log.info(
                "slot_wal_retained_ok",
                retained_bytes=retained,
                retained=human,
                warn_bytes=guard.warn_bytes,
            )
        if verdict.level is WalLevel.STOP:
            assert guard.stop_bytes is not None
            raise stop_error(slot, wal, guard.stop_bytes)

    def _observe_latency(self, completed: list[int]) -> None:
        """Commit -> durable latency of the source transactions that just became durable."""
        now_us = time.time_ns() // 1000
        histogram = metrics.COMMIT_TO_ACK_SECONDS.labels(**self._labels)
        for commit_ts_us in completed:
            histogram.observe(max(0, now_us - commit_ts_us) / 1e6)

    def _table_encoder(self, shape: TableShape) -> TableEncoder:
        """The encoder of a table read by a snapshot: the stream's settings, its key."""
        assert self._catalog is not None
        schema, table = shape.relation.namespace, shape.relation.name
        return TableEncoder(
            shape.relation,
            connector=self._cfg.name,
            database=self._database,
            retention_topic=self._retention_topic(schema, table),
            compacted_topic=self._topics.compacted_topic(
                self._cfg.name, self._database, schema, table
            ),
            options=self._value_options,
            key_columns=shape.key_columns,
            toast=self._toast,
            placeholder=self._cfg.toast.placeholder,
            types=self._catalog.lookup,
            stats=self._stats,
            controls=self._controls.get(f"{schema}.{table}"),
        )


def _split_table(qualified: str) -> tuple[str, str]:
    schema, _, table = qualified.partition(".")
    return schema, table
