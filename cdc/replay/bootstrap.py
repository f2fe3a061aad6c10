"""A new target loaded from the compacted topics, then followed from the matching point.

The one job: ``cdc replay --from-compacted``. The compacted topic holds the latest row of
each key (far smaller than every change since the start); each of its records carries the
position of the change it holds (``cdc.lsn``/``cdc.seq`` headers). Partition ``p`` of a
table's compacted topic and partition ``p`` of its retention topic hold the same keys in
the same order (the same key, the same partitioner, the same partition count), so once
compacted partition ``p`` is loaded up to its last record's position ``Q``, retention
partition ``p`` continues exactly at its first record after ``Q`` (found by binary
search): no change is missed, none applied twice. Everything (tables, rows, the retention
offsets) is written in one target transaction.

It refuses what the compacted topic cannot rebuild exactly, naming the table: a table
whose shape changed (its compacted rows may be in older shapes, and an added column's
value for rows not changed since is in no event), unchanged-TOAST placeholders
(``toast.mode: placeholder``), and topics whose partition counts differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import orjson
import structlog

from cdc.errors import CdcError
from cdc.kafka.consumer import ConsumedRecord, PartitionScan
from cdc.kafka.topics import KafkaAdmin
from cdc.postgres.target import TargetDatabase
from cdc.protocol.values import ValueOptions
from cdc.replay.batch import TableBatch
from cdc.replay.ddl import Target, create_table, create_types
from cdc.replay.records import Change, ChangeKind, TableId, position_from_headers
from cdc.replay.values import text_converter_for
from cdc.stream.schema_changes import TableShape, type_infos

__all__ = ["BootstrapError", "TableTopics", "bootstrap_from_compacted"]

# Rows folded and written per COPY while loading a compacted partition.
_CHUNK_ROWS: Final = 20_000


class BootstrapError(CdcError):
    """The compacted topic cannot rebuild a table exactly; says which and what to do."""


class TableTopics:
    """Where one replayed table's records are, and where it lands."""

    def __init__(
        self, table: TableId, shapes: Sequence[TableShape], raw: bytes, *,
        retention: str, compacted: str, target: Target,
    ) -> None:  # fmt: skip
        self.table, self.shapes, self.raw = table, shapes, raw
        self.retention, self.compacted, self.target = retention, compacted, target


def bootstrap_from_compacted(
    admin: KafkaAdmin,
    target: TargetDatabase,
    tables: Sequence[TableTopics],
    *,
    options: ValueOptions,
    placeholder: str | None,
    group_id: str,
) -> dict[tuple[str, int], int]:
    """Load every table its compacted topic can rebuild exactly; return the retention
    offsets to follow from (also stored in the target, in the same transaction as the
    rows). The other tables (no key, a changed shape, other partition counts) are left to
    the retention topic, from its start; each is logged (``replay_bootstrap_skipped``).

    Raises:
        BootstrapError: a compacted row holds an unchanged-TOAST placeholder.
        CdcError: Kafka or the target refused something.
    """
    log = structlog.get_logger("cdc.replay")
    loadable = []
    for t in tables:
        reason = _unloadable(t, admin)
        if reason is None:
            loadable.append(t)
        else:  # replayed from the retention topic's start instead: exact, only slower
            log.warning("replay_bootstrap_skipped", table=".".join(t.table), reason=reason)
    tables = loadable
    scan = PartitionScan(admin, group_id=group_id)
    offsets: dict[tuple[str, int], int] = {}
    try:
        for t in tables:
            shape = t.shapes[-1]
            if shape.types:
                target.run_outside(create_types(shape.types), what="creating types")
        with target.transaction():
            for t in tables:
                rows = _load(t, admin, target, scan, options, placeholder, offsets)
                log.info(
                    "replay_bootstrapped",
                    table=".".join(t.table),
                    target=t.target.sql,
                    rows=rows,
                    topic=t.compacted,
                )
            target.save(offsets, None, None, 0)
    finally:
        scan.close()
    return offsets


