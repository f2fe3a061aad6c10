"""Snapshot progress: ETA arithmetic and the two renderings (terminal, log)."""

from __future__ import annotations

import io
import time

import structlog
from structlog.testing import capture_logs

from cdc.snapshots.initial import TableProgress
from cdc.snapshots.progress import ProgressView, eta_seconds


def test_eta_from_the_rate_so_far() -> None:
    assert eta_seconds(rows=250, estimated=1000, elapsed=5.0) == 15.0


def test_eta_unknown_without_rate_or_estimate() -> None:
    assert eta_seconds(rows=0, estimated=1000, elapsed=5.0) is None
    assert eta_seconds(rows=10, estimated=0, elapsed=5.0) is None
    assert eta_seconds(rows=10, estimated=10, elapsed=5.0) is None


def _table(rows: int, estimated: int, *, done: bool = False) -> TableProgress:
    return TableProgress(
        "public.t", estimated, rows=rows, started=time.monotonic() - 10, tasks_left=0 if done else 1
    )


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_shows_a_bar_with_rows_rate_and_eta() -> None:
    stream = _Tty()
    ProgressView(structlog.get_logger(), stream=stream).show([_table(500, 1000)])
    line = stream.getvalue()
    assert "public.t" in line
    assert "50.0%" in line
    assert "500 rows" in line
    assert "rows/s" in line
    assert "ETA 0:00:1" in line


def test_not_a_terminal_logs_structured_progress() -> None:
    with capture_logs() as logs:
        ProgressView(structlog.get_logger(), stream=io.StringIO()).show(
            [_table(1000, 1000, done=True)]
        )
    assert logs[0]["event"] == "snapshot_progress"
    assert (logs[0]["table"], logs[0]["rows"], logs[0]["done"], logs[0]["eta_s"]) == (
        "public.t", 1000, True, None,
    )  # fmt: skip
