"""Routes what is not a table row event: logical decoding messages and outbox rows. No I/O.

The one job: turn a ``pg_logical_emit_message`` message into a record of the messages
topic (Debezium's logical decoding message event), and a row inserted into an outbox
table into a record of the topic of its aggregate type, keyed by the aggregate id (as
Debezium's outbox event router does), so services publish domain events atomically with
their data, through the legacy database's own transactions.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence

import orjson

from cdc import __version__
from cdc.config import MessagesConfig, OutboxConfig
from cdc.envelope import Record, TxContext
from cdc.protocol.messages import Insert, LogicalMessage

__all__ = ["MessageRouter", "OutboxRouter"]

_TOPIC_ILLEGAL = re.compile(r"[^A-Za-z0-9._-]")

# Prefixes cdc writes itself (watermarks, signals): never published as messages.
INTERNAL_PREFIX = "cdc."


def _topic_part(value: str) -> str:
    """A value as a topic-name part: Kafka allows only [A-Za-z0-9._-]."""
    return _TOPIC_ILLEGAL.sub("_", value) or "_"


class MessageRouter:
    """Logical decoding messages -> the messages topic."""

    def __init__(self, config: MessagesConfig, *, connector: str, database: str) -> None:
        self._template = config.topic
        self._prefixes = frozenset(config.prefixes)
        self._connector = connector
        self._database = database

    def record(
        self, message: LogicalMessage, tx: TxContext | None, lsn: int, now_us: int
    ) -> Record | None:
        """The record of one message, or None when it is not to be published."""
        prefix = message.prefix
        if self._template is None or prefix.startswith(INTERNAL_PREFIX):
            return None
        if self._prefixes and prefix not in self._prefixes:
            return None
        topic = self._template.replace("{connector}", self._connector).replace(
            "{prefix}", _topic_part(prefix)
        )
        ts_us = tx.commit_ts_us if tx is not None else now_us
        value = orjson.dumps(
            {
                "op": "m",
                "source": {
                    "version": __version__,
                    "connector": "postgresql",
                    "name": self._connector,
                    "ts_ms": ts_us // 1000,
                    "snapshot": "false",
                    "db": self._database,
                    "schema": "",
                    "table": "",
                    "txId": tx.xid if tx is not None else None,
                    "lsn": message.lsn,
                },
                "message": {
                    "prefix": prefix,
                    "content": base64.b64encode(message.content).decode(),
                    "transactional": message.transactional,
                },
                "ts_ms": now_us // 1000,
            }
        )
        return Record(topic, orjson.dumps({"prefix": prefix}), value)


class OutboxRouter:
    """Rows inserted into the outbox table -> the topic of their aggregate type."""

    def __init__(self, config: OutboxConfig, *, connector: str) -> None:
        self._config = config
        self._connector = connector
        #: ``schema.table`` of the outbox table; None: no outbox.
        self.table = config.table

    def records(self, change: Insert, json_columns: Sequence[str]) -> list[Record]:
        """The routed record of an outbox row (updates and deletes of it are ignored:
        the pattern inserts events, and often deletes them right away)."""
        cfg = self._config
        names = [c.name for c in change.relation.columns]
        row = dict(zip(names, change.new, strict=True))
        aggregate_type = _text(row.get(cfg.aggregate_type_column))
        aggregate_id = _text(row.get(cfg.aggregate_id_column))
        payload = row.get(cfg.payload_column)
        topic = cfg.topic.replace("{connector}", self._connector).replace(
            "{aggregate_type}", _topic_part(aggregate_type or "unknown")
        )
        if payload is None or not isinstance(payload, str):
            value = None if payload is None else orjson.dumps(str(payload))
        elif cfg.payload_column in json_columns:
            value = payload.encode()  # already JSON: published as it is
        else:
            value = orjson.dumps(payload)
        headers = [("id", (_text(row.get(cfg.id_column)) or "").encode())]
        event_type = _text(row.get(cfg.type_column))
        if event_type is not None:
            headers.append(("type", event_type.encode()))
        key = None if aggregate_id is None else orjson.dumps(aggregate_id)
        return [Record(topic, key, value, tuple(headers))]


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
