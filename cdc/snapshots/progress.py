"""Shows snapshot progress: a live bar on a terminal, structured log lines otherwise.

The one job: turn per-table row counts into what an operator watches (rows, rows/s, ETA).
It never logs a line per row; callers report at most every few seconds.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO

__all__ = ["ProgressView", "TableCounts", "eta_seconds"]

BAR_WIDTH = 24


class TableCounts(Protocol):
    """What a progress report needs of one table."""

    table: str
    estimated_rows: int
    rows: int
    started: float

    @property
    def done(self) -> bool: ...


def eta_seconds(rows: int, estimated: int, elapsed: float) -> float | None:
    """Seconds left at the rate so far; None when unknown (no estimate, no rate yet)."""
    if rows <= 0 or elapsed <= 0 or estimated <= rows:
        return None
    return (estimated - rows) / (rows / elapsed)


class ProgressView:
    """Renders progress to a terminal when there is one, else as ``snapshot_progress`` logs."""

    def __init__(self, log: Any, stream: TextIO | None = None) -> None:
        self._log = log
        self._stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())

    def show(self, tables: list[Any], *, final: bool = False) -> None:
        now = time.monotonic()
        for table in tables:
            elapsed = now - table.started
            rate = table.rows / elapsed if elapsed > 0 else 0.0
            eta = None if table.done else eta_seconds(table.rows, table.estimated_rows, elapsed)
            if self._tty:
                self._stream.write(_bar(table, rate, eta) + "\n")
            else:
                self._log.info(
                    "snapshot_progress",
                    table=table.table,
                    rows=table.rows,
                    estimated_rows=table.estimated_rows,
                    rows_per_s=round(rate),
                    eta_s=None if eta is None else round(eta),
                    done=table.done,
                )
        if self._tty:
            self._stream.flush()
        del final  # the same view for the last report; kept for callers' clarity


def _bar(table: Any, rate: float, eta: float | None) -> str:
    estimated = max(table.estimated_rows, table.rows, 1)
    share = 1.0 if table.done else min(1.0, table.rows / estimated)
    filled = int(share * BAR_WIDTH)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    left = "done" if table.done else ("ETA ?" if eta is None else f"ETA {_clock(eta)}")
    return (
        f"snapshot {table.table:<32} [{bar}] {share:6.1%}  {table.rows:>12,} rows"
        f"  {rate:>9,.0f} rows/s  {left}"
    )


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
