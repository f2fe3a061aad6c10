"""Snapshot benchmark: 1,000,000 existing rows of six mixed columns into both topics.

Prints one JSON line. Not a test: numbers, never assertions.

    .venv/bin/python -m bench.snapshot [--rows 1000000] [--workers 2] [--keep DIR]

Measures, with PostgreSQL and Kafka beside the daemon on this machine:
- initial snapshot: rows/s from the snapshot's start to Kafka's acknowledgement of every
  row on both topics (the daemon's ``snapshot_finished``), and the wall time from the
  daemon's start to that point;
- incremental snapshot of the same table while streaming (``cdc snapshot``), rows/s;
- the daemon's peak RSS over both;
- raw: the same table read by ``COPY ... TO STDOUT`` into this process, in the same run,
  and the snapshot's rate as a ratio to it (absolute figures on a shared machine vary by
  +-30 % from run to run).

The broker is warmed up first (``bench.e2e._warm_up``). Before a rate is printed, both
topics are read back ``read_committed``: every row's key must be there, once on the
retention topic; otherwise an error is printed instead of numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench.e2e import INSERT, TABLE, DaemonProcess, TopicCounter, _warm_up
from cdc.testing.kafka import start_kafka
from cdc.testing.postgres import start_postgres


def _wait_for(log: Path, event: str, count: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines: list[dict[str, Any]] = [
            orjson.loads(raw) for raw in log.read_bytes().splitlines() if raw[:1] == b"{"
        ]
        found = [line for line in lines if line.get("event") == event]
        if len(found) >= count:
            return found[count - 1]
        time.sleep(0.05)
    raise RuntimeError(f"no {event} #{count} in {timeout}s; see {log}")


def _raw_copy_rate(dsn: str) -> float:
    """Rows/s of ``COPY (SELECT * FROM bench) TO STDOUT`` read as raw blocks."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = 0
        started = time.perf_counter()
        with conn.cursor().copy("COPY (SELECT * FROM bench) TO STDOUT") as copy:
            for block in copy:
                rows += bytes(block).count(b"\n")
        return rows / (time.perf_counter() - started)


def _check(bootstrap: str, topics: list[str], rows: int) -> str | None:
    """Why the numbers cannot be trusted, or None: every key on both topics, and once
    on the retention topic."""
    counter = TopicCounter(bootstrap, topics, rows)
    counter.start()
    counter.join(600)
    counter.stop.set()
    if len(counter.done_at) < len(topics):
        return f"not every row arrived: {counter.counts} of {rows}"
    if len(counter.keys) != rows:
        return f"{len(counter.keys)} distinct keys on the retention topic, not {rows}"
    repeated = sum(1 for n in counter.keys.values() if n > 1)
    if repeated:
        return f"{repeated} keys appear more than once on the retention topic"
    return None


def run(
    rows: int,
    workers: int,
    chunk_rows: int,
    base: Path,
    delivery: str = "exactly_once",
    profile: Path | None = None,
) -> dict[str, Any]:
    pg = start_postgres(base / "pg")
    kafka = start_kafka(base / "kafka")
    try:
        dsn = pg.dsn()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(TABLE)
            for first in range(1, rows + 1, 100_000):
                conn.execute(INSERT, (first, min(rows, first + 99_999)))
            conn.execute("ANALYZE bench")
        _warm_up(kafka.bootstrap_servers)
        raw = _raw_copy_rate(dsn)
        name = "snap"
        started = time.monotonic()
        daemon = DaemonProcess(
            base / name,
            kafka.bootstrap_servers,
            dsn,
            name,
            snapshot={"mode": "initial", "max_workers": workers, "chunk_rows": chunk_rows},
            delivery=delivery,
            profile=profile,
        )
        log = base / name / f"{name}.log"
        finished = _wait_for(log, "snapshot_finished", 1, 1800)
        wall = time.monotonic() - started
        topics = [f"{name}.public.bench", f"{name}.public.bench.latest"]
        error = _check(kafka.bootstrap_servers, topics, rows)
        if error:
            daemon.stop()
            return {"bench": "snapshot", "error": error}
        result: dict[str, Any] = {
            "bench": "snapshot",
            "delivery": delivery,
            "rows": rows,
            "workers": workers,
            "chunk_rows": chunk_rows,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "raw_copy_rows_per_s": round(raw),
            "initial_rows_per_s": finished["rows_per_s"],
            "initial_ratio_to_raw": round(finished["rows_per_s"] / raw, 3),
            "initial_seconds": finished["seconds"],
            "initial_wall_seconds_from_daemon_start": round(wall, 2),
            "initial_peak_rss_mb": round(daemon.peak_rss_mb(), 1),
        }
        _wait_for(log, "streaming_started", 1, 120)
        requested = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "cdc", "snapshot", name, "--config",
             str(base / name / "cdc.yaml"), "--connectors", str(base / name / "connectors")],
            check=True,
            capture_output=True,
        )  # fmt: skip
        incremental = _wait_for(log, "snapshot_finished", 2, 1800)
        elapsed = time.monotonic() - requested
        result["incremental_rows_per_s"] = round(incremental["rows"] / elapsed)
        result["incremental_chunks"] = incremental["chunks"]
        result["peak_rss_mb"] = round(daemon.peak_rss_mb(), 1)
        daemon.stop()
        return result
    finally:
        kafka.stop()
        pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="keep service data and logs in this folder")
    parser.add_argument(
        "--delivery", choices=["exactly_once", "at_least_once"], default="exactly_once"
    )
    parser.add_argument(
        "--profile", type=Path, help="write a py-spy profile of the daemon to this file"
    )
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(
            args.rows, args.workers, args.chunk_rows, args.keep, args.delivery, args.profile
        )
    else:
        with tempfile.TemporaryDirectory(prefix="cdc-bench-") as tmp:
            os.chmod(tmp, 0o755)
            result = run(
                args.rows, args.workers, args.chunk_rows, Path(tmp), args.delivery, args.profile
            )
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
