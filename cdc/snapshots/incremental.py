"""Runs incremental snapshots while streaming: chunks, watermarks, signals, progress.

The one job: drive ``cdc.snapshots.window.IncrementalSnapshot`` (the pure DBLog window) from the
pipeline's thread. It reads a chunk in one short query between a LOW and a HIGH
watermark written into the WAL, hands the stream's watermark messages and row changes to
the window, and returns the chunk rows to publish at the HIGH watermark. It also reads
signals (``cdc snapshot``, or a row in the signal table) that start a snapshot.

No transaction on the legacy database lasts longer than one chunk query. Progress is
stored by the pipeline once the records of a chunk are acknowledged.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import orjson

from cdc.envelope import Record, TableEncoder, TxContext
from cdc.errors import SourceError
from cdc.postgres.snapshot_reader import SnapshotReader, TableShape
from cdc.protocol.messages import LogicalMessage
from cdc.snapshots.initial import TableProgress
from cdc.snapshots.window import IncrementalSnapshot, SnapshotProgress

__all__ = [
    "SIGNAL_PREFIX",
    "WATERMARK_PREFIX",
    "IncrementalDriver",
    "parse_signal",
]

# Prefixes of the logical decoding messages (pg_logical_emit_message) cdc writes and reads.
WATERMARK_PREFIX = "cdc.watermark"
SIGNAL_PREFIX = "cdc.signal"

Row = dict[str, Any]


def parse_signal(content: bytes | str) -> list[str] | None:
    """The tables of an ``execute-snapshot`` signal (Debezium's signal format), else None.

    ``{"type": "execute-snapshot", "data": {"data-collections": ["public.t"]}}``; the
    ``data`` may also be a JSON string, as in a Debezium signal table's ``data`` column.
    """
    try:
        signal = orjson.loads(content)
        if not isinstance(signal, dict) or signal.get("type") != "execute-snapshot":
            return None
        data = signal.get("data") or {}
        if isinstance(data, str):
            data = orjson.loads(data)
        tables = data.get("data-collections") or []
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables):
        return None
    return [t if "." in t else f"public.{t}" for t in tables]


class IncrementalDriver:
    """One connector's incremental snapshots; lives as long as its pipeline run."""

    def __init__(
        self,
        *,
        reader: SnapshotReader,
        encoder_for: Callable[[TableShape], TableEncoder],
        chunk_rows: int,
        max_rows_per_second: int | None,
        log: Any,
        signal_table: str | None = None,
    ) -> None:
        self._reader = reader
        self._encoder_for = encoder_for
        self._chunk_rows = chunk_rows
        self._max_rows_per_second = max_rows_per_second
        self._log = log
        # Where watermarks go: logical messages (PostgreSQL 14+), or rows of the signal
        # table when one is given (older servers, or snapshot.watermarks: signal_table).
        self._signal_table = signal_table
        self._snapshot: IncrementalSnapshot[Row] | None = None
        self._shapes: dict[str, TableShape] = {}
        self._not_before = 0.0
        # The table whose chunk window may be open: only its changes need reporting. A
        # plain attribute, read for every streamed change.
        self.window_table: str | None = None
        self._chunk_started = 0.0
        # The progress reached by the last HIGH watermark that finished a chunk; the
        # pipeline stores it once that chunk's records are acknowledged.
        self.last_progress: SnapshotProgress | None = None
        self.last_chunk_rows = 0  # rows the last closed chunk published
        # For progress reports: the current table, when it started, rows done before it.
        self._table: str | None = None
        self._table_started = 0.0
        self._rows_before_table = 0
        self.published_tables: list[str] = []

    # --- control --------------------------------------------------------------------

    @property
    def progress(self) -> SnapshotProgress | None:
        """The durable progress of the running snapshot (as of its last finished chunk)."""
        return None if self._snapshot is None else self._snapshot.progress

    @property
    def running(self) -> bool:
        return self._snapshot is not None

    def start(self, tables: list[str], *, kind: str = "incremental") -> None:
        """Snapshot ``tables`` (qualified names; empty: every published table); queued
        behind a running snapshot."""
        usable = [t for t in tables or self.published_tables if self._usable(t)]
        if not usable:
            return
        if self._snapshot is not None:
            # Behind the running snapshot's tables, and so in its stored progress: a
            # restart does not forget the request.
            self._snapshot.add_tables(usable)
            self._log.info("snapshot_queued", tables=usable)
            return
        progress = SnapshotProgress(
            snapshot_id=uuid.uuid4().hex,
            kind="initial" if kind == "initial" else "incremental",
            tables=tuple(usable),
        )
        self.resume(progress)

    def resume(self, progress: SnapshotProgress) -> None:
        """Continue a snapshot from its stored progress (after a restart)."""
        tables = tuple(t for t in progress.tables if self._usable(t))
        progress = replace(progress, tables=tables)
        if progress.finished:
            return
        self._snapshot = IncrementalSnapshot(progress, chunk_rows=self._chunk_rows)
        self._note_table(progress)
        self._log.info(
            "snapshot_started",
            kind=progress.kind,
            mode="incremental",
            snapshot_id=progress.snapshot_id,
            tables=list(tables),
            resumed_after_chunks=progress.chunks_done,
        )

    def _usable(self, table: str) -> bool:
        shape = self._shape(table)
        if shape is None:
            return False
        if not shape.key_columns:
            self._log.warning(
                "snapshot_table_skipped",
                table=table,
                detail="an incremental snapshot reads in key order and this table has no"
                " primary key or replica-identity index; the initial snapshot reads it",
            )
            return False
        return True

    def _shape(self, table: str) -> TableShape | None:
        shape = self._shapes.get(table)
        if shape is None:
            schema, _, name = table.partition(".")
            try:
                shape = self._reader.table_shape(schema, name)
            except SourceError as exc:
                self._log.warning("snapshot_table_skipped", table=table, detail=str(exc))
                return None
            self._shapes[table] = shape
        return shape

    def _note_table(self, progress: SnapshotProgress) -> None:
        table = progress.tables[0] if progress.tables else None
        if table != self._table:
            self._table = table
            self._table_started = time.monotonic()
            self._rows_before_table = progress.rows_done

    def table_progress(self) -> TableProgress | None:
        """Rows of the current table so far, against its estimate (rows/s, ETA)."""
        snapshot = self._snapshot
        table = self._table
        if snapshot is None or table is None:
            return None
        shape = self._shapes.get(table)
        return TableProgress(
            table=table,
            estimated_rows=max(0, shape.estimated_rows) if shape is not None else 0,
            rows=snapshot.progress.rows_done - self._rows_before_table,
            started=self._table_started,
            tasks_left=1,
        )

    # --- chunks ---------------------------------------------------------------------

    def pump(self) -> None:
        """Read the next chunk between two watermarks, if one is due. Called between
        stream messages; one short query each time."""
        snapshot = self._snapshot
        if snapshot is None or time.monotonic() < self._not_before:
            return
        request = snapshot.next_chunk()
        if request is None:
            return
        shape = self._shapes[request.table]
        encoder = self._encoder_for(shape)
        mark = {"snapshot": snapshot.snapshot_id, "chunk": request.chunk_id}
        try:
            self._write_watermark({**mark, "kind": "low"})
            raw = self._reader.read_chunk(shape, request.after_key, request.limit)
            rows: list[tuple[bytes, Row]] = []
            for values in raw:
                row = encoder.row(values, 0)
                key = encoder.key(row)
                assert key is not None  # tables without a key are never chunked
                # orjson leaves each result in a buffer of 4 KB or more: copy the few
                # bytes out, or a held chunk costs chunk_rows x 4 KB.
                rows.append((bytes(memoryview(key)), row))
            exhausted = len(raw) < request.limit
            last_key = SnapshotReader.key_of(shape, raw[-1]) if raw else None
            snapshot.chunk_read(request.chunk_id, rows, last_key, exhausted or not raw)
            self._write_watermark({**mark, "kind": "high"})
        except BaseException:
            snapshot.abandon_chunk()
            raise
        self.window_table = request.table
        self._log.info(
            "snapshot_chunk_read",
            table=request.table,
            chunk=request.chunk_id,
            rows=len(raw),
            snapshot_id=snapshot.snapshot_id,
        )
        if self._max_rows_per_second:
            self._not_before = time.monotonic() + len(raw) / self._max_rows_per_second

    def _write_watermark(self, mark: dict[str, Any]) -> None:
        content = orjson.dumps(mark).decode()
        if self._signal_table is None:
            self._reader.emit_watermark(WATERMARK_PREFIX, content)
        else:
            kind = "snapshot-window-open" if mark["kind"] == "low" else "snapshot-window-close"
            self._reader.emit_signal_row(self._signal_table, kind, content)

    # --- the stream -----------------------------------------------------------------

    def change(self, table: str, records: list[Record]) -> None:
        """Record the keys of a streamed change of the table in the window."""
        snapshot = self._snapshot
        if snapshot is None:
            return
        for record in records:
            if record.key is not None:
                snapshot.change(table, record.key)

    def truncate(self, table: str) -> None:
        if self._snapshot is not None:
            self._snapshot.truncate(table)

    def message(self, message: LogicalMessage, tx: TxContext, lsn: int) -> Iterator[Record] | None:
        """A logical decoding message: a watermark closes a window (records to publish
        now), a signal starts a snapshot. Other messages: None."""
        if message.prefix == WATERMARK_PREFIX:
            return self._watermark(message.content, tx, lsn)
        if message.prefix == SIGNAL_PREFIX:
            tables = parse_signal(message.content)
            if tables is not None:
                self._log.info("snapshot_requested", tables=tables, lsn=lsn)
                self.start(tables)
        return None

    def signal_row(
        self, signal_type: str | None, data: str | None, tx: TxContext, lsn: int
    ) -> Iterator[Record] | None:
        """A row inserted into the signal table (Debezium's id, type, data columns): a
        snapshot request, or a watermark written there (records to publish now)."""
        if signal_type in ("snapshot-window-open", "snapshot-window-close") and data:
            return self._watermark(data.encode(), tx, lsn)
        if signal_type == "execute-snapshot":
            tables = parse_signal(orjson.dumps({"type": signal_type, "data": data or "{}"}))
            if tables is not None:
                self._log.info("snapshot_requested", tables=tables, via="signal_table")
                self.start(tables)
        return None

    def _watermark(self, content: bytes, tx: TxContext, lsn: int) -> Iterator[Record] | None:
        snapshot = self._snapshot
        if snapshot is None:
            return None
        try:
            mark = orjson.loads(content)
            snapshot_id, chunk_id, kind = mark["snapshot"], int(mark["chunk"]), mark["kind"]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        if kind not in ("low", "high"):
            return None
        table = snapshot.progress.tables[0] if snapshot.progress.tables else None
        rows = snapshot.watermark(snapshot_id, chunk_id, kind)
        if rows is None:
            return None
        self.window_table = None
        records: Iterator[Record] = iter(())
        if table is not None and rows:
            # Built lazily, one row at a time as they are produced: a whole chunk of
            # encoded records at once would hold chunk_rows x 2 buffers in memory.
            records = _read_records(
                self._encoder_for(self._shapes[table]), rows, tx, lsn, time.time_ns() // 1000
            )
        self.last_progress = snapshot.progress
        self.last_chunk_rows = len(rows)
        self._note_table(snapshot.progress)
        if snapshot.finished:
            self._log.info(
                "snapshot_finished",
                kind=snapshot.progress.kind,
                mode="incremental",
                snapshot_id=snapshot.snapshot_id,
                rows=snapshot.progress.rows_done,
                chunks=snapshot.progress.chunks_done,
            )
            self._snapshot = None
        return records


def _read_records(
    encoder: TableEncoder, rows: list[Row], tx: TxContext, lsn: int, now_us: int
) -> Iterator[Record]:
    for row in rows:
        yield from encoder.read_row(row, tx, lsn, now_us, "incremental")
