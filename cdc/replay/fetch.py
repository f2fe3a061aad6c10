"""Kafka reads and record parsing on a thread of their own, ahead of the apply.

The one job: keep the next changes coming while the target database works on the batch
before (its ``COPY`` and upserts run in another process: the GIL is free meanwhile). The
thread reads the retention partitions (``cdc.kafka.consumer.PartitionReader``), parses
each record (``cdc.replay.records.parse_change``) and hands chunks over through a bounded
queue, so memory stays bounded when the target is slower than Kafka. What it read up to,
and where a partition ended, travel with the chunks: the apply side's view of offsets
never runs ahead of the changes it holds (its stored offsets must never skip one).

It must not decide what is applied, nor touch the target.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass
from typing import Final

from cdc.kafka.consumer import PartitionReader
from cdc.replay.records import Change, parse_change

__all__ = ["Fetcher"]

Partition = tuple[str, int]

# Chunks (of up to one consume() batch each) read ahead of the apply.
MAX_CHUNKS: Final = 4
# How long one read waits for records when the partitions are quiet.
READ_WAIT_S: Final = 0.1


@dataclass(slots=True)
class _Chunk:
    changes: list[Change]
    eof: dict[Partition, int]
    error: BaseException | None = None


class Fetcher:
    """Reads and parses on its own thread; ``take`` hands the changes over in order."""

    def __init__(self, reader: PartitionReader) -> None:
        self._reader = reader
        self._chunks: queue.Queue[_Chunk] = queue.Queue(maxsize=MAX_CHUNKS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replay-fetch", daemon=True)
        # The apply side's view: the offset after the last change handed over, and the
        # offset each partition's last end-of-partition was seen at.
        self.next: dict[Partition, int] = dict(reader.next)
        self.eof: dict[Partition, int] = {}
        # Partitions to start reading, assigned by the thread itself between two reads
        # (librdkafka's assign waits for the consumer that a concurrent consume holds).
        self._additions: queue.SimpleQueue[dict[Partition, int | None]] = queue.SimpleQueue()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):  # unblock a put() waiting for room
                self._chunks.get_nowait()
            self._thread.join(0.05)

    def add(self, start: dict[Partition, int | None]) -> None:
        """Also read these partitions (from these offsets; None: the beginning)."""
        for tp, offset in start.items():
            if offset is not None:
                self.next.setdefault(tp, offset)
        self._additions.put(start)

    def at_end(self, tp: Partition, end: int) -> bool:
        """Whether everything before ``end`` of the partition was handed over."""
        return max(self.eof.get(tp, -1), self.next.get(tp, -1)) >= end

    def take(self, timeout: float) -> list[Change]:
        """The changes read since the last call (waiting up to ``timeout`` for the first).

        Raises:
            CdcError: reading or parsing failed on the thread (re-raised here).
        """
        out: list[Change] = []
        try:
            chunk = self._chunks.get(timeout=timeout)
        except queue.Empty:
            return out
        while True:
            if chunk.error is not None:
                raise chunk.error
            nxt = self.next
            for change in chunk.changes:
                nxt[(change.topic, change.partition)] = change.offset + 1
            self.eof.update(chunk.eof)
            out.extend(chunk.changes)
            try:
                chunk = self._chunks.get_nowait()
            except queue.Empty:
                return out

    def _run(self) -> None:
        reader = self._reader
        while not self._stop.is_set():
            try:
                while not self._additions.empty():
                    reader.add(self._additions.get())
                records, eof = reader.read(READ_WAIT_S)
                chunk = _Chunk([parse_change(*r) for r in records], eof)
            except BaseException as exc:  # noqa: BLE001 - handed to the apply thread, raised there
                chunk = _Chunk([], {}, exc)
            if not chunk.changes and not chunk.eof and chunk.error is None:
                continue
            while not self._stop.is_set():
                try:
                    self._chunks.put(chunk, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if chunk.error is not None:
                return
