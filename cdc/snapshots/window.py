"""Incremental snapshots while streaming: the DBLog watermark window, and its durable progress.

No I/O, no logging, no clock, no psycopg or confluent_kafka: the pipeline emits the
watermarks, runs the chunk queries, produces the records and stores the progress; this
module only decides which chunk to read next and which of its rows may be emitted.

How one chunk is taken (DBLog: Andreakis and Papapanagiotou, Netflix, 2019; Debezium's incremental
snapshots are the same algorithm):

1. emit LOW: ``pg_logical_emit_message(true, 'cdc.watermark', {snapshot, chunk, "low"})`` in
   its own committed transaction;
2. read the chunk: ``SELECT ... WHERE key > after_key ORDER BY key LIMIT n``, a query that
   *starts after LOW committed*;
3. emit HIGH the same way.

The stream (pgoutput, in commit order) then carries LOW, every change committed between
LOW and HIGH, and HIGH. While LOW..HIGH of the chunk is open, every streamed change of the
chunk's table records its key (``change``). At HIGH the chunk rows whose key was not
recorded are emitted, right there in the stream's order; the others are dropped.

Why the topic then converges to the table. Write T_r for the moment the chunk query
read its rows (LOW <= T_r <= HIGH in commit order). For a key k in the chunk's range:

- k changed between LOW and HIGH: the chunk row is dropped. The stream holds that change
  (and every later one), so the stream's latest version wins, as it must: the chunk row
  may be older than it.
- k not changed between LOW and HIGH, but before LOW: that change is in the stream
  *before* LOW, so before the emitted row, which holds the same value (nothing changed
  between LOW and T_r) and so overwrites it harmlessly.
- k changed after HIGH: that change follows HIGH in the stream, so it follows the row.
- k absent when the chunk was read but in the table at the end: it was inserted after
  T_r, hence after LOW: the insert is in the stream.
- TRUNCATE of the table in the window: the chunk may hold rows it removed, so every row is
  dropped; rows inserted after the TRUNCATE are in the stream.

Chunks cover adjacent key ranges (``after_key`` is the last key of the previous chunk; the
last chunk of a table is open-ended), so every key of the table is covered by one chunk.

The only condition the argument needs is "the window opened no later than the read": a
LOW that was committed before the query started. A larger window only drops more rows
whose keys the stream has anyway. Hence the rules below, each chosen to keep it:

- A second LOW of the in-flight chunk is ignored: the window keeps its earliest start.
- HIGH of the in-flight chunk without its LOW (the window's start is unknown), or before
  its rows were handed in (they could no longer be emitted at HIGH's place in the stream):
  the chunk is dropped and ``next_chunk`` asks for the same range again, under a new id.
- Watermarks of another snapshot id, or of a chunk id that is not the one in flight, are
  ignored. After a crash the stream replays from the confirmed LSN and may carry watermarks
  of the previous run whose chunk id equals the one now in flight (ids restart from
  ``chunks_done``). Accepting them is safe: they were committed before the new run began,
  so before its read, which is all the argument asks; the chunk is emitted at the old HIGH,
  and changes between that HIGH and the read follow it in the stream.

Progress (``SnapshotProgress``) advances only at HIGH; the pipeline stores it in the state
topic once HIGH's transaction and the rows emitted there are acknowledged. After a crash
the snapshot resumes from it, so at most the one chunk in flight is read again.

What the caller must keep (this module cannot see time, only the stream's order):

- The rows handed to ``chunk_read`` come from a query that started after the chunk's LOW
  committed. Retrying is safe in that order: LOW may be emitted again before the read, and
  the read repeated (``chunk_read`` replaces the rows); but a LOW emitted after the read
  must be followed by a new read, since the window may open only at that LOW.
- HIGH is emitted after ``chunk_read``, and the rows ``watermark`` returns at HIGH are
  produced right there, before the next streamed event.
- ``change`` gets the same key bytes as the chunk rows (the encoded Kafka record key), in
  the order the stream's events are produced (commit order), for both the old and the new
  key of a key change.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, Literal, NamedTuple, TypeVar

import orjson

from cdc.envelope import Record, Row, TableEncoder, TxContext
from cdc.snapshots.state import ConnectorState, Key, SnapshotProgress

if TYPE_CHECKING:
    from cdc.stream.schema_changes import TableDescription

__all__ = [
    "SIGNAL_PREFIX",
    "WATERMARK_PREFIX",
    "ChunkClosed",
    "ChunkRequest",
    "ChunkRow",
    "ChunkWindow",
    "IncrementalSnapshot",
    "parse_signal",
]

# What a chunk holds per row: its record key, the converted row, and (toast.mode: fill)
# its large values, remembered when the row is published.
ChunkRow = tuple[bytes, Row, dict[str, str] | None]

# Prefixes of the logical decoding messages (pg_logical_emit_message) cdc writes and reads.
WATERMARK_PREFIX = "cdc.watermark"
SIGNAL_PREFIX = "cdc.signal"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ChunkRequest:
    """What to read next: up to ``limit`` rows of ``table`` with key > ``after_key``
    (from the start of the table when None) and key <= ``until_key`` (to its end when
    None), in key order, between its watermarks."""

    chunk_id: int
    table: str
    after_key: Key | None
    limit: int
    until_key: Key | None = None


@dataclass(slots=True)
class _Chunk(Generic[T]):
    """The chunk in flight: requested, and not yet closed by its HIGH watermark."""

    request: ChunkRequest
    low_seen: bool = False
    rows: list[tuple[bytes, T]] | None = None
    last_key: Key | None = None
    exhausted: bool = False
    truncated: bool = False
    changed: set[bytes] = field(default_factory=set)


class IncrementalSnapshot(Generic[T]):
    """The DBLog window state machine of one running snapshot, one chunk at a time.

    Drive it so: ``next_chunk()``; emit LOW; read the chunk and hand it to ``chunk_read``;
    emit HIGH. Feed the stream to it as it is emitted: ``watermark`` for watermark
    messages, ``change`` for each row change, ``truncate`` for TRUNCATE. The list
    ``watermark`` returns at HIGH is emitted at that point of the stream, then
    ``progress`` is the value to store once all of that is acknowledged.

    ``T`` is whatever the caller holds per row; this class only looks at the key bytes.
    """

    __slots__ = ("_chunk", "_chunk_rows", "_next_id", "_progress")

    def __init__(self, progress: SnapshotProgress, *, chunk_rows: int) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
        self._progress = progress
        self._chunk_rows = chunk_rows
        # Ids restart from chunks_done after a crash; the module docstring explains why a
        # replayed watermark of the previous run with the same id is still safe.
        self._next_id = progress.chunks_done
        self._chunk: _Chunk[T] | None = None

    @property
    def progress(self) -> SnapshotProgress:
        """The durable progress as of the last finished chunk."""
        return self._progress

    @property
    def snapshot_id(self) -> str:
        """The id the watermarks of this snapshot carry."""
        return self._progress.snapshot_id

    @property
    def finished(self) -> bool:
        """Every table is done (no chunk can be in flight then)."""
        return self._progress.finished

    def next_chunk(self) -> ChunkRequest | None:
        """The chunk to read next, or None while one is in flight or when finished.

        A chunk is in flight from this call until its HIGH watermark (or
        ``abandon_chunk``); asking again meanwhile returns None.
        """
        p = self._progress
        if self._chunk is not None or not p.tables:
            return None
        after, until = p.current_bounds()
        request = ChunkRequest(
            chunk_id=self._next_id,
            table=p.tables[0],
            after_key=after,
            limit=self._chunk_rows,
            until_key=until,
        )
        self._next_id += 1
        self._chunk = _Chunk(request)
        return request

    def add_tables(self, tables: Sequence[str]) -> None:
        """Queue more tables behind the remaining ones (a request that arrived while this
        snapshot runs); they become part of the stored progress with the next chunk. A
        table still to do whole is not added twice; one already done, or left only in
        part (a key range), is read again whole."""
        p = self._progress
        whole = {t for i, t in enumerate(p.tables) if not p.bounds or p.bounds[i] == (None, None)}
        extra = tuple(dict.fromkeys(t for t in tables if t not in whole))
        if extra:
            bounds = p.bounds + ((None, None),) * len(extra) if p.bounds else ()
            self._progress = replace(p, tables=p.tables + extra, bounds=bounds)

    def abandon_chunk(self) -> None:
        """Forget the chunk in flight (its query or a watermark failed): the next call of
        ``next_chunk`` asks for the same range under a new id; the old id's watermarks and
        rows are then ignored. Nothing is emitted, so this is always safe."""
        self._chunk = None

    def chunk_read(
        self, chunk_id: int, rows: list[tuple[bytes, T]], last_key: Key | None, exhausted: bool
    ) -> bool:
        """Hand in the rows the chunk query returned, in key order.

        Args:
            chunk_id: the request's id.
            rows: ``(record key bytes, row)`` per row.
            last_key: text values of the key of the last row (ignored when ``exhausted``).
            exhausted: fewer rows than the limit came back: the table ends with this chunk.

        Returns:
            False (and ignores the rows) when ``chunk_id`` is not the chunk in flight, e.g.
            it was dropped meanwhile for a re-read; True otherwise. A repeated call for the
            chunk in flight replaces its rows (a retried query is still read after LOW).

        Raises:
            ValueError: ``exhausted`` is False but ``last_key`` is None: the next chunk
                would read the same range again, forever.
        """
        if not exhausted and last_key is None:
            raise ValueError(
                f"chunk {chunk_id}: a chunk that did not exhaust its table needs its last key"
            )
        chunk = self._chunk
        if chunk is None or chunk.request.chunk_id != chunk_id:
            return False
        chunk.rows = rows
        chunk.last_key = last_key
        chunk.exhausted = exhausted
        return True

    def watermark(
        self, snapshot_id: str, chunk_id: int, kind: Literal["low", "high"]
    ) -> list[T] | None:
        """A watermark came through the stream.

        Returns:
            At the HIGH of the chunk in flight, once its LOW was seen and its rows handed
            in: the rows to emit now (possibly none), in read order, and ``progress`` has
            advanced. Otherwise None: a LOW (opens the window), a stale or repeated
            watermark (ignored), or a HIGH that closed an unusable window (the chunk is
            dropped and will be read again; see the module docstring).
        """
        chunk = self._chunk
        if (
            chunk is None
            or snapshot_id != self._progress.snapshot_id
            or chunk_id != chunk.request.chunk_id
        ):
            return None
        if kind == "low":
            chunk.low_seen = True  # a repeated LOW keeps the earliest start
            return None
        self._chunk = None
        if not chunk.low_seen or chunk.rows is None:
            return None
        changed = chunk.changed
        emit = [] if chunk.truncated else [row for key, row in chunk.rows if key not in changed]
        self._progress = _advance(self._progress, chunk, len(emit))
        return emit

    def change(self, table: str, key: bytes) -> None:
        """A streamed insert, update or delete of ``table`` with record key ``key``."""
        chunk = self._chunk
        if chunk is not None and chunk.low_seen and chunk.request.table == table:
            chunk.changed.add(key)

    def truncate(self, table: str) -> None:
        """A streamed TRUNCATE of ``table``: inside the window, no row of the chunk is emitted."""
        chunk = self._chunk
        if chunk is not None and chunk.low_seen and chunk.request.table == table:
            chunk.truncated = True


def _advance(p: SnapshotProgress, chunk: _Chunk[Any], emitted: int) -> SnapshotProgress:
    chunks_done = p.chunks_done + 1
    rows_done = p.rows_done + emitted
    if chunk.exhausted:
        table, rest = p.tables[0], p.tables[1:]
        # A table read in several key ranges is done with its last one.
        done = p.tables_done if table in rest else (*p.tables_done, table)
        return SnapshotProgress(
            snapshot_id=p.snapshot_id,
            kind=p.kind,
            tables=rest,
            last_key=None,
            chunks_done=chunks_done,
            rows_done=rows_done,
            tables_done=done,
            bounds=p.bounds[1:],
        )
    return replace(p, last_key=chunk.last_key, chunks_done=chunks_done, rows_done=rows_done)


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


class ChunkClosed(NamedTuple):
    """A HIGH watermark closed a chunk: what to publish right there, and the state to
    store with it."""

    records: Iterator[Record]  # built lazily, one row at a time as they are produced
    rows: int
    table: str | None
    progress: SnapshotProgress
    state: ConnectorState
    finished: bool


class ChunkWindow:
    """The stream's side of the running incremental snapshot. No I/O.

    The chunk driver (an edge: it writes watermarks and runs the chunk queries) starts
    snapshots here (``begin``), reads chunks through ``snapshot`` and hands each chunk's
    table encoder in (``encoders``), and, when schema changes are on, the table's
    description for its schema-change event (``descriptions``: the router announces a
    shape the history does not know before the chunk's rows); the router feeds the stream
    to it: every change of ``window_table`` (``change``, ``truncate``) and every watermark
    (``watermark``). ``state`` is the connector's snapshot state as of the stream's
    position.
    """

    __slots__ = ("descriptions", "encoders", "snapshot", "state", "window_table")

    def __init__(self, state: ConnectorState) -> None:
        self.state = state
        self.snapshot: IncrementalSnapshot[ChunkRow] | None = None
        # The table whose chunk window may be open: only its changes need reporting. A
        # plain attribute, read for every streamed change.
        self.window_table: str | None = None
        self.encoders: dict[str, TableEncoder] = {}
        self.descriptions: dict[str, TableDescription] = {}

    def begin(self, progress: SnapshotProgress, *, chunk_rows: int) -> None:
        """Run ``progress`` (a new snapshot, or one resumed from the state topic)."""
        self.snapshot = IncrementalSnapshot(progress, chunk_rows=chunk_rows)
        self.state = replace(self.state, incremental=progress)

    def progress_changed(self) -> None:
        """Tables joined the running snapshot: its stored progress must say so."""
        if self.snapshot is not None:
            self.state = replace(self.state, incremental=self.snapshot.progress)

    def change(self, table: str, records: list[Record]) -> None:
        """The keys of a streamed change of ``table`` (the caller checked ``window_table``)."""
        snapshot = self.snapshot
        if snapshot is None:
            return
        for record in records:
            if record.key is not None:
                snapshot.change(table, record.key)

    def truncate(self, table: str) -> None:
        if self.snapshot is not None:
            self.snapshot.truncate(table)

    def watermark(self, content: bytes, tx: TxContext, lsn: int, now_us: int) -> ChunkClosed | None:
        """A watermark in the stream: at the HIGH of the chunk in flight, the rows to
        publish here and the state to store with them; otherwise None."""
        snapshot = self.snapshot
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
            records = _read_records(self.encoders[table], rows, tx, lsn, now_us)
        progress = snapshot.progress
        if progress.finished:
            self.snapshot = None
            if progress.kind == "initial":
                self.state = ConnectorState(initial_snapshot="done")
            else:
                self.state = replace(self.state, incremental=None)
        else:
            self.state = replace(self.state, incremental=progress)
        return ChunkClosed(records, len(rows), table, progress, self.state, progress.finished)


def _read_records(
    encoder: TableEncoder, rows: list[ChunkRow], tx: TxContext, lsn: int, now_us: int
) -> Iterator[Record]:
    for key, row, large in rows:
        # The row is published here: from now on it is what the fill store must know.
        encoder.remember(key, large)
        yield from encoder.read_row(row, tx, lsn, now_us, "incremental")
