"""Edge: the last large values of each row, on local disk, to fill unchanged TOAST columns.

The one job: remember, per table and record key, the text of the row's large column
values, so that an UPDATE which did not touch a TOASTed column (pgoutput then sends no
value for it) can be published with the real value instead of a placeholder
(``toast.mode: fill``). SQLite (standard library) in WAL mode; writes are committed
before the connector confirms an LSN to PostgreSQL, so after a crash the store holds
everything up to the confirmed position and the replayed stream brings the rest.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import orjson

__all__ = ["REMEMBER_FROM_BYTES", "ToastStore"]

# Only values at least this long are remembered. PostgreSQL moves values out of line
# (and then omits them from UPDATEs that do not change them) only when a row passes
# ~2 KB; a shorter value moved out of a very wide row is not remembered and falls back to
# the placeholder (listed in the event, counted), never to a wrong value.
REMEMBER_FROM_BYTES = 256


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
        self._dirty = False
        self._lock = threading.Lock()

    def get(self, table: str, key: bytes) -> dict[str, str]:
        """The remembered large values of a row (column -> text form); empty if none."""
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
        with self._lock:
            if values:
                self._db.execute(
                    "INSERT INTO toast (tbl, key, cols) VALUES (?, ?, ?)"
                    " ON CONFLICT (tbl, key) DO UPDATE SET cols = excluded.cols",
                    (table, key, orjson.dumps(values)),
                )
            else:
                self._db.execute("DELETE FROM toast WHERE tbl = ? AND key = ?", (table, key))
            self._dirty = True

    def forget_table(self, table: str) -> None:
        """TRUNCATE: nothing of the table is left to remember."""
        with self._lock:
            self._db.execute("DELETE FROM toast WHERE tbl = ?", (table,))
            self._dirty = True

    def commit(self) -> None:
        """Make what was written durable; called before an LSN is confirmed."""
        with self._lock:
            if self._dirty:
                self._db.commit()
                self._dirty = False

    def close(self) -> None:
        self.commit()
        self._db.close()
