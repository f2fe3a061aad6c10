"""The status board and its rendering: pure, no daemon."""

from __future__ import annotations

from cdc.cli import render_status
from cdc.status import StatusBoard


def test_board_is_healthy_only_while_every_connector_works() -> None:
    board = StatusBoard()
    assert board.document()["healthy"] is False  # nothing reported yet
    board.update("a", phase="streaming")
    board.update("b", phase="snapshotting")
    assert board.document()["healthy"] is True
    board.update("b", phase="failed", error="boom")
    assert board.document()["healthy"] is False


def test_board_keeps_snapshot_progress_per_table() -> None:
    board = StatusBoard()
    board.update("a", phase="snapshotting", snapshot={"kind": "initial", "tables": {}})
    board.snapshot_progress("a", "public.t", rows=10, estimated_rows=100, done=False)
    board.snapshot_progress("a", "public.t", rows=100, done=True)
    [connector] = board.document()["connectors"]
    assert connector["snapshot"]["tables"]["public.t"] == {
        "rows": 100,
        "estimated_rows": 100,
        "done": True,
    }


def test_render_shows_phase_positions_errors_and_snapshots() -> None:
    document = {
        "healthy": False,
        "connectors": [
            {
                "connector": "inv",
                "phase": "streaming",
                "confirmed_lsn": "0/16B3748",
                "lag_bytes": 120,
                "in_flight_records": 4,
                "events": {"c": 3, "u": 1, "d": 0, "t": 0},
                "snapshot": {
                    "kind": "incremental",
                    "mode": "incremental",
                    "table": "public.t",
                    "rows_done": 500,
                    "chunks_done": 5,
                    "tables_left": ["public.t"],
                },
            },
            {"connector": "crm", "phase": "failed", "error": "no slot"},
        ],
    }
    assert render_status(document) == [
        "inv: streaming  confirmed 0/16B3748  lag 120 B  in flight 4  events c=3 u=1",
        "  snapshot (incremental, incremental): table public.t, 500 rows in 5 chunks,"
        " tables left 1",
        "crm: failed  confirmed -  lag 0 B  in flight 0  events 0",
        "  error: no slot",
    ]