def _unloadable(t: TableTopics, admin: KafkaAdmin) -> str | None:
    """Why the compacted topic cannot rebuild this table exactly (None: it can)."""
    columns = {tuple((c.name, c.type) for c in s.columns) for s in t.shapes}
    if len(columns) > 1:
        changed = t.shapes[-1]
        return (
            f"its shape changed (schema version {changed.version} at LSN {changed.lsn}): the"
            " compacted topic may hold rows of older shapes, and an added column's value for"
            " rows not changed since is in no event"
        )
    if not t.shapes[-1].key_columns:
        return "it has no key, so no compacted topic"
    retention, compacted = admin.partition_ids(t.retention), admin.partition_ids(t.compacted)
    if retention is None or compacted is None:
        return f"topic {t.retention} or {t.compacted} is missing"
    if retention != compacted:
        return (
            f"{t.retention} has {len(retention)} partitions and {t.compacted}"
            f" {len(compacted)}: a key's records are in different partitions of the two"
        )
    return None


def _load(  # noqa: PLR0917 - one table's parts
    t: TableTopics,
    admin: KafkaAdmin,
    target: TargetDatabase,
    scan: PartitionScan,
    options: ValueOptions,
    placeholder: str | None,
    offsets: dict[tuple[str, int], int],
) -> int:
    """One table: created, loaded partition by partition; its retention offsets found."""
    shape = t.shapes[-1]
    name = ".".join(t.table)
    target.execute(create_table(shape, t.target), what=f"creating table {t.target.sql}")
    target.save_table(t.table, t.target, shape.version, t.raw)
    infos = type_infos(shape)
    columns = [c.name for c in shape.columns]
    converters = [
        text_converter_for(c.type_oid, c.type_modifier, options, types=infos, column=c.name)
        for c in shape.columns
    ]
    batch = TableBatch(
        table=name, columns=columns, key_columns=shape.key_columns, converters=converters
    )
    partitions = admin.partition_ids(t.compacted) or []
    ends = admin.end_offsets([(t.compacted, p) for p in partitions])
    retention_ends = admin.end_offsets([(t.retention, p) for p in partitions])
    rows = 0
    for p in partitions:
        last: tuple[int, int] | None = None
        for chunk in scan.read(t.compacted, p, ends[(t.compacted, p)]):
            for record in chunk:
                change = _change(record, t, placeholder)
                batch.add(change)
                last = change.position
            rows += len(chunk)
            if len(batch) >= _CHUNK_ROWS:
                target.write(t.target, columns, shape.key_columns, batch.writes())
        if len(batch):
            target.write(t.target, columns, shape.key_columns, batch.writes())
        end = retention_ends[(t.retention, p)]
        offsets[(t.retention, p)] = (
            0 if last is None else scan.first_after(t.retention, p, end, _position, last)
        )
    return rows


def _position(record: ConsumedRecord) -> tuple[int, int]:
    lsn, seq = position_from_headers(record.headers)
    if lsn is None or seq is None:
        raise BootstrapError(
            f"{record.topic}[{record.partition}]@{record.offset} has no cdc.lsn/cdc.seq"
            " headers: it was written by an older cdc; replay from the retention topic"
        )
    return (lsn, seq)


def _change(record: ConsumedRecord, t: TableTopics, placeholder: str | None) -> Change:
    lsn, seq = _position(record)
    key = record.key
    if record.value is None:
        key_obj = orjson.loads(key) if key is not None else None
        return Change(
            ChangeKind.DELETE, t.table, record.topic, record.partition, record.offset,
            lsn, seq, lsn, 0, key, key_obj, None,
        )  # fmt: skip
    row = orjson.loads(record.value)
    if placeholder is not None and placeholder in row.values():
        column = next(c for c, v in row.items() if v == placeholder)
        raise BootstrapError(
            f"table {'.'.join(t.table)}: the compacted row with key {key!r} holds the"
            f" unchanged-TOAST placeholder in column {column} (toast.mode: placeholder), not"
            " its value. Replay this table from the retention topic, or capture with"
            " toast.mode: fill"
        )
    return Change(
        ChangeKind.UPSERT, t.table, record.topic, record.partition, record.offset,
        lsn, seq, lsn, 0, key, None, row,
    )  # fmt: skip
