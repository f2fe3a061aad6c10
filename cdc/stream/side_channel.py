"""Records a connector publishes off the hot path, inside a source transaction.

Besides the row-change records the streaming loop produces itself (the hot path, kept
in ``pipeline``), a transaction can carry records of four other kinds: incremental
snapshot chunks, schema-change events, logical decoding messages and outbox rows. They
are rare next to row changes, so they share one slower produce path here: with headers
and an explicit partition, backpressure, and each record counted in the transaction it
belongs to, so the slot is confirmed past it only once Kafka holds it. Hence the name:
a side channel beside the stream, in its transactions and its order.

This module also holds the schema-change events a Relation message announces until the
table's next data event (whose LSN they carry), and creates the topics of routed
records on first use.

It must not read the replication stream, decide what the slot may confirm, or log per
record; it never waits for Kafka itself: the pipeline's backpressure wait is passed in,
so the slot keeps hearing from us while Kafka is slow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from cdc.config import ConnectorConfig, TopicsConfig
from cdc.envelope import Record, TxContext
from cdc.errors import RecordTooLargeError, SinkError
from cdc.kafka.sink import KafkaSink, ProduceRejected, is_too_large
from cdc.kafka.topics import TableTopics
from cdc.lsn import format_lsn
from cdc.positions import Transaction
from cdc.protocol.messages import Insert, Relation
from cdc.snapshots.control import SnapshotControl
from cdc.stream.routing import MessageRouter, OutboxRouter
from cdc.stream.schema_changes import (
    SCHEMA_STATE_KEY,
    PendingSchemaEvent,
    SchemaChanges,
    schema_topic_name,
)
from cdc.stream.schema_history import SchemaHistory

__all__ = ["SideChannel", "rejected"]

# json and jsonb: an outbox payload of these types is published as the JSON it is.
_JSON_TYPE_OIDS = frozenset({114, 3802})


class SideChannel:
    """One connector's off-hot-path records; lives as long as its pipeline run.

    The pipeline calls ``open_schema_changes`` once at set-up (after the state topic was
    read), then, while streaming: ``relation_changed`` and ``outbox_relation`` on
    Relation messages, ``publish_schema`` before a data event while ``pending_schema``
    is not empty, ``publish_routed`` for messages and outbox rows, and ``publish`` for
    snapshot chunks.
    """

    __slots__ = (
        "_cfg",
        "_database",
        "_key_columns",
        "_log",
        "_max_records",
        "_outbox",
        "_outbox_json",
        "_poll_every",
        "_schema_changes",
        "_sink",
        "_snapshots",
        "_table_topics",
        "_topics",
        "_wait_for_kafka",
        "messages",
        "pending_schema",
    )

    def __init__(
        self,
        *,
        connector: ConnectorConfig,
        topics: TopicsConfig,
        table_topics: TableTopics,
        database: str,
        sink: KafkaSink,
        snapshots: SnapshotControl,
        key_columns: Callable[[Relation], tuple[str, ...] | None],
        wait_for_kafka: Callable[[Callable[[], bool]], bool],
        max_records: int,
        poll_every: int,
        log: Any,
    ) -> None:
        """No I/O here: ``open_schema_changes`` reads the history and makes its topic.

        Args:
            connector: the connector's settings (``messages``, ``outbox``,
                ``schema_changes``).
            topics: the effective topic settings (partitions, replication factor).
            database: the source database's name, as it appears in topics and events.
            sink: the connector's Kafka sink.
            table_topics: makes the topics of routed records and schema changes.
            snapshots: the connector's snapshot control, whose state topic also keeps
                the schema history.
            key_columns: the pipeline's key lookup for REPLICA IDENTITY FULL/NOTHING
                tables (None: pgoutput's key flags name the key).
            wait_for_kafka: the pipeline's backpressure wait; given a readiness test, it
                returns False when a stop came meanwhile.
            max_records: records in flight above which producing waits for Kafka.
            poll_every: serve Kafka's delivery callbacks every this many records of one
                batch (a snapshot chunk can be long).
            log: the connector's bound logger (``connector`` and ``slot`` already bound).
        """
        self._cfg = connector
        self._topics = topics
        self._table_topics = table_topics
        self._database = database
        self._sink = sink
        self._snapshots = snapshots
        self._key_columns = key_columns
        self._wait_for_kafka = wait_for_kafka
        self._max_records = max_records
        self._poll_every = poll_every
        self._log = log
        self.messages = MessageRouter(
            connector.messages, connector=connector.name, database=database
        )
        self._outbox = OutboxRouter(connector.outbox, connector=connector.name)
        self._outbox_json: tuple[str, ...] = ()
        self._schema_changes: SchemaChanges | None = None
        # Schema-change events by relation OID, held until the table's next data event.
        # Public: the streaming loop tests it (a plain dict) before every data event.
        self.pending_schema: dict[int, PendingSchemaEvent] = {}

    # --- schema changes -----------------------------------------------------------------

    def open_schema_changes(self, type_names: Callable[[list[tuple[int, int]]], list[str]]) -> None:
        """Read the schema history kept in the state topic; make the schema topic.

        Raises:
            SinkError: the stored history is not readable.
        """
        raw = self._snapshots.state_records.get(SCHEMA_STATE_KEY)
        try:
            history = SchemaHistory.from_json(raw) if raw is not None else SchemaHistory()
        except ValueError as exc:
            raise SinkError(
                f"the schema history in the state topic is not readable: {exc}"
            ) from exc
        cfg = self._cfg
        if cfg.schema_changes == "topic":
            # One partition: every schema change of the connector in order.
            self._table_topics.ensure_log_topics([schema_topic_name(cfg.name)], partitions=1)
        self._schema_changes = SchemaChanges(
            connector=cfg.name,
            database=self._database,
            mode=cfg.schema_changes,
            history=history,
            type_names=type_names,
            retention_topic=lambda schema, table: self._topics.retention_topic(
                cfg.name, self._database, schema, table
            ),
            partitions=self._sink.partitions,
            log=self._log,
        )

    def relation_changed(self, relation: Relation) -> None:
        """A Relation message: the table's shape may have changed (DDL). Hold a
        schema-change event for a new shape: it is published just before the table's
        next data event, with that event's LSN. (The caller first drops its cached key.)"""
        changes = self._schema_changes
        if changes is None:
            return
        key_columns = self._key_columns(relation)
        if key_columns is None:
            key_columns = tuple(c.name for c in relation.columns if c.is_key)
        pending = changes.observe(relation, key_columns)
        if pending is not None:
            self.pending_schema[relation.oid] = pending

    def publish_schema(self, oids: list[int], tx: Transaction, tx_ctx: TxContext, lsn: int) -> bool:
        """Publish the held schema-change events of these relations, in ``tx``. False when
        a stop came during backpressure."""
        changes = self._schema_changes
        assert changes is not None
        now_us = time.time_ns() // 1000
        for oid in oids:
            pending = self.pending_schema.pop(oid, None)
            if pending is None:
                continue
            if not self.publish(changes.records(pending, tx_ctx, lsn, now_us), tx, lsn):
                return False
            self._snapshots.write_record(SCHEMA_STATE_KEY, changes.history.to_json())
        return True

    # --- messages and the outbox ------------------------------------------------------

    def outbox_relation(self, relation: Relation) -> None:
        """The outbox table's Relation message: which payload columns are JSON."""
        self._outbox_json = tuple(c.name for c in relation.columns if c.type_oid in _JSON_TYPE_OIDS)

    def outbox_records(self, change: Insert) -> list[Record]:
        """The routed record of a row inserted into the outbox table."""
        return self._outbox.records(change, self._outbox_json)

    def publish_routed(self, records: list[Record], tx: Transaction, lsn: int) -> bool:
        """Produce message and outbox records (rare), creating their topics on first use."""
        self._table_topics.ensure_log_topics(r.topic for r in records)
        return self.publish(records, tx, lsn)

    # --- producing --------------------------------------------------------------------

    def publish(self, records: Iterable[Record], tx: Transaction, lsn: int) -> bool:
        """Produce records that belong to ``tx``, off the hot path (snapshot chunks,
        schema changes, messages, outbox): with their headers and partition, if any.
        False when a stop came during backpressure.

        Raises:
            SinkError: Kafka refused a record (``RecordTooLargeError`` for its size).
        """
        sink = self._sink
        on_delivery = tx.on_delivery
        poll_every = self._poll_every
        for index, record in enumerate(records):
            tx.pending += 1
            headers: list[tuple[str, str | bytes | None]] | None = (
                None if record.headers is None else list(record.headers)
            )
            while True:
                try:
                    sink.produce(
                        record.topic,
                        record.value,
                        record.key,
                        partition=record.partition,
                        headers=headers,
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    if not self._wait_for_kafka(lambda: len(sink) < self._max_records):
                        return False
                except ProduceRejected as exc:
                    raise rejected(exc, record, lsn) from exc
            if index % poll_every == poll_every - 1:
                sink.poll(0)
        return True


def rejected(exc: BaseException, record: Record, lsn: int) -> SinkError:
    """The error for a record Kafka refused for good (``lsn``: its change's): one that
    names the topic and LSN and, for a record too large, the settings to raise."""
    size = len(record.value or b"") + len(record.key or b"")
    where = f"record for topic {record.topic!r} (change at LSN {format_lsn(lsn)}, {size} bytes)"
    if is_too_large(exc):
        return RecordTooLargeError(
            f"Kafka refuses the {where}: it is larger than the producer's message.max.bytes"
            " or the topic's max.message.bytes. Raise kafka.properties.message.max.bytes in"
            " the daemon config and the topic's max.message.bytes (and the broker's"
            " message.max.bytes) above it, then restart: nothing after the last confirmed"
            " LSN was lost",
            topic=record.topic,
        )
    return SinkError(f"Kafka refused the {where}: {exc}", topic=record.topic)
