"""Schema-change events: the one job between SchemaHistory and the records. No I/O.

For each Relation message whose shape differs from the table's last known one, build
the op ``s`` event (column names, SQL types, key, what changed) and the records that
carry it: to the connector's schema topic, or in band into every partition of the
table's retention topic. The known shapes are kept in the state topic (stored with the
event that announces them), so versions continue across restarts. The SQL type names and
the partition count come from the edge with the Relation. No per-event work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from cdc import __version__
from cdc.envelope import CONNECTOR_TYPE, Record, TxContext
from cdc.positions import Position
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

    def __init__(self, *, connector: str, database: str, mode: str, history: SchemaHistory) -> None:
        self._connector = connector
        self._database = database
        self._mode = mode
        self.history = history

    def observe(
        self,
        relation: Relation,
        key_columns: tuple[str, ...],
        *,
        type_names: list[str],
        retention_topic: str,
        partitions: int,
        at: Position,
    ) -> PendingSchemaEvent | None:
        """A Relation message: the change it makes, to publish before the table's next
        data event (whose LSN the event carries; pgoutput gives Relation messages none).

        Args:
            type_names: the SQL name of each column's type (``numeric(12,2)``).
            retention_topic: the table's retention topic (in band events go there).
            partitions: how many partitions it has (in band: one event per partition).
            at: the identity of the data event the shape is seen at (a shape seen before
                the table's latest announcement is a replayed older one, not a change).
        """
        if self._mode == "off":
            return None
        change = self.history.observe(schema_of(relation, key_columns), at)
        if change is None:
            return None
        return PendingSchemaEvent(
            relation, key_columns, change, type_names, retention_topic, partitions
        )

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
        if self._mode == "inband":
            topic = pending.retention_topic
            return [Record(topic, None, value, partition=p) for p in range(pending.partitions)]
        key = orjson.dumps({"schema": relation.namespace, "table": relation.name})
        return [Record(schema_topic_name(self._connector), key, value)]


@dataclass(frozen=True, slots=True)
class PendingSchemaEvent:
    """A new shape seen in a Relation message, waiting for the table's next change."""

    relation: Relation
    key_columns: tuple[str, ...]
    change: SchemaChange
    type_names: list[str]
    retention_topic: str
    partitions: int


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
