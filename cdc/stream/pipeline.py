"""Wires one connector: source -> decoder -> envelope -> sink -> positions -> slot ack.

Data flows one way. This module owns the streaming loop and its timing: it reads
CopyData from the source, decodes, encodes records, produces them, and sends the slot
the LSN that ``positions`` says is safe. Keepalives that ask for a reply are answered at
once; while Kafka is slow, reading pauses (bounded memory) but status updates continue,
so PostgreSQL never drops us for silence (``wal_sender_timeout``). Snapshot decisions and
their state live in ``snapshot_control``; the loop calls it only on snapshot traffic.

Off the hot path, the rest lives beside it: ``side_channel`` produces the records that
are not row changes (snapshot chunks, schema changes, messages, outbox rows),
``table_topics`` makes the tables' topics, ``connector_report`` publishes metrics, the
status board and the periodic summary. The per-event path of ``_stream`` calls none of
them; it must not gain function calls, attribute lookups or log lines.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import structlog

from cdc import metrics
from cdc.config import ConnectorConfig, DaemonConfig, TopicsConfig
from cdc.envelope import EnvelopeEncoder, TableEncoder, TxContext
from cdc.errors import SinkError, SourceError
from cdc.kafka.sink import KafkaSink, ProduceRejected
from cdc.kafka.topics import TableTopics
from cdc.lsn import format_lsn
from cdc.positions import PositionTracker, Transaction
from cdc.postgres.catalog import TypeCatalog
from cdc.postgres.snapshot_reader import TableShape
from cdc.postgres.source import ReplicationSource, protocol_version_for
from cdc.protocol.messages import (
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    PrimaryKeepalive,
    Relation,
    ReplicaIdentity,
    Truncate,
    Type,
    Update,
)
from cdc.protocol.pgoutput import PgoutputDecoder
from cdc.protocol.replication import (
    PG_EPOCH_UNIX_US,
    encode_standby_status,
    parse_copy_data,
    unix_us_to_pg_us,
)
from cdc.protocol.typeinfo import TypeResolver
from cdc.protocol.values import ConversionStats, ValueOptions
from cdc.snapshots.control import SnapshotControl
from cdc.snapshots.incremental import IncrementalDriver
from cdc.status import BOARD
from cdc.stream.report import ConnectorReport, report_tables
from cdc.stream.side_channel import SideChannel, rejected
from cdc.stream.toast_store import ToastStore

__all__ = ["ConnectorPipeline"]

# How often the loop leaves the hot path to poll Kafka for acks, check failures and
# maybe send a status update: often enough for ~ms latency, rare enough to cost nothing.
HOUSEKEEPING_EVERY = 512
# The slot hears from us at least this often when something changed: confirming
# promptly lets PostgreSQL recycle WAL; more often would only add round trips.
CONFIRM_INTERVAL_S = 1.0
# Wait on the socket at most this long when idle, so stop requests are seen quickly.
IDLE_WAIT_S = 0.1
# ... and at most this long while Kafka owes acks: acks are only seen in poll(), and the
# commit-to-confirm latency should not wait for the next WAL message to arrive.
ACK_WAIT_S = 0.002
# On SIGTERM, wait this long for Kafka to acknowledge what was produced.
SHUTDOWN_FLUSH_S = 30.0
# Records per event, for sizing the producer queue: retention + compacted. (A key change
# gives four: delete, tombstone, create, row; that is rare and within the queue's slack.)
RECORDS_PER_EVENT = 2
KEY_CHANGE_RECORDS = 4


class ConnectorPipeline:
    """Streams one connector until ``stop`` is set; raises CdcError on failure."""

    def __init__(
        self, daemon: DaemonConfig, connector: ConnectorConfig, stop: threading.Event
    ) -> None:
        self._daemon = daemon
        self._cfg = connector
        self._stop = stop
        self._topics: TopicsConfig = connector.effective_topics(daemon)
        self._log = structlog.get_logger("cdc.stream.pipeline").bind(
            connector=connector.name, slot=connector.slot
        )
        self._keys: dict[tuple[str, str], tuple[str, ...]] = {}
        self._side: SideChannel | None = None
        values = connector.values
        self._value_options = ValueOptions(
            decimal_handling=values.decimal_handling,
            binary_handling=values.binary_handling,
            time_precision=values.time_precision,
            interval_handling=values.interval_handling,
            hstore_handling=values.hstore_handling,
            on_conversion_error=values.on_conversion_error,
        )
        self._types: TypeResolver | None = None
        self._catalog: TypeCatalog | None = None
        self._toast: ToastStore | None = None
        self._conversion_stats = ConversionStats()
        self._table_topics: TableTopics | None = None
        self._snapshots: SnapshotControl | None = None
        self._driver: IncrementalDriver | None = None
        self._database = ""
        self._max_records = max(1, connector.max_in_flight_events) * RECORDS_PER_EVENT
        self._tracker = PositionTracker(0)
        self._received = 0
        self._server_wal_end = 0
        self._last_status = 0.0
        self._last_sent_confirmed = -1
        self._events = {"c": 0, "u": 0, "d": 0, "t": 0}
        self._report = ConnectorReport(
            connector.name,
            events=self._events,
            stats=self._conversion_stats,
            log=self._log,
            now=time.monotonic(),
        )
        self._transactions = 0
        self._logical_messages = 0
        self._last_commit_ts_us = 0
        self._source: ReplicationSource | None = None
        self._sink: KafkaSink | None = None
        self._labels = {"connector": connector.name}
        self._latency = metrics.COMMIT_TO_ACK_SECONDS.labels(**self._labels)

    # --- set-up ---------------------------------------------------------------------

    def run(self) -> None:
        """Prepare, stream until stopped, then flush and confirm what Kafka holds."""
        cfg = self._cfg
        source = ReplicationSource(
            cfg.postgres.dsn.get_secret_value(),
            slot=cfg.slot,
            publication=cfg.publication,
            application_name=f"cdc:{cfg.name}",
        )
        self._source = source
        try:
            info = source.connect()
            self._catalog = TypeCatalog(source.catalog_connection)
            self._types = self._catalog.lookup
            if cfg.toast.mode == "fill":
                self._toast = ToastStore(Path(cfg.toast.store.replace("{connector}", cfg.name)))
            self._database = info.database
            # The signal and outbox tables must be published (their rows reach us through
            # the stream) but are not captured: no table topics, no snapshot.
            special = {t for t in (cfg.snapshot.signal_table, cfg.outbox.table) if t}
            wanted = cfg.table_names
            if wanted is not None:
                wanted = [*wanted, *(_split_table(t) for t in sorted(special))]
            source.ensure_publication(wanted, create=cfg.create_publication)
            tables = [t for t in source.published_tables() if t.qualified not in special]
            report_tables(self._log, tables)
            self._keys = {(t.schema, t.name): t.key_columns for t in tables}
            self._sink = KafkaSink(
                self._daemon.kafka.bootstrap_servers,
                self._daemon.kafka.properties,
                client_id=f"cdc-{cfg.name}",
                max_queued_records=self._max_records + 10_000,
                log=self._log,
            )
            self._sink.list_topics()
            table_topics = self._table_topics = TableTopics(
                connector=cfg.name,
                database=self._database,
                topics=self._topics,
                sink=self._sink,
                log=self._log,
            )
            table_topics.ensure([(t.schema, t.name, bool(t.key_columns)) for t in tables])
            snapshots = self._snapshots = SnapshotControl(
                connector=cfg,
                topics=self._topics,
                database=self._database,
                sink=self._sink,
                published=[t.qualified for t in tables],
                stop=self._stop,
                log=self._log,
                table_encoder=self._table_encoder,
            )
            snapshots.open_state()
            self._side = SideChannel(
                connector=cfg,
                topics=self._topics,
                table_topics=table_topics,
                database=self._database,
                sink=self._sink,
                snapshots=snapshots,
                key_columns=self._key_columns,
                wait_for_kafka=self._wait_for_kafka,
                max_records=self._max_records,
                poll_every=HOUSEKEEPING_EVERY,
                log=self._log,
            )
            self._side.open_schema_changes(source.format_types)
            mode = cfg.snapshot.mode
            slot = source.ensure_slot(
                create=cfg.create_slot,
                before_create=lambda: snapshots.before_slot_create(
                    tables, new_topics=table_topics.created
                ),
                export_snapshot=mode != "never",
                temporary=mode == "initial_only",
            )
            if slot.created:
                self._log.info("slot_created", lsn=format_lsn(slot.confirmed_flush_lsn))
            if not snapshots.snapshot_before_streaming(slot, tables):
                return
            if self._toast is not None:
                self._toast.commit()  # the snapshot's rows, before anything is confirmed
            self._tracker = PositionTracker(slot.confirmed_flush_lsn)
            self._received = slot.confirmed_flush_lsn
            protocol = protocol_version_for(info.version_num)
            source.start(slot.confirmed_flush_lsn, protocol)
            self._log.info(
                "streaming_started",
                lsn=format_lsn(slot.confirmed_flush_lsn),
                protocol_version=protocol,
                server_version=info.version_num,
                tables=len(tables),
            )
            metrics.CONNECTOR_UP.labels(**self._labels).set(1)
            BOARD.update(
                cfg.name,
                phase="streaming",
                slot=cfg.slot,
                started_lsn=format_lsn(slot.confirmed_flush_lsn),
                snapshot=None,
                error=None,
            )
            self._driver = snapshots.start_driver(info.version_num)
            self._stream(PgoutputDecoder(protocol))
            self._shutdown()
        finally:
            metrics.CONNECTOR_UP.labels(**self._labels).set(0)
            if self._toast is not None:
                self._toast.close()
            if self._snapshots is not None:
                self._snapshots.close()
            source.close()

    def _key_columns(self, relation: Relation) -> tuple[str, ...] | None:
        """Key by the primary key where pgoutput's key flags do not name it.

        Under REPLICA IDENTITY FULL every column is flagged, under NOTHING none: keying
        by those would make every update a key change, or lose the key altogether.
        """
        if relation.replica_identity not in (ReplicaIdentity.FULL, ReplicaIdentity.NOTHING):
            return None
        name = (relation.namespace, relation.name)
        keys = self._keys.get(name)
        if keys is None:
            assert self._source is not None
            keys = self._keys[name] = self._source.key_columns(*name)
        return keys

    # --- streaming ------------------------------------------------------------------

    def _stream(self, decoder: PgoutputDecoder) -> None:
        source = self._source
        sink = self._sink
        assert source is not None
        assert sink is not None
        cfg = self._cfg
        encoder = EnvelopeEncoder(
            connector=cfg.name,
            database=self._database,
            retention_topic=lambda s, t: self._topics.retention_topic(
                cfg.name, self._database, s, t
            ),
            compacted_topic=lambda s, t: self._topics.compacted_topic(
                cfg.name, self._database, s, t
            ),
            options=self._value_options,
            key_columns=self._key_columns,
            toast=self._toast,
            placeholder=cfg.toast.placeholder,
            types=self._types,
            stats=self._conversion_stats,
        )
        self._report.encoder = encoder
        tracker = self._tracker
        read = source.read
        decode = decoder.decode
        encode = encoder.encode
        produce = sink.produce
        stop = self._stop
        events = self._events
        time_ns = time.time_ns
        tx: Transaction | None = None
        on_delivery: Any = None
        tx_ctx: TxContext | None = None
        last_commit_lsn: int | None = None
        countdown = HOUSEKEEPING_EVERY
        driver = self._driver
        assert driver is not None
        snapshots = self._snapshots
        assert snapshots is not None
        signal_oid: int | None = None
        outbox_oid: int | None = None
        side = self._side
        assert side is not None
        pending_schema = side.pending_schema
        table_topics = self._table_topics
        assert table_topics is not None

        while not stop.is_set():
            data = read()
            if data is None:
                self._housekeeping()
                # Records awaiting acks: wake soon to see them (confirm promptly);
                # otherwise sleep until the server sends something.
                source.wait(ACK_WAIT_S if len(sink) else IDLE_WAIT_S)
                continue
            message = parse_copy_data(data)
            if isinstance(message, PrimaryKeepalive):
                self._server_wal_end = message.wal_end
                tracker.on_keepalive(message.wal_end)
                if message.reply_requested:
                    self._send_status(force=True)
                continue
            self._server_wal_end = message.wal_end
            lsn = message.wal_start
            self._received = max(self._received, lsn)
            msg = decode(message.data)
            kind = type(msg)
            if kind is Insert or kind is Update or kind is Delete or kind is Truncate:
                if tx is None or tx_ctx is None:
                    raise SourceError(
                        f"row change outside a transaction at LSN {format_lsn(lsn)}:"
                        " the replication stream is out of order"
                    )
                if (
                    outbox_oid is not None
                    and kind is not Truncate
                    and msg.relation.oid == outbox_oid  # type: ignore[union-attr]
                ):
                    if kind is Insert and not side.publish_routed(
                        side.outbox_records(cast(Insert, msg)), tx, lsn
                    ):
                        return
                    continue
                if (
                    signal_oid is not None
                    and kind is not Truncate
                    and msg.relation.oid == signal_oid  # type: ignore[union-attr]
                ):
                    chunk = snapshots.signal_row(msg, tx_ctx, lsn)
                    if chunk is not None:
                        if not side.publish(chunk, tx, lsn):
                            return
                        snapshots.chunk_published()
                    continue
                if pending_schema:
                    oids = (
                        [r.oid for r in msg.relations]  # type: ignore[union-attr]
                        if kind is Truncate
                        else [msg.relation.oid]  # type: ignore[union-attr]
                    )
                    if not side.publish_schema(oids, tx, tx_ctx, lsn):
                        return
                now_us = time_ns() // 1000
                records = encode(msg, tx_ctx, lsn, now_us)  # type: ignore[arg-type]
                window = driver.window_table
                if window is not None:
                    if kind is Truncate:
                        for truncated in msg.relations:  # type: ignore[union-attr]
                            driver.truncate(f"{truncated.namespace}.{truncated.name}")
                    else:
                        relation = msg.relation  # type: ignore[union-attr]
                        table = f"{relation.namespace}.{relation.name}"
                        if table == window:
                            driver.change(table, records)
                for record in records:
                    tx.pending += 1
                    try:
                        produce(record.topic, record.value, record.key, on_delivery=on_delivery)
                    except BufferError:
                        if not self._wait_for_kafka(lambda: len(sink) < self._max_records):
                            return
                        produce(record.topic, record.value, record.key, on_delivery=on_delivery)
                    except ProduceRejected as exc:
                        raise rejected(exc, record, lsn) from exc
                if kind is Insert:
                    events["c"] += 1
                elif kind is Update:
                    if len(records) == KEY_CHANGE_RECORDS:  # published as a d and a c
                        events["d"] += 1
                        events["c"] += 1
                    else:
                        events["u"] += 1
                elif kind is Delete:
                    events["d"] += 1
                else:
                    events["t"] += 1
                countdown -= 1
                if countdown <= 0:
                    countdown = HOUSEKEEPING_EVERY
                    self._housekeeping()
                    if len(sink) >= self._max_records and not self._wait_for_kafka(
                        lambda: len(sink) < self._max_records // 2
                    ):
                        return
            elif kind is Begin:
                begin = cast(Begin, msg)
                commit_ts_us = begin.commit_ts + PG_EPOCH_UNIX_US
                tx = tracker.begin(commit_ts_us)
                on_delivery = tx.on_delivery
                tx_ctx = TxContext(
                    xid=begin.xid,
                    commit_lsn=begin.final_lsn,
                    commit_ts_us=commit_ts_us,
                    last_commit_lsn=last_commit_lsn,
                )
            elif kind is Commit:
                commit = cast(Commit, msg)
                if tx is None:
                    raise SourceError(
                        f"commit without a transaction at LSN {format_lsn(lsn)}:"
                        " the replication stream is out of order"
                    )
                tracker.commit(tx, commit.end_lsn)
                if snapshots.progress_in_tx is not None:
                    snapshots.transaction_committed(commit.end_lsn)
                last_commit_lsn = commit.commit_lsn
                self._last_commit_ts_us = commit.commit_ts + PG_EPOCH_UNIX_US
                self._transactions += 1
                tx = None
                tx_ctx = None
            elif kind is Relation:
                relation = cast(Relation, msg)
                qualified = f"{relation.namespace}.{relation.name}"
                if qualified == cfg.snapshot.signal_table:
                    signal_oid = relation.oid
                    continue
                if qualified == cfg.outbox.table:
                    outbox_oid = relation.oid
                    side.outbox_relation(relation)
                    continue
                if (relation.namespace, relation.name) not in table_topics.ensured:
                    has_key = any(c.is_key for c in relation.columns)
                    table_topics.ensure([(relation.namespace, relation.name, has_key)])
                    if not has_key:
                        self._log.warning(
                            "table_without_key",
                            table=f"{relation.namespace}.{relation.name}",
                            detail="events get a null key and skip the compacted topic",
                        )
                # The table's shape may have changed (DDL): refresh the cached key.
                self._keys.pop((relation.namespace, relation.name), None)
                side.relation_changed(relation)
            elif kind is LogicalMessage:
                logical = cast(LogicalMessage, msg)
                snapshot_records = (
                    driver.message(logical, tx_ctx, lsn) if tx_ctx is not None else None
                )
                if snapshot_records is not None:
                    assert tx is not None
                    if not side.publish(snapshot_records, tx, lsn):
                        return
                    snapshots.chunk_published()
                else:
                    now_us = time_ns() // 1000
                    routed = side.messages.record(logical, tx_ctx, lsn, now_us)
                    if routed is not None:
                        self._logical_messages += 1
                        # A non-transactional message stands alone: track it as a
                        # transaction of its own, ending at its LSN, "committed" now (so
                        # the commit-to-ack histogram measures its acknowledgement).
                        own = tx is None
                        carrier = tracker.begin(now_us) if own else tx
                        assert carrier is not None
                        if not side.publish_routed([routed], carrier, lsn):
                            return
                        if own:
                            tracker.commit(carrier, lsn)
            elif kind is Type:
                # A custom type was (re)defined: its next use reads the catalog again.
                self._type_catalog_invalidate(cast(Type, msg).oid)
            elif kind is Origin:
                pass  # origins carry nothing to publish
            else:
                raise SourceError(
                    f"unexpected pgoutput message {kind.__name__} at LSN {format_lsn(lsn)}:"
                    " cdc does not request streaming or two-phase transactions"
                )

    def _type_catalog_invalidate(self, oid: int) -> None:
        if self._catalog is not None:
            self._catalog.invalidate(oid)

    def _table_encoder(self, shape: TableShape) -> TableEncoder:
        """The encoder of a table read by a snapshot: the stream's settings, its key."""
        schema, table = shape.relation.namespace, shape.relation.name
        return TableEncoder(
            shape.relation,
            connector=self._cfg.name,
            database=self._database,
            retention_topic=self._topics.retention_topic(
                self._cfg.name, self._database, schema, table
            ),
            compacted_topic=self._topics.compacted_topic(
                self._cfg.name, self._database, schema, table
            ),
            options=self._value_options,
            key_columns=shape.key_columns,
            toast=self._toast,
            placeholder=self._cfg.toast.placeholder,
            types=self._types,
            stats=self._conversion_stats,
        )

    def _wait_for_kafka(self, ready: Callable[[], bool]) -> bool:
        """Backpressure: stop reading until Kafka catches up; keep the slot informed.

        Returns False when a stop was requested meanwhile: the caller leaves the stream
        and the shutdown flush takes over.
        """
        sink = self._sink
        assert sink is not None
        started = time.monotonic()
        self._log.info("kafka_backpressure_started", in_flight=len(sink))
        while not ready():
            sink.poll(0.1)
            self._check_failures()
            self._observe_latency()
            # Not reading means not seeing keepalives: speak first, every second, so
            # PostgreSQL does not end the connection after wal_sender_timeout.
            self._send_status(force=False, heartbeat=True)
            if self._stop.is_set():
                break
        waited = time.monotonic() - started
        metrics.BACKPRESSURE_SECONDS.labels(**self._labels).inc(waited)
        self._log.info("kafka_backpressure_ended", waited_s=round(waited, 3))
        return not self._stop.is_set()

    def _housekeeping(self) -> None:
        sink = self._sink
        assert sink is not None
        sink.poll(0)
        self._check_failures()
        self._observe_latency()
        snapshots = self._snapshots
        if snapshots is not None and snapshots.pending_progress:
            snapshots.save_confirmed_progress(self._tracker.confirmed)
        driver = self._driver
        if driver is not None and driver.running and len(sink) < self._max_records // 2:
            driver.pump()
            if snapshots is not None:
                snapshots.report_incremental(driver)
        self._send_status(force=False)
        now = time.monotonic()
        report = self._report
        if report.progress_due(now):
            self._publish_metrics()
            report.log_progress(
                now,
                transactions=self._transactions,
                logical_messages=self._logical_messages,
                confirmed=self._tracker.confirmed,
                server_wal_end=self._server_wal_end,
                in_flight=len(sink),
            )

    def _observe_latency(self) -> None:
        """Commit -> confirmable latency of the transactions the last poll completed."""
        tracker = self._tracker
        tracker.confirmable()
        completed = tracker.completed
        if not completed:
            return
        now_us = time.time_ns() // 1000
        histogram = self._latency
        for commit_ts_us in completed:
            histogram.observe(max(0, now_us - commit_ts_us) / 1e6)
        completed.clear()

    def _check_failures(self) -> None:
        failures = self._tracker.failures
        if failures:
            first = failures[0]
            raise SinkError(
                f"Kafka did not accept a record for topic {first.topic!r}: {first.error}."
                f" Nothing after LSN {format_lsn(self._tracker.confirmed)} was confirmed;"
                " the connector restarts from there",
                topic=first.topic,
            )

    def _send_status(self, *, force: bool, heartbeat: bool = False) -> None:
        """Tell the slot what is safe: at once when ``force``, else at most once a second
        when the confirmed LSN moved (or, with ``heartbeat``, anyway), and at least every
        ``status_interval_seconds``."""
        now = time.monotonic()
        confirmed = self._tracker.confirmable()
        elapsed = now - self._last_status
        if not force and elapsed < CONFIRM_INTERVAL_S:
            return
        if (
            not force
            and not heartbeat
            and confirmed == self._last_sent_confirmed
            and elapsed < self._cfg.status_interval_seconds
        ):
            return
        assert self._source is not None
        if self._toast is not None:
            # What the fill store remembers must be durable up to what we confirm: the
            # stream after the confirmed LSN is replayed on restart, what is before is not.
            self._toast.commit()
        written = max(self._received, confirmed)
        self._source.send(
            encode_standby_status(
                written, confirmed, confirmed, unix_us_to_pg_us(time.time_ns() // 1000)
            )
        )
        self._last_status = now
        self._last_sent_confirmed = confirmed
        self._publish_metrics()

    def _publish_metrics(self) -> None:
        self._report.publish(
            transactions=self._transactions,
            confirmed=self._tracker.confirmed,
            received=self._received,
            server_wal_end=self._server_wal_end,
            last_commit_ts_us=self._last_commit_ts_us,
            sink=self._sink,
            driver=self._driver,
        )

    # --- shutdown -------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Stop reading, wait for Kafka's acks, confirm what is durable, leave."""
        sink = self._sink
        assert sink is not None
        remaining = sink.flush(SHUTDOWN_FLUSH_S)
        self._check_failures()
        self._observe_latency()
        self._send_status(force=True)
        self._log.info(
            "streaming_stopped",
            lsn=format_lsn(self._tracker.confirmed),
            unacknowledged=remaining,
            events=dict(self._events),
        )
        if remaining:
            raise SinkError(
                f"{remaining} records were still unacknowledged by Kafka after"
                f" {SHUTDOWN_FLUSH_S:.0f}s; they were not confirmed and will be sent again"
                f" from LSN {format_lsn(self._tracker.confirmed)} on restart"
            )


def _split_table(qualified: str) -> tuple[str, str]:
    schema, _, table = qualified.partition(".")
    return schema, table
