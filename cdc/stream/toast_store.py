"""Edge: the last large values of each row, on local disk, to fill unchanged TOAST columns.

The one job: remember, per table and record key, the text of the row's large column
values, so that an UPDATE which did not touch a TOASTed column (pgoutput then sends no
value for it) can be published with the real value instead of a placeholder
(``toast.mode: fill``). SQLite (standard library) in WAL mode.

The store must never fill an event with a value its row did not have at that commit. So
it holds only what is durable: every change to it is tagged with the stream position of
the event that made it and kept in memory until Kafka durably holds that position
(``durable``); only then is it written to SQLite. After a crash the store is exactly as
of the durable position, and the stream replayed from there rebuilds the rest in order.
Rows read by snapshots are values as of a point the stream continues from; the initial
snapshot writes them through (``at(None)``), an incremental chunk at its HIGH watermark.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import deque
from pathlib import Path

import orjson

from cdc.positions import Position

__all__ = ["ToastStore"]

_PUT = 0
_FORGET_TABLE = 1


class ToastStore:
    """One connector's store; a lock lets the initial snapshot's workers share it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level="DEFERRED", check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS toast (tbl TEXT NOT NULL, key BLOB NOT NULL,"
            " cols BLOB NOT NULL, PRIMARY KEY (tbl, key)) WITHOUT ROWID"
        )
        self._db.commit()
        self._lock = threading.Lock()
        self._at: Position | None = None
        self._seq = 0
        # Changes not yet durable, in stream order: (position, seq, op, table, key, values).
        self._pending: deque[
            tuple[Position, int, int, str, bytes | None, dict[str, str] | None]
        ] = deque()
        # The latest pending value of a row: (seq of its change, values; {} = forgotten).
        self._overlay: dict[tuple[str, bytes], tuple[int, dict[str, str]]] = {}
        # Tables with a pending TRUNCATE: seq of the latest one.
        self._cleared: dict[str, int] = {}

    def at(self, position: Position | None) -> None:
        """The identity of the message whose changes follow (None: write them through)."""
        self._at = position

    def get(self, table: str, key: bytes) -> dict[str, str]:
        """The remembered large values of a row (column -> text form); empty if none."""
        pending = self._overlay.get((table, key))
        if pending is not None:
            return pending[1]
        if table in self._cleared:
            return {}
        with self._lock:
            row = self._db.execute(
                "SELECT cols FROM toast WHERE tbl = ? AND key = ?", (table, key)
            ).fetchone()
        if row is None:
            return {}
        values: dict[str, str] = orjson.loads(row[0])
        return values

    def put(self, table: str, key: bytes, values: dict[str, str]) -> None:
        """Replace what is remembered of a row; an empty ``values`` forgets it."""
        if self._at is None:
            with self._lock:
                self._write(table, key, values)
            return
        self._seq += 1
        self._pending.append((self._at, self._seq, _PUT, table, key, values))
        self._overlay[(table, key)] = (self._seq, values)

    def forget_table(self, table: str) -> None:
        """TRUNCATE: nothing of the table is left to remember."""
        if self._at is None:
            with self._lock:
                self._db.execute("DELETE FROM toast WHERE tbl = ?", (table,))
            return
        self._seq += 1
        self._pending.append((self._at, self._seq, _FORGET_TABLE, table, None, None))
        for entry in [k for k in self._overlay if k[0] == table]:
            del self._overlay[entry]
        self._cleared[table] = self._seq

    def durable(self, upto: Position) -> None:
        """Kafka durably holds every message before ``upto``: write what their changes
        did to SQLite and commit it."""
        pending = self._pending
        if not pending or pending[0][0] >= upto:
            return
        with self._lock:
            while pending and pending[0][0] < upto:
                _, seq, op, table, key, values = pending.popleft()
                if op == _PUT:
                    assert key is not None
                    assert values is not None
                    self._write(table, key, values)
                    if self._overlay.get((table, key), (0, {}))[0] == seq:
                        del self._overlay[(table, key)]
                else:
                    self._db.execute("DELETE FROM toast WHERE tbl = ?", (table,))
                    if self._cleared.get(table) == seq:
                        del self._cleared[table]
            self._db.commit()

    def commit(self) -> None:
        """Make what was written through durable (the initial snapshot's rows)."""
        with self._lock:
            self._db.commit()

    def _write(self, table: str, key: bytes, values: dict[str, str]) -> None:
        if values:
            self._db.execute(
                "INSERT INTO toast (tbl, key, cols) VALUES (?, ?, ?)"
                " ON CONFLICT (tbl, key) DO UPDATE SET cols = excluded.cols",
                (table, key, orjson.dumps(values)),
            )
        else:
            self._db.execute("DELETE FROM toast WHERE tbl = ? AND key = ?", (table, key))

    def close(self) -> None:
        """Close the file; what is not durable is dropped (the stream brings it again)."""
        self.commit()
        self._db.close()
