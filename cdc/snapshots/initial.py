"""Reads every published table in one exported snapshot and publishes the rows as op ``r``.

The one job: given the snapshot PostgreSQL exported when the slot was created, read each
table's rows as they were at the slot's consistent point, on ``max_workers`` connections
that share that snapshot, and produce them to both topics. Streaming then starts at the
consistent point: no change is missed and none is seen twice.

Rows are streamed (COPY) and produced as they come, so memory is bounded by the producer's
queue whatever a table's size. The threads here only read and encode; the caller's thread
polls Kafka for acknowledgements and reports progress.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cdc.envelope import Record, TableEncoder, TxContext
from cdc.errors import SinkError
from cdc.kafka.sink import KafkaSink, ProduceRejected
from cdc.postgres.snapshot_reader import KeyRange, SnapshotReader, TableShape

__all__ = ["InitialSnapshot", "SnapshotTask", "TableProgress", "plan_tasks"]

# A table with a single integer key and more estimated rows than this is split into key
# ranges read in parallel; smaller ones are not worth the extra min/max query.
SPLIT_ABOVE_ROWS = 200_000
# How long a worker waits for the producer's queue to drain when it is full.
QUEUE_FULL_WAIT_S = 0.01
# Progress reports (log line or terminal bar) at most this often.
PROGRESS_INTERVAL_S = 5.0
# COPY rows handed over per batch: bounded memory, few Python-level iterations.
BATCH_ROWS = 5_000


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
    """Runs the initial snapshot; ``run()`` returns when every row is acknowledged."""

    def __init__(
        self,
        *,
        dsn: str,
        application_name: str,
        snapshot_name: str,
        tx: TxContext,
        shapes: list[TableShape],
        encoder_for: Callable[[TableShape], TableEncoder],
        sink: KafkaSink,
        max_workers: int,
        stop: threading.Event,
        report: Callable[[list[TableProgress], bool], None],
    ) -> None:
        self._dsn = dsn
        self._application_name = application_name
        self._snapshot_name = snapshot_name
        self._tx = tx
        self._shapes = shapes
        self._encoder_for = encoder_for
        self._sink = sink
        self._max_workers = max_workers
        self._stop = stop
        self._report = report
        self._failures: list[Any] = []
        self._errors: list[BaseException] = []
        self._first_lock = threading.Lock()
        self._first_sent = False
        self._held: list[tuple[TableEncoder, tuple[str | None, ...]]] = []
        self.progress: dict[str, TableProgress] = {}

    def run(self) -> dict[str, int] | None:
        """Read, produce, wait for Kafka. Returns rows per table, or None when a stop was
        requested meanwhile (the caller then leaves the rest for an incremental resume).

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
            tasks = plan_tasks(readers[0], self._shapes, self._max_workers)
            for shape in self._shapes:
                name = f"{shape.relation.namespace}.{shape.relation.name}"
                self.progress[name] = TableProgress(name, max(0, shape.estimated_rows))
            for task in tasks:
                self.progress[_name(task.shape)].tasks_left += 1
            work: queue.SimpleQueue[SnapshotTask] = queue.SimpleQueue()
            for task in tasks:
                work.put(task)
            threads = [
                threading.Thread(
                    target=self._work, args=(reader, work), name=f"snapshot-{i}", daemon=True
                )
                for i, reader in enumerate(readers)
            ]
            for thread in threads:
                thread.start()
            last_report = time.monotonic()
            while any(t.is_alive() for t in threads):
                self._sink.poll(0.05)
                self._raise_failures()
                now = time.monotonic()
                if now - last_report >= PROGRESS_INTERVAL_S:
                    self._report(list(self.progress.values()), False)
                    last_report = now
            for thread in threads:
                thread.join()
            if self._errors:
                raise self._errors[0]
            if self._stop.is_set():
                return None
            self._emit_held()
            if not self._flush():
                return None
            self._report(list(self.progress.values()), True)
            return {name: p.rows for name, p in self.progress.items()}
        finally:
            for reader in readers:
                reader.close()

    # --- workers --------------------------------------------------------------------

    def _work(self, reader: SnapshotReader, work: queue.SimpleQueue[SnapshotTask]) -> None:
        pending: tuple[TableEncoder, tuple[str | None, ...]] | None = None
        try:
            while not self._stop.is_set() and not self._errors:
                try:
                    task = work.get_nowait()
                except queue.Empty:
                    break
                encoder = self._encoder_for(task.shape)
                progress = self.progress[_name(task.shape)]
                for batch in reader.copy_rows(
                    task.shape, key_range=task.key_range, batch_rows=BATCH_ROWS
                ):
                    if self._stop.is_set() or self._errors:
                        return
                    for row in batch:
                        # Hold each row back by one, so the very last one overall can
                        # be marked "last" once every worker is done.
                        if pending is not None:
                            self._emit(*pending, self._flag())
                        pending = (encoder, row)
                    progress.rows += len(batch)
                progress.tasks_left -= 1
            reader.end_snapshot()
        except BaseException as exc:  # noqa: BLE001 - re-raised by run() in the caller's thread
            self._errors.append(exc)
        finally:
            if pending is not None:
                with self._first_lock:
                    self._held.append(pending)

    def _flag(self) -> str:
        """``"first"`` for the first record of the whole snapshot, ``"true"`` after."""
        with self._first_lock:
            first, self._first_sent = not self._first_sent, True
        return "first" if first else "true"

    def _emit(self, encoder: TableEncoder, row: tuple[str | None, ...], flag: str) -> None:
        now_us = time.time_ns() // 1000
        for record in encoder.read(row, self._tx, self._tx.commit_lsn, now_us, flag):
            self._produce(record)

    def _produce(self, record: Record) -> None:
        while True:
            try:
                self._sink.produce(
                    record.topic, record.value, record.key, on_delivery=self._delivered
                )
            except BufferError:
                time.sleep(QUEUE_FULL_WAIT_S)  # the caller's thread polls acks meanwhile
                continue
            except ProduceRejected as exc:
                raise SinkError(
                    f"Kafka refused a snapshot record for topic {record.topic!r}: {exc}",
                    topic=record.topic,
                ) from exc
            return

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._failures.append((err, msg.topic() if msg is not None else None))

    # --- the end --------------------------------------------------------------------

    def _emit_held(self) -> None:
        for index, (encoder, row) in enumerate(self._held):
            last = index == len(self._held) - 1
            self._emit(encoder, row, "last" if last else self._flag())

    def _flush(self) -> bool:
        while len(self._sink):
            self._sink.poll(0.1)
            self._raise_failures()
            if self._stop.is_set():
                return False
        self._raise_failures()
        return True

    def _raise_failures(self) -> None:
        if self._failures:
            error, topic = self._failures[0]
            raise SinkError(
                f"Kafka did not accept a snapshot record for topic {topic!r}: {error}",
                topic=topic,
            )


def _name(shape: TableShape) -> str:
    return f"{shape.relation.namespace}.{shape.relation.name}"
