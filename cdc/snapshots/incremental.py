"""Edge: runs incremental snapshots while streaming: table shapes, watermarks, chunk reads.

The one job: the I/O side of ``cdc.snapshots.window.ChunkWindow``. Between stream
messages (``pump``), it writes a LOW watermark into the WAL, reads one chunk in one short
query, hands the rows to the window and writes the HIGH watermark; the router sees both
watermarks in the stream and publishes the chunk at HIGH. It also starts the snapshots
that signals ask for (``start``), reading the tables' shapes from the catalog, and hands
the router each chunk's table description for its schema-change event
(``ChunkWindow.descriptions``): a table's shape is read again once a schema change of it
was announced (``forget_shape``), so chunks follow ``ALTER TABLE``.

No transaction on the legacy database lasts longer than one chunk query. The progress
of a snapshot is stored with the records of the chunk that reached it (the router's
``SaveState``), so a restart resumes after the last published chunk.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson

from cdc.envelope import TableEncoder
from cdc.errors import SourceError
from cdc.postgres.snapshot_reader import SnapshotReader, TableShape
from cdc.snapshots.initial import TableProgress
from cdc.snapshots.state import SnapshotProgress
from cdc.snapshots.window import WATERMARK_PREFIX, ChunkRow, ChunkWindow
from cdc.stream.schema_changes import TableDescription

__all__ = ["IncrementalDriver"]


class IncrementalDriver:
    """One connector's incremental snapshots; lives as long as its pipeline run."""

    def __init__(
        self,
        *,
        reader: SnapshotReader,
        window: ChunkWindow,
        encoder_for: Callable[[TableShape], TableEncoder],
        chunk_rows: int,
        max_rows_per_second: int | None,
        published_tables: list[str],
        log: Any,
        signal_table: str | None = None,
        describe: Callable[[TableShape], TableDescription] | None = None,
    ) -> None:
        """``describe``: a table's description for its schema-change event, read from the
        catalog (None: schema changes are off)."""
        self._reader = reader
        self._window = window
        self._encoder_for = encoder_for
        self._chunk_rows = chunk_rows
        self._max_rows_per_second = max_rows_per_second
        self._log = log
        # Where watermarks go: logical messages (PostgreSQL 14+), or rows of the signal
        # table when one is given (older servers, or snapshot.watermarks: signal_table).
        self._signal_table = signal_table
        self._shapes: dict[str, TableShape] = {}
        self._describe = describe
        self._descriptions: dict[str, TableDescription] = {}
        # Tables whose shape changed since it was read: read again before the next chunk.
        self._stale: set[str] = set()
        self._not_before = 0.0
        # For progress reports: the current table, when it started, rows done before it.
        self._table: str | None = None
        self._table_started = 0.0
        self._rows_before_table = 0
        self.published_tables = published_tables

    # --- control --------------------------------------------------------------------

    @property
    def progress(self) -> SnapshotProgress | None:
        """The durable progress of the running snapshot (as of its last finished chunk)."""
        snapshot = self._window.snapshot
        return None if snapshot is None else snapshot.progress

    @property
    def running(self) -> bool:
        return self._window.snapshot is not None

    def start(self, tables: list[str], *, kind: str = "incremental") -> bool:
        """Snapshot ``tables`` (qualified names; empty: every published table); queued
        behind a running snapshot. Returns whether the snapshot state changed (it is then
        stored with the stream's position)."""
        usable = [t for t in tables or self.published_tables if self._usable(t)]
        if not usable:
            return False
        snapshot = self._window.snapshot
        if snapshot is not None:
            # Behind the running snapshot's tables, and so in its stored progress: a
            # restart does not forget the request.
            snapshot.add_tables(usable)
            self._window.progress_changed()
            self._log.info("snapshot_queued", tables=usable)
            return True
        progress = SnapshotProgress(
            snapshot_id=uuid.uuid4().hex,
            kind="initial" if kind == "initial" else "incremental",
            tables=tuple(usable),
        )
        return self.resume(progress)

    def resume(self, progress: SnapshotProgress) -> bool:
        """Continue a snapshot from its stored progress (after a restart)."""
        keep = [i for i, t in enumerate(progress.tables) if self._usable(t)]
        progress = replace(
            progress,
            tables=tuple(progress.tables[i] for i in keep),
            bounds=tuple(progress.bounds[i] for i in keep) if progress.bounds else (),
            last_key=progress.last_key if keep[:1] == [0] else None,
        )
        if progress.finished:
            return False
        self._window.begin(progress, chunk_rows=self._chunk_rows)
        self._note_table(progress)
        self._log.info(
            "snapshot_started",
            kind=progress.kind,
            mode="incremental",
            snapshot_id=progress.snapshot_id,
            tables=list(dict.fromkeys(progress.tables)),
            resumed_after_chunks=progress.chunks_done,
        )
        return True

    def _usable(self, table: str) -> bool:
        shape = self._shape(table)
        if shape is None:
            return False
        if not shape.key_columns:
            self._log.warning(
                "snapshot_table_skipped",
                table=table,
                detail="an incremental snapshot reads in key order and this table has no"
                " primary key or replica-identity index; only an initial snapshot can read"
                " it (snapshot.mode: always, or a new slot)",
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

    def forget_shape(self, table: str) -> None:
        """A schema change of ``table`` was announced: its next chunk reads its shape again
        (a chunk read with the old one would miss a new column, or name a dropped one)."""
        if table in self._shapes:
            self._stale.add(table)

    def _note_table(self, progress: SnapshotProgress) -> None:
        table = progress.tables[0] if progress.tables else None
        if table != self._table:
            self._table = table
            self._table_started = time.monotonic()
            self._rows_before_table = progress.rows_done

    def chunk_published(self, progress: SnapshotProgress) -> None:
        """The router published a chunk (for the progress report)."""
        self._note_table(progress)

    def table_progress(self) -> TableProgress | None:
        """Rows of the current table so far, against its estimate (rows/s, ETA)."""
        progress = self.progress
        table = self._table
        if progress is None or table is None:
            return None
        shape = self._shapes.get(table)
        return TableProgress(
            table=table,
            estimated_rows=max(0, shape.estimated_rows) if shape is not None else 0,
            rows=progress.rows_done - self._rows_before_table,
            started=self._table_started,
            tasks_left=1,
        )

    # --- chunks ---------------------------------------------------------------------

    def pump(self) -> None:
        """Read the next chunk between two watermarks, if one is due. Called between
        stream messages; one short query each time."""
        window = self._window
        snapshot = window.snapshot
        if snapshot is None or time.monotonic() < self._not_before:
            return
        request = snapshot.next_chunk()
        if request is None:
            return
        try:
            shape = self._chunk_shape(request.table)
        except BaseException:
            snapshot.abandon_chunk()
            raise
        encoder = self._encoder_for(shape)
        window.encoders[request.table] = encoder
        mark = {"snapshot": snapshot.snapshot_id, "chunk": request.chunk_id}
        try:
            self._write_watermark({**mark, "kind": "low"})
            raw = self._reader.read_chunk(
                shape, request.after_key, request.limit, request.until_key
            )
            rows: list[tuple[bytes, ChunkRow]] = []
            for values in raw:
                row = encoder.row(values, 0)
                key = encoder.key(row)
                assert key is not None  # tables without a key are never chunked
                # orjson leaves each result in a buffer of 4 KB or more: copy the few
                # bytes out, or a held chunk costs chunk_rows x 4 KB.
                key = bytes(memoryview(key))
                rows.append((key, (key, row, encoder.large_values(values))))
            exhausted = len(raw) < request.limit
            last_key = SnapshotReader.key_of(shape, raw[-1]) if raw else None
            snapshot.chunk_read(request.chunk_id, rows, last_key, exhausted or not raw)
            self._write_watermark({**mark, "kind": "high"})
        except BaseException:
            snapshot.abandon_chunk()
            raise
        window.window_table = request.table
        self._log.info(
            "snapshot_chunk_read",
            table=request.table,
            chunk=request.chunk_id,
            rows=len(raw),
            snapshot_id=snapshot.snapshot_id,
        )
        if self._max_rows_per_second:
            self._not_before = time.monotonic() + len(raw) / self._max_rows_per_second

    def _chunk_shape(self, table: str) -> TableShape:
        """The shape to read the next chunk of ``table`` with (read again when stale), its
        description handed to the window for the router's schema-change event."""
        if table in self._stale:
            schema, _, name = table.partition(".")
            self._shapes[table] = self._reader.table_shape(schema, name)
            self._stale.discard(table)
            self._descriptions.pop(table, None)
        shape = self._shapes[table]
        if self._describe is not None:
            description = self._descriptions.get(table)
            if description is None:
                description = self._descriptions[table] = self._describe(shape)
            self._window.descriptions[table] = description
        return shape

    def _write_watermark(self, mark: dict[str, Any]) -> None:
        content = orjson.dumps(mark).decode()
        if self._signal_table is None:
            self._reader.emit_watermark(WATERMARK_PREFIX, content)
        else:
            kind = "snapshot-window-open" if mark["kind"] == "low" else "snapshot-window-close"
            self._reader.emit_signal_row(self._signal_table, kind, content)
