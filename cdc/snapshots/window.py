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

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, TypeVar

import orjson

__all__ = [
    "STATE_VERSION",
    "ChunkRequest",
    "ConnectorState",
    "IncrementalSnapshot",
    "SnapshotProgress",
]

T = TypeVar("T")

#: Version of the JSON written to the state topic; bumped on any incompatible change so
#: an older cdc refuses a newer record instead of misreading it.
STATE_VERSION = 1

_KINDS = ("initial", "incremental")
_INITIAL_STATES = ("pending", "running", "done")
_REFUSE_HINT = (
    "run a cdc release that writes it, or delete the 'snapshot' record of the connector's"
    " state topic (<connector>.__cdc_state) to start its snapshots over"
)

Key = tuple[str | None, ...]


@dataclass(frozen=True, slots=True)
class SnapshotProgress:
    """The durable progress of one snapshot, as of its last finished chunk.

    Attributes:
        snapshot_id: names the snapshot in its watermarks.
        kind: "initial" (a crashed initial snapshot finished incrementally) or "incremental".
        tables: qualified "schema.table" names still to do, the current one first.
        last_key: text values of the key of the last row of the last finished chunk of the
            current table; None when the current table has not been started.
        chunks_done: chunks finished (also the id of the first chunk a resumed run asks for).
        rows_done: rows emitted.
        tables_done: tables finished, in order.
    """

    snapshot_id: str
    kind: Literal["initial", "incremental"]
    tables: tuple[str, ...]
    last_key: Key | None = None
    chunks_done: int = 0
    rows_done: int = 0
    tables_done: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        """No table is left."""
        return not self.tables

    def to_json(self) -> bytes:
        """The state-topic value: versioned JSON, the same bytes for equal progress."""
        return orjson.dumps({"version": STATE_VERSION, **_progress_dict(self)})

    @classmethod
    def from_json(cls, data: bytes) -> SnapshotProgress:
        """Parse ``to_json`` output.

        Raises:
            ValueError: not valid JSON of this shape, or a version this cdc does not know.
        """
        obj = _load(data, "snapshot progress")
        return _progress_from(obj, "snapshot progress")


@dataclass(frozen=True, slots=True)
class ConnectorState:
    """The connector's snapshot state, the one value of the state topic.

    Attributes:
        initial_snapshot: None before any decision, else where the initial snapshot stands.
        initial_tables: tables the initial snapshot still has to do.
        incremental: the running incremental snapshot, if any.
    """

    initial_snapshot: Literal["pending", "running", "done"] | None = None
    initial_tables: tuple[str, ...] = ()
    incremental: SnapshotProgress | None = None

    def to_json(self) -> bytes:
        """Versioned JSON, the same bytes for equal states."""
        inc = None if self.incremental is None else _progress_dict(self.incremental)
        return orjson.dumps(
            {
                "version": STATE_VERSION,
                "initial_snapshot": self.initial_snapshot,
                "initial_tables": list(self.initial_tables),
                "incremental": inc,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> ConnectorState:
        """Parse ``to_json`` output.

        Raises:
            ValueError: not valid JSON of this shape, or a version this cdc does not know.
        """
        what = "connector state"
        obj = _load(data, what)
        initial = obj.get("initial_snapshot")
        if initial is not None and initial not in _INITIAL_STATES:
            raise ValueError(
                f"{what}: initial_snapshot {initial!r} is not one of {_INITIAL_STATES}"
            )
        inc = obj.get("incremental")
        if inc is not None and not isinstance(inc, dict):
            raise ValueError(f"{what}: incremental must be an object or null")
        return cls(
            initial_snapshot=initial,
            initial_tables=_str_tuple(obj, "initial_tables", what),
            incremental=None if inc is None else _progress_from(inc, f"{what}.incremental"),
        )


def _progress_dict(p: SnapshotProgress) -> dict[str, Any]:
    return {
        "snapshot_id": p.snapshot_id,
        "kind": p.kind,
        "tables": list(p.tables),
        "last_key": None if p.last_key is None else list(p.last_key),
        "chunks_done": p.chunks_done,
        "rows_done": p.rows_done,
        "tables_done": list(p.tables_done),
    }


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{what}: not JSON ({exc})") from exc
    if not isinstance(obj, dict):
        # A corrupt stored record, not a caller's type error: ValueError like bad JSON.
        raise ValueError(f"{what}: expected a JSON object")  # noqa: TRY004
    version = obj.get("version")
    if version != STATE_VERSION:
        raise ValueError(
            f"{what}: version {version!r} is unknown to this cdc (it reads {STATE_VERSION}):"
            f" {_REFUSE_HINT}"
        )
    return obj


def _progress_from(obj: dict[str, Any], what: str) -> SnapshotProgress:
    snapshot_id = obj.get("snapshot_id")
    if not isinstance(snapshot_id, str):
        raise ValueError(f"{what}: snapshot_id must be a string")  # noqa: TRY004 (as above)
    kind = obj.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"{what}: kind {kind!r} is not one of {_KINDS}")
    raw_key = obj.get("last_key")
    last_key: Key | None = None
    if raw_key is not None:
        if not isinstance(raw_key, list) or not all(
            v is None or isinstance(v, str) for v in raw_key
        ):
            raise ValueError(f"{what}: last_key must be a list of strings/nulls, or null")
        last_key = tuple(raw_key)
    return SnapshotProgress(
        snapshot_id=snapshot_id,
        kind=kind,
        tables=_str_tuple(obj, "tables", what),
        last_key=last_key,
        chunks_done=_count(obj, "chunks_done", what),
        rows_done=_count(obj, "rows_done", what),
        tables_done=_str_tuple(obj, "tables_done", what),
    )


def _str_tuple(obj: dict[str, Any], name: str, what: str) -> tuple[str, ...]:
    value = obj.get(name)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what}: {name} must be a list of strings")
    return tuple(value)


def _count(obj: dict[str, Any], name: str, what: str) -> int:
    value = obj.get(name)
    # bool is an int subclass; true/false here is a corrupt record, not 1/0.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what}: {name} must be a non-negative integer")
    return value


@dataclass(frozen=True, slots=True)
class ChunkRequest:
    """What to read next: up to ``limit`` rows of ``table`` with key > ``after_key``
    (from the start of the table when None), in key order, between its watermarks."""

    chunk_id: int
    table: str
    after_key: Key | None
    limit: int


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
        request = ChunkRequest(
            chunk_id=self._next_id, table=p.tables[0], after_key=p.last_key, limit=self._chunk_rows
        )
        self._next_id += 1
        self._chunk = _Chunk(request)
        return request

    def add_tables(self, tables: Sequence[str]) -> None:
        """Queue more tables behind the remaining ones (a request that arrived while this
        snapshot runs); they become part of the stored progress with the next chunk. A
        table still to do is not added twice; one already done is read again."""
        p = self._progress
        extra = tuple(dict.fromkeys(t for t in tables if t not in p.tables))
        if extra:
            self._progress = replace(p, tables=p.tables + extra)

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
        return SnapshotProgress(
            snapshot_id=p.snapshot_id,
            kind=p.kind,
            tables=p.tables[1:],
            last_key=None,
            chunks_done=chunks_done,
            rows_done=rows_done,
            tables_done=(*p.tables_done, p.tables[0]),
        )
    return SnapshotProgress(
        snapshot_id=p.snapshot_id,
        kind=p.kind,
        tables=p.tables,
        last_key=chunk.last_key,
        chunks_done=chunks_done,
        rows_done=rows_done,
        tables_done=p.tables_done,
    )
