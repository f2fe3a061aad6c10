"""Publishes schema-change events: the one job between SchemaHistory and Kafka.

For each Relation message whose shape differs from the table's last known one, build
the op ``s`` event (column names, SQL types, key, what changed) and the records that
carry it: to the connector's schema topic, or in band into every partition of the
table's retention topic. The known shapes are kept in the state topic, so versions
continue across restarts. No per-event work: Relation messages are rare.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from cdc import __version__
from cdc.envelope import CONNECTOR_TYPE, Record, TxContext
from cdc.protocol.messages import Relation
from cdc.protocol.values import JsonValue
from cdc.stream.schema_history import SchemaChange, SchemaHistory, schema_of

__all__ = [
    "SCHEMA_STATE_KEY",
    "PendingSchemaEvent",
    "SchemaChanges",
    "schema_change_event",
    "schema_topic_name",
]

# The state topic's key for the known table shapes.
SCHEMA_STATE_KEY = b"schemas"


def schema_topic_name(connector: str) -> str:
    return f"{connector}.__schema"


class SchemaChanges:
    """Turns new table shapes into records; remembers the shapes it has published."""

    def __init__(
        self,
        *,
        connector: str,
        database: str,
        mode: str,
        history: SchemaHistory,
        type_names: Callable[[list[tuple[int, int]]], list[str]],
        retention_topic: Callable[[str, str], str],
        partitions: Callable[[str], int],
        log: Any,
    ) -> None:
        self._connector = connector
        self._database = database
        self._mode = mode
        self.history = history
        self._type_names = type_names
        self._retention_topic = retention_topic
        self._partitions = partitions
        self._log = log
        self.changed = False  # the history moved since it was last stored

    def observe(
        self, relation: Relation, key_columns: tuple[str, ...]
    ) -> PendingSchemaEvent | None:
        """A Relation message: the change it makes, to publish before the table's next
        data event (whose LSN the event carries; pgoutput gives Relation messages none)."""
        if self._mode == "off":
            return None
        change = self.history.observe(schema_of(relation, key_columns))
        if change is None:
            return None
        self.changed = True
        names = self._type_names([(c.type_oid, c.type_modifier) for c in relation.columns])
        return PendingSchemaEvent(relation, key_columns, change, names)

    def records(
        self, pending: PendingSchemaEvent, tx: TxContext | None, lsn: int, now_us: int
    ) -> list[Record]:
        """Records announcing the new shape (in band: one per partition, explicitly)."""
        relation, key_columns, change = pending.relation, pending.key_columns, pending.change
        columns: list[dict[str, Any]] = [
            {
                "name": c.name,
                "type": type_name,
                "type_oid": c.type_oid,
                "type_modifier": c.type_modifier,
                "key": c.name in key_columns,
            }
            for c, type_name in zip(relation.columns, pending.type_names, strict=True)
        ]
        value = schema_change_event(
            connector=self._connector,
            database=self._database,
            schema=relation.namespace,
            table=relation.name,
            version=change.version,
            columns=columns,
            key_columns=list(key_columns),
            replica_identity=relation.replica_identity.name.lower(),
            change=change.describe(),
            tx=tx,
            lsn=lsn,
            now_us=now_us,
        )
        self._log.info(
            "schema_changed",
            table=change.schema.table,
            schema_version=change.version,
            **change.describe(),
        )
        if self._mode == "inband":
            topic = self._retention_topic(relation.namespace, relation.name)
            return [Record(topic, None, value, partition=p) for p in range(self._partitions(topic))]
        key = orjson.dumps({"schema": relation.namespace, "table": relation.name})
        return [Record(schema_topic_name(self._connector), key, value)]


@dataclass(frozen=True, slots=True)
class PendingSchemaEvent:
    """A new shape seen in a Relation message, waiting for the table's next change."""

    relation: Relation
    key_columns: tuple[str, ...]
    change: SchemaChange
    type_names: list[str]


def schema_change_event(
    *,
    connector: str,
    database: str,
    schema: str,
    table: str,
    version: int,
    columns: list[dict[str, JsonValue]],
    key_columns: list[str],
    replica_identity: str,
    change: dict[str, JsonValue],
    tx: TxContext | None,
    lsn: int,
    now_us: int,
) -> bytes:
    """A schema-change event: op ``s``, the table's new shape and what changed.

    Shaped like the data envelope (``op``, ``source``, ``ts_ms``) so one consumer loop can
    dispatch on ``op``; ``before``/``after`` are absent because no row changed.
    """
    ts_us = tx.commit_ts_us if tx is not None else now_us
    return orjson.dumps(
        {
            "op": "s",
            "schema_version": version,
            "columns": columns,
            "key_columns": key_columns,
            "replica_identity": replica_identity,
            "change": change,
            "source": {
                "version": __version__,
                "connector": CONNECTOR_TYPE,
                "name": connector,
                "ts_ms": ts_us // 1000,
                "snapshot": "false",
                "db": database,
                "schema": schema,
                "table": table,
                "txId": tx.xid if tx is not None else None,
                "lsn": lsn,
            },
            "ts_ms": now_us // 1000,
            "ts_us": now_us,
        }
    )
