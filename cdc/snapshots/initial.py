"""Reads every published table in one exported snapshot and publishes the rows as op ``r``.

The one job: given the snapshot PostgreSQL exported when the slot was created, read each
table's rows as they were at the slot's consistent point, on ``max_workers`` connections
that share that snapshot, and publish them to both topics. Streaming then starts at the
consistent point: no change is missed and none is seen twice.

Workers read (``COPY``, streamed, in key order) and encode; this thread publishes their
batches through the sink, the connector's one produce path, so memory is bounded by a few
batches and the producer's queue whatever a table's size. With each batch it stores the
progress of every task (table, or key range of a large table): the key of its last
published row. In ``exactly_once`` mode that progress is in the same Kafka transaction as
the rows; in ``at_least_once`` mode it is stored once they are acknowledged. An
interrupted snapshot (SIGKILL, a lost connection) therefore leaves a state that resumes
as an incremental snapshot of exactly what was not published: the rest of each range.

Before any row it publishes the schema-change events of the tables whose shapes the
schema history did not know (built by the caller), with the history they reach, so a
consumer of the log meets each table's shape before its first row.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cdc.envelope import Record, TableEncoder, TxContext
from cdc.errors import Stopped
from cdc.kafka.sink import KafkaSink
from cdc.postgres.snapshot_reader import KeyRange, SnapshotReader, TableShape
from cdc.snapshots.state import STATE_KEY, ConnectorState, Key, SnapshotProgress
from cdc.stream.schema_changes import SCHEMA_STATE_KEY

__all__ = ["InitialSnapshot", "SnapshotTask", "TableProgress", "plan_tasks"]

# A table with a single integer key and more estimated rows than this is split into key
# ranges read in parallel; smaller ones are not worth the extra min/max query.
SPLIT_ABOVE_ROWS = 200_000
# Progress reports (log line or terminal bar) at most this often.
PROGRESS_INTERVAL_S = 5.0
# COPY rows handed over per batch. Small: a batch waits in the queue as encoded records,
# and orjson leaves each result in a buffer of 4 KB or more (a 5,000-row batch holds 40 MB);
# per-batch work (the progress record) is small enough not to show (bench/snapshot.py).
BATCH_ROWS = 500
# Batches waiting for the publishing thread, per worker: enough to keep both busy.
QUEUED_BATCHES_PER_WORKER = 1
# How long the publishing thread waits for a batch before checking on the workers.
BATCH_WAIT_S = 0.05


@dataclass(frozen=True, slots=True)
class SnapshotTask:
    """One unit of work: a table, or one key range of a large table."""

    shape: TableShape
    key_range: KeyRange | None


@dataclass(slots=True)
class TableProgress:
    """Rows read so far of one table, against its estimate (for rows/s and ETA)."""

    table: str
    estimated_rows: int
    rows: int = 0
    started: float = field(default_factory=time.monotonic)
    tasks_left: int = 0

    @property
    def done(self) -> bool:
        return self.tasks_left == 0


@dataclass(slots=True)
class _TaskState:
    """How far one task got: the key of its last published row, and whether it is done."""

    task: SnapshotTask
    last_key: Key | None = None
    done: bool = False


# One batch from a worker: its records, then (task index, last published key, done).
_Batch = tuple[list[Record], list[tuple[int, Key | None, bool]]]


def plan_tasks(
    reader: SnapshotReader, shapes: list[TableShape], max_workers: int
) -> list[SnapshotTask]:
    """Largest tables first; a large table with one integer key split into ranges."""
    tasks: list[SnapshotTask] = []
    for shape in sorted(shapes, key=lambda s: -s.estimated_rows):
        if max_workers > 1 and shape.estimated_rows > SPLIT_ABOVE_ROWS:
            ranges = reader.split_ranges(shape, max_workers)
        else:
            ranges = [None]
        tasks.extend(SnapshotTask(shape, key_range) for key_range in ranges)
    return tasks


class InitialSnapshot:
    """Runs the initial snapshot; ``run()`` returns when every row is durable in Kafka."""

    def __init__(
        self,
        *,
        dsn: str,
        application_name: str,
        snapshot_name: str,
        tx: TxContext,
        shapes: list[TableShape],
        deferred: tuple[str, ...],
        encoder_for: Callable[[TableShape], TableEncoder],
        sink: KafkaSink,
        max_workers: int,
        stop: threading.Event,
        report: Callable[[list[TableProgress], bool], None],
        schema_events: list[Record] | None = None,
        schema_state: bytes | None = None,
    ) -> None:
        """Args:
        deferred: tables left to an incremental snapshot while streaming (above
            ``incremental_above_rows``): part of the stored progress from the start.
        schema_events: published before the first row (schema-change events), with
            ``schema_state`` (the schema history they reach) stored with them.
        (The others as their names say; ``tx`` describes the snapshot: its start time
        and the consistent point the stream continues from.)
        """
        self._dsn = dsn
        self._application_name = application_name
        self._snapshot_name = snapshot_name
        self._tx = tx
        self._shapes = shapes
        self._deferred = deferred
        self._encoder_for = encoder_for
        self._sink = sink
        self._max_workers = max_workers
        self._stop = stop
        self._report = report
        self._schema_events = schema_events or []
        self._schema_state = schema_state
        self._errors: list[BaseException] = []
        self._first_lock = threading.Lock()
        self._first_sent = False
        # Workers of one split table share its TableProgress: `+=` on an attribute is a
        # read and a write the GIL may switch between, so two workers lose a batch.
        self._progress_lock = threading.Lock()
        self._held: list[tuple[TableEncoder, tuple[str | None, ...], int, Key | None]] = []
        self._tasks: list[_TaskState] = []
        self._tasks_of: dict[str, list[_TaskState]] = {}
        # Set when this thread leaves early: workers stop at their next batch.
        self._halt = threading.Event()
        self._batches: queue.Queue[_Batch] = queue.Queue(
            maxsize=QUEUED_BATCHES_PER_WORKER * max_workers
        )
        self.progress: dict[str, TableProgress] = {}

    def run(self) -> dict[str, int] | None:
        """Read, publish, make durable. Returns rows per table, or None when a stop was
        requested meanwhile (the stored progress then resumes what is left).

        Raises:
            CdcError: a read failed or Kafka refused a record.
        """
        readers = [
            SnapshotReader(self._dsn, application_name=f"{self._application_name}:snapshot{i}")
            for i in range(self._max_workers)
        ]
        try:
            # Every worker imports the snapshot before any reading starts: the exporting
            # replication connection may be used for streaming only after that.
            for reader in readers:
                reader.begin_snapshot(self._snapshot_name)
            self._publish_schema_events()
            tasks = plan_tasks(readers[0], self._shapes, self._max_workers)
            self._tasks = [_TaskState(task) for task in tasks]
            for state in self._tasks:
                self._tasks_of.setdefault(_name(state.task.shape), []).append(state)
            for shape in self._shapes:
                self.progress[_name(shape)] = TableProgress(
                    _name(shape), max(0, shape.estimated_rows)
                )
            for task in tasks:
                self.progress[_name(task.shape)].tasks_left += 1
            work: queue.SimpleQueue[int] = queue.SimpleQueue()
            for index in range(len(tasks)):
                work.put(index)
            threads = [
                threading.Thread(
                    target=self._work, args=(reader, work), name=f"snapshot-{i}", daemon=True
                )
                for i, reader in enumerate(readers)
            ]
            for thread in threads:
                thread.start()
            try:
                self._publish_batches(threads)
            finally:
                self._halt_workers(threads)
            if self._errors:
                raise self._errors[0]
            if self._stop.is_set():
                return None
            self._publish_held()
            self._sink.finish(timeout=60.0)
            self._report(list(self.progress.values()), True)
            return {name: p.rows for name, p in self.progress.items()}
        except Stopped:
            return None
        finally:
            for reader in readers:
                reader.close()

    # --- the publishing thread ----------------------------------------------------------

    def _publish_schema_events(self) -> None:
        """The tables' shapes, before any row (in exactly_once: in the Kafka transaction
        of the first rows, or one before it)."""
        if not self._schema_events:
            return
        sink = self._sink
        sink.publish(self._schema_events, None)
        sink.end_group(end_lsn=0)
        if self._schema_state is not None:
            sink.save_state(SCHEMA_STATE_KEY, self._schema_state)

    def _publish_batches(self, threads: list[threading.Thread]) -> None:
        sink = self._sink
        last_report = time.monotonic()
        while True:
            try:
                records, updates = self._batches.get(timeout=BATCH_WAIT_S)
            except queue.Empty:
                sink.service()
                if self._errors or self._stop.is_set():
                    return
                if not any(t.is_alive() for t in threads) and self._batches.empty():
                    return
                continue
            sink.publish(records, None)
            for index, last_key, done in updates:
                state = self._tasks[index]
                state.last_key = last_key
                if done:
                    state.done = True
            sink.end_group(end_lsn=0)
            sink.save_state(STATE_KEY, self.remaining_state().to_json())
            sink.service()
            now = time.monotonic()
            if now - last_report >= PROGRESS_INTERVAL_S:
                self._report(list(self.progress.values()), False)
                last_report = now

    def remaining_state(self) -> ConnectorState:
        """The state to resume from if the snapshot stops here: what is not published
        yet, as an incremental snapshot of the rest of each task (and the deferred)."""
        tables: list[str] = []
        bounds: list[tuple[Key | None, Key | None]] = []
        done: list[str] = []
        for shape in self._shapes:
            states = self._tasks_of.get(_name(shape), [])
            if states and all(s.done for s in states):
                done.append(_name(shape))
                continue
            for state in states:
                if state.done:
                    continue
                lower, upper = state.task.key_range or (None, None)
                after = state.last_key
                if after is None and lower is not None:
                    after = (str(lower),)
                tables.append(_name(shape))
                bounds.append((after, None if upper is None else (str(upper),)))
        for table in self._deferred:
            tables.append(table)
            bounds.append((None, None))
        progress = SnapshotProgress(
            snapshot_id=f"initial-{self._snapshot_name}",
            kind="initial",
            tables=tuple(tables),
            tables_done=tuple(done),
            bounds=tuple(bounds),
        )
        return ConnectorState(initial_snapshot="running", incremental=progress)

    def _publish_held(self) -> None:
        """The row each worker held back: the very last one is marked ``last``."""
        held = self._held
        for position, (encoder, row, index, key) in enumerate(held):
            flag = "last" if position == len(held) - 1 else self._flag()
            records = encoder.read(row, self._tx, self._tx.commit_lsn, time.time_ns() // 1000, flag)
            self._sink.publish(records, None)
            self._tasks[index].last_key = key
            self._tasks[index].done = True
            self._sink.end_group(end_lsn=0)
        for state in self._tasks:
            state.done = True

    def _halt_workers(self, threads: list[threading.Thread]) -> None:
        """Stop workers still reading (this thread leaves early), draining the batches
        they may be blocked on; nothing drained was published, so nothing is lost."""
        if not any(t.is_alive() for t in threads):
            return
        self._halt.set()
        while any(t.is_alive() for t in threads):
            try:
                self._batches.get(timeout=BATCH_WAIT_S)
            except queue.Empty:
                continue

    # --- workers --------------------------------------------------------------------

    def _work(self, reader: SnapshotReader, work: queue.SimpleQueue[int]) -> None:
        # The row held back by one, so the very last one overall can be marked "last"
        # once every worker is done: (encoder, values, task index, its key, task ends).
        pending: tuple[TableEncoder, tuple[str | None, ...], int, Key | None, bool] | None = None
        try:
            while not self._stopping():
                try:
                    index = work.get_nowait()
                except queue.Empty:
                    break
                task = self._tasks[index].task
                shape = task.shape
                encoder = self._encoder_for(shape)
                progress = self.progress[_name(shape)]
                ordered = bool(shape.key_columns)
                rows_seen = False
                for batch in reader.copy_rows(
                    shape, key_range=task.key_range, batch_rows=BATCH_ROWS, ordered=ordered
                ):
                    if self._stopping():
                        return
                    records: list[Record] = []
                    updates: list[tuple[int, Key | None, bool]] = []
                    now_us = time.time_ns() // 1000
                    for row in batch:
                        if pending is not None:
                            p_encoder, p_row, p_index, p_key, p_ends = pending
                            records.extend(
                                p_encoder.read(
                                    p_row, self._tx, self._tx.commit_lsn, now_us, self._flag()
                                )
                            )
                            updates.append((p_index, p_key, p_ends))
                        key = SnapshotReader.key_of(shape, row) if ordered else None
                        pending = (encoder, row, index, key, False)
                    rows_seen = True
                    with self._progress_lock:
                        progress.rows += len(batch)
                    self._batches.put((records, updates))
                if pending is not None and pending[2] == index:
                    pending = (*pending[:4], True)
                elif not rows_seen:
                    self._batches.put(([], [(index, None, True)]))
                with self._progress_lock:
                    progress.tasks_left -= 1
            reader.end_snapshot()
        except BaseException as exc:  # noqa: BLE001 - re-raised by run() in the caller's thread
            self._errors.append(exc)
        finally:
            if pending is not None:
                with self._first_lock:
                    self._held.append(pending[:4])

    def _stopping(self) -> bool:
        return self._stop.is_set() or self._halt.is_set() or bool(self._errors)

    def _flag(self) -> str:
        """``"first"`` for the first record of the whole snapshot, ``"true"`` after."""
        with self._first_lock:
            first, self._first_sent = not self._first_sent, True
        return "first" if first else "true"


def _name(shape: TableShape) -> str:
    return f"{shape.relation.namespace}.{shape.relation.name}"
