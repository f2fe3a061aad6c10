"""Which consumed changes may be applied now, and in which order. No I/O.

The one job: merge the changes of every consumed partition into the source's commit order
and hand out only those whose turn has certainly come. Each partition of a retention
topic holds its records in commit order (``cdc.lsn``, ``cdc.seq``), but partitions are
fetched independently, so a change read from one partition may precede one not yet
fetched from another. The daemon's committed position in its state topic (the
``watermark``, written in the same Kafka transaction as the records before it) closes
that gap: once it is visible, every record before it is visible too, and the edge reads
each partition up to it before asking here. Changes before the watermark are then merged
across partitions, exactly in commit order: per key (always), across tables, and around
truncates and schema changes.

Without a watermark (``at_least_once`` connectors write none) the order is per partition
only, which keeps each key's changes in commit order.

Transactions (``transactional``): a batch ends only between two source transactions, and
a source transaction is handed out only when it is whole, as the transaction topic's END
record counts it.

It must not parse records (``cdc.replay.records``) nor touch a database.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

from cdc.replay.records import Change, ChangeKind

__all__ = ["ChangeQueue", "Until"]

Partition = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True, slots=True)
class Until:
    """Where a point-in-time replay stops: after the commit at ``lsn``, or after the last
    commit at or before ``ts_us`` (whichever is given)."""

    lsn: int | None = None
    ts_us: int | None = None

    def excludes(self, change: Change) -> bool:
        if self.lsn is not None and change.lsn > self.lsn and not change.initial_snapshot:
            return True
        return self.ts_us is not None and change.commit_ts_us > self.ts_us


class ChangeQueue:
    """The consumed changes not yet applied, per partition, in the order consumed."""

    def __init__(self, *, ordered: bool, transactional: bool = False, until: Until | None = None):
        """Args:
        ordered: merge partitions by the watermark (the connector writes one).
        transactional: hand out whole source transactions only (needs END counts).
        until: stop at this point of the stream.
        """
        self._ordered = ordered
        self._transactional = transactional
        self._until = until
        self._queues: dict[Partition, deque[Change]] = {}
        self._last: dict[Partition, tuple[int, int]] = {}
        self._watermark: tuple[int, int] | None = None
        self._expected: dict[int, int] = {}  # commit LSN -> events of the selected tables
        self.finished = False  # the point of --until was passed
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def set_watermark(self, position: tuple[int, int]) -> None:
        """The daemon's committed position: every record before it is visible."""
        if self._watermark is None or position > self._watermark:
            self._watermark = position

    def expect(self, commit_lsn: int, events: int) -> None:
        """A transaction's END record: how many of its events the replayed tables get."""
        self._expected[commit_lsn] = events

    def add(self, change: Change) -> None:
        """Queue a consumed change (in the partition's order)."""
        tp = (change.topic, change.partition)
        if change.kind in (ChangeKind.SKIP, ChangeKind.SCHEMA):
            # No position of its own: it goes with its neighbours in the partition.
            change.lsn, change.seq = self._last.get(tp, (0, 0))
        else:
            self._last[tp] = change.position
        queue = self._queues.get(tp)
        if queue is None:
            queue = self._queues[tp] = deque()
        queue.append(change)
        self._size += 1

    def head(self, tp: Partition) -> Change | None:
        """The first queued change of a partition (the edge reads on until it is past
        the watermark)."""
        queue = self._queues.get(tp)
        return queue[0] if queue else None

    def needs_more(self, tp: Partition) -> bool:
        """Whether the partition must be read on before the watermark is reached in it:
        its last queued change is before the watermark (or nothing is queued)."""
        if not self._ordered or self._watermark is None:
            return False
        queue = self._queues.get(tp)
        return not queue or queue[-1].position < self._watermark

    def _due(self, change: Change) -> bool:
        if not self._ordered:
            return True
        if self._watermark is None:
            return change.initial_snapshot or change.kind is ChangeKind.SKIP
        return change.position < self._watermark or change.initial_snapshot

    def take(self, limit: int) -> list[Change]:
        """The next changes to apply, in commit order, at most about ``limit`` (a whole
        transaction is never split in ``transactional`` mode, so it may be more)."""
        if self.finished:
            return []
        out: list[Change] = []
        heap: list[tuple[int, int, int, Partition]] = []
        for tp, queue in self._queues.items():
            if queue and self._due(queue[0]):
                first = queue[0]
                heap.append((first.lsn, first.seq, first.offset, tp))
        heapq.heapify(heap)
        tx_start = 0  # index in ``out`` where the current source transaction began
        current_lsn: int | None = None
        while heap:
            tp = heapq.heappop(heap)[3]
            queue = self._queues[tp]
            change = queue[0]
            if (
                self._until is not None
                and change.kind is not ChangeKind.SKIP
                and self._until.excludes(change)
            ):
                self.finished = True
                break
            if self._transactional and change.lsn != current_lsn:
                if not self._whole(out, tx_start, current_lsn):
                    break
                if len(out) >= limit:
                    break
                tx_start, current_lsn = len(out), change.lsn
            elif not self._transactional and len(out) >= limit:
                break
            queue.popleft()
            out.append(change)
            if queue and self._due(queue[0]):
                nxt = queue[0]
                heapq.heappush(heap, (nxt.lsn, nxt.seq, nxt.offset, tp))
        if self._transactional:
            if not self._whole(out, tx_start, current_lsn):
                self._put_back(out[tx_start:])
                del out[tx_start:]
                self.finished = False  # the cut fell inside a transaction: not yet --until
            # Every transaction handed out is whole: its END count is done with.
            for lsn in {c.lsn for c in out if c.transaction_id is not None}:
                self._expected.pop(lsn, None)
        self._size -= len(out)
        return out

    def _whole(self, out: list[Change], start: int, lsn: int | None) -> bool:
        """Whether ``out[start:]`` (the changes of the transaction at ``lsn``) is all of it."""
        if lsn is None or start == len(out):
            return True
        group = out[start:]
        if all(c.initial_snapshot or c.transaction_id is None for c in group):
            return True  # snapshot reads and records of no transaction stand alone
        expected = self._expected.get(lsn)
        counted = sum(1 for c in group if c.kind is not ChangeKind.SKIP)
        return expected is not None and counted >= expected

    def _put_back(self, changes: list[Change]) -> None:
        """Return popped changes to the front of their queues (queues stay prefixes)."""
        for change in reversed(changes):
            self._queues[(change.topic, change.partition)].appendleft(change)
