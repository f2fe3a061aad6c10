"""Debezium's transaction metadata (``provide_transaction_metadata``). No I/O.

The one job: count the data events of one source transaction as the envelope encodes
them, for each event's ``transaction`` block, and build the BEGIN and END records of the
transaction topic (Debezium's ``<topic.prefix>.transaction``, here
``<connector>.transaction``)::

    key:   {"id": "<xid>:<commit lsn>"}
    BEGIN: {"status": "BEGIN", "id": ..., "ts_ms": <commit time>, "event_count": null,
            "data_collections": null}
    END:   {"status": "END", "id": ..., "ts_ms": ..., "event_count": N,
            "data_collections": [{"data_collection": "<schema>.<table>", "event_count": k}]}

A data event is one event of a retention topic (``c``, ``u``, ``d``, ``t``; a key change is
two, its ``d`` then its ``c``), so ``event_count`` is what a consumer of the retention
topics holds once it has the whole transaction. Snapshot reads, schema-change events,
logical messages and outbox records are not data events. The router decides when BEGIN
(with the first data event) and END (at the Commit, when there was one) are published.
"""

from __future__ import annotations

from typing import Final

import orjson

from cdc.envelope import Headers, Record, Row, lsn_header

__all__ = ["TransactionOrder", "TransactionTopic", "transaction_topic_name"]

_dumps: Final = orjson.dumps


def transaction_topic_name(connector: str) -> str:
    """Debezium's ``<topic.prefix>.transaction``: the BEGIN and END records."""
    return f"{connector}.transaction"


class TransactionOrder:
    """The data events of one source transaction so far, in publication order."""

    __slots__ = ("headers", "id", "key", "tables", "total", "ts_ms")

    def __init__(self, xid: int, commit_lsn: int, commit_ts_us: int) -> None:
        """Args:
        xid: the transaction's id (``Begin.xid``).
        commit_lsn: its commit LSN (``Begin.final_lsn``), as in the position headers.
        commit_ts_us: its commit time, Unix epoch microseconds.
        """
        #: Debezium's PostgreSQL transaction id: ``"<xid>:<commit LSN>"``.
        self.id = f"{xid}:{commit_lsn}"
        self.key = _dumps({"id": self.id})
        self.ts_ms = commit_ts_us // 1000
        #: Of BEGIN and END: ``cdc.lsn`` only (they are no message of the transaction).
        self.headers: Headers = (lsn_header(commit_lsn),)
        #: Data events so far.
        self.total = 0
        #: Data events so far per table (``schema.table``), in the order first changed.
        self.tables: dict[str, int] = {}

    def next(self, table: str) -> Row:
        """Count one more data event of ``table``; its ``transaction`` block."""
        self.total += 1
        tables = self.tables
        order = tables.get(table, 0) + 1
        tables[table] = order
        return {"id": self.id, "total_order": self.total, "data_collection_order": order}


class TransactionTopic:
    """The BEGIN and END records of the transaction topic."""

    __slots__ = ("topic",)

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def begin(self, order: TransactionOrder) -> Record:
        """The record before the transaction's first data event."""
        value = {
            "status": "BEGIN",
            "id": order.id,
            "ts_ms": order.ts_ms,
            "event_count": None,
            "data_collections": None,
        }
        return Record(self.topic, order.key, _dumps(value), order.headers)

    def end(self, order: TransactionOrder) -> Record:
        """The record after the transaction's last data event, with the counts."""
        value = {
            "status": "END",
            "id": order.id,
            "ts_ms": order.ts_ms,
            "event_count": order.total,
            "data_collections": [
                {"data_collection": table, "event_count": count}
                for table, count in order.tables.items()
            ],
        }
        return Record(self.topic, order.key, _dumps(value), order.headers)
