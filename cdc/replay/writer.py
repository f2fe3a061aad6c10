"""The target's transactions, run on a thread of their own, one behind the apply.

The one job: let the apply thread fold and convert batch N+1 while PostgreSQL works on
batch N (psycopg waits for the server without the GIL). The apply thread records what a
batch writes in a ``Unit`` (the same calls as on ``TargetDatabase``); the writer runs
each unit as one target transaction, in order, one at a time. Rows, DDL and the offsets
they came from stay in one transaction, so a crash still repeats nothing.

An error on the writer stops the replay: it is raised on the apply thread at the next
hand-over (or ``drain``), and nothing after the failed unit is run.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from cdc.postgres.target import TargetDatabase
from cdc.replay.batch import TableWrites
from cdc.replay.ddl import Target

__all__ = ["Unit", "Writer"]

_Op = Callable[[TargetDatabase], None]

# How often a waiting hand-over looks at whether the writer failed.
_POLL_S: Final = 0.1


class Unit:
    """One target transaction, recorded on the apply thread."""

    def __init__(self) -> None:
        self.outside: list[tuple[list[str], str]] = []  # committed before the transaction
        self.ops: list[_Op] = []

    def __bool__(self) -> bool:
        return bool(self.outside or self.ops)

    def run_outside(self, statements: Sequence[str], *, what: str) -> None:
        self.outside.append((list(statements), what))

    def execute(self, statements: Sequence[str], *, what: str) -> None:
        statements = list(statements)
        self.ops.append(lambda db: db.execute(statements, what=what))

    def truncate(self, target: Target) -> None:
        self.ops.append(lambda db: db.truncate(target))

    def write(
        self,
        target: Target,
        columns: Sequence[str],
        key_columns: Sequence[str],
        writes: TableWrites,
    ) -> None:
        columns, key_columns = tuple(columns), tuple(key_columns)
        self.ops.append(lambda db: db.write(target, columns, key_columns, writes))

    def save_table(
        self, source: tuple[str, str], target: Target, version: int, shape: bytes
    ) -> None:
        self.ops.append(lambda db: db.save_table(source, target, version, shape))

    def save(
        self,
        offsets: Mapping[tuple[str, int], int],
        position: tuple[int, int] | None,
        commit_ts_us: int | None,
        changes: int,
    ) -> None:
        offsets = dict(offsets)
        self.ops.append(lambda db: db.save(offsets, position, commit_ts_us, changes))


class Writer:
    """Runs units on the target, in order, on its own thread."""

    def __init__(self, target: TargetDatabase) -> None:
        self._target = target
        self._units: queue.Queue[Unit | None] = queue.Queue(maxsize=1)
        self._done = threading.Condition()
        self._pending = 0  # units handed over and not finished (under ``_done``)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="replay-write", daemon=True)
        self._thread.start()

    def submit(self, unit: Unit) -> None:
        """Hand a unit over; waits while the one before it is still waiting to run.

        Raises:
            CdcError: an earlier unit failed (nothing after it runs).
        """
        self._raise()
        if not unit:
            return
        with self._done:
            self._pending += 1
        while True:
            try:
                self._units.put(unit, timeout=_POLL_S)
            except queue.Full:
                self._raise()
            else:
                return

    def drain(self) -> None:
        """Wait until every unit handed over is committed.

        Raises:
            CdcError: a unit failed.
        """
        with self._done:
            while self._pending and self._error is None:
                self._done.wait(_POLL_S)
        self._raise()

    def close(self) -> None:
        """Stop the thread once what was handed over has run (or failed)."""
        while self._thread.is_alive():
            try:
                self._units.put(None, timeout=_POLL_S)
                break
            except queue.Full:
                if self._error is not None:
                    break
        self._thread.join()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        target = self._target
        while True:
            unit = self._units.get()
            if unit is None:
                return
            if self._error is not None:
                with self._done:  # a unit failed: nothing after it may run
                    self._pending -= 1
                    self._done.notify_all()
                continue
            try:
                for statements, what in unit.outside:
                    target.run_outside(statements, what=what)
                with target.transaction():
                    for op in unit.ops:
                        op(target)
            except BaseException as exc:  # noqa: BLE001 - raised on the apply thread
                self._error = exc
            finally:
                with self._done:
                    self._pending -= 1
                    self._done.notify_all()
