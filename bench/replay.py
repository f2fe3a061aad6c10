"""Replay benchmark: the benchmark table's log applied to a new database by ``cdc replay``,
as a ratio to a plain ``COPY`` of the same rows measured in the same run.

Prints one JSON line. Not a test: numbers, never assertions (but no number is printed
unless the replayed table equals the legacy one).

    .venv/bin/python -m bench.replay [--rows 200000] [--tx-rows 1000] [--keep DIR]

Steps, with PostgreSQL, Kafka and the replay on this machine:
1. the daemon streams ``--rows`` inserts (transactions of ``--tx-rows``) of the
   six-column benchmark table of ``bench/e2e.py`` into Kafka, then stops;
2. reference: ``COPY bench TO STDOUT`` from the legacy database piped into
   ``COPY ... FROM STDIN`` of an empty copy of the table in a target database;
3. ``cdc replay`` of the connector into another empty target database (a separate
   process, timed from its start to its exit: Kafka reads, decoding, batching, COPY into
   staging tables, set-based upserts, offsets);
4. both targets are compared with the legacy table (row count and an md5 of every row's
   text in key order); a difference prints an error instead of the figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench.e2e import TABLE, DaemonProcess, _insert, _wait_streaming
from cdc.testing.kafka import start_kafka
from cdc.testing.postgres import start_postgres

CHECKSUM = (
    "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY id), '')) FROM bench t"
)


def _checksum(dsn: str) -> tuple[int, str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'; SET DateStyle = ISO; SET extra_float_digits = 3")
        row = conn.execute(CHECKSUM).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def _copy(source_dsn: str, target_dsn: str) -> float:
    """Seconds for a plain COPY of the table from the legacy database into the target."""
    with psycopg.connect(target_dsn, autocommit=True) as target:
        target.execute(TABLE)
    started = time.monotonic()
    with (
        psycopg.connect(source_dsn, autocommit=True) as source,
        psycopg.connect(target_dsn) as target,
        source.cursor().copy("COPY bench TO STDOUT") as out,
        target.cursor().copy("COPY bench FROM STDIN") as into,
    ):
        for block in out:
            into.write(block)
    return time.monotonic() - started


def run(
    rows: int, tx_rows: int, base: Path, profile: Path | None = None, batch: int = 20_000
) -> dict[str, Any]:
    pg = start_postgres(base / "pg")
    kafka = start_kafka(base / "kafka")
    try:
        dsn = pg.dsn()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(TABLE)
            for name in ("copy_target", "replay_target"):
                conn.execute(f"CREATE DATABASE {name}")
        name = "rpl"
        daemon = DaemonProcess(base / name, kafka.bootstrap_servers, dsn, name)
        _wait_streaming(dsn, name)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for first in range(1, rows + 1, tx_rows):
                _insert(conn, first, min(tx_rows, rows - first + 1))
            row = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
            assert row is not None
            end = row[0]
        deadline = time.monotonic() + 1800
        while True:
            with psycopg.connect(dsn, autocommit=True) as conn:
                done = conn.execute(
                    "SELECT confirmed_flush_lsn >= %s FROM pg_replication_slots"
                    " WHERE slot_name = %s",
                    (end, name),
                ).fetchone()
            if done and done[0]:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon did not publish the rows in time")
            time.sleep(0.2)
        daemon.stop()

        copy_seconds = _copy(dsn, pg.dsn(dbname="copy_target"))

        workdir = base / name
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        profiler = (
            ["py-spy", "record", "--format", "speedscope", "--idle", "--threads",
             "-o", str(profile), "--"]
            if profile is not None
            else []
        )  # fmt: skip
        process = subprocess.Popen(
            [
                *profiler,
                sys.executable,
                "-m", "cdc", "replay", name,
                "--target-dsn", pg.dsn(dbname="replay_target"),
                "--config", str(workdir / "cdc.yaml"),
                "--connectors", str(workdir / "connectors"),
                "--log-level", "warning", "--batch", str(batch),
            ],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        peak_kb = 0
        while process.poll() is None:  # the replay's own high-water mark, while it runs
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
                marks = [int(line.split()[1]) for line in status.splitlines()
                         if line.startswith("VmHWM:")]  # fmt: skip
                peak_kb = max([peak_kb, *marks])
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        stdout, stderr = process.communicate()
        replay_seconds = time.monotonic() - started
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if result.returncode != 0:
            return {"bench": "replay", "error": result.stderr.strip()[-2000:]}
        legacy = _checksum(dsn)
        for target in ("copy_target", "replay_target"):
            got = _checksum(pg.dsn(dbname=target))
            if got != legacy:
                return {
                    "bench": "replay",
                    "error": f"{target} differs from the legacy table: {got} != {legacy}",
                }
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {
            "bench": "replay",
            "rows": rows,
            "tx_rows": tx_rows,
            "batch": batch,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "copy_rows_per_s": round(rows / copy_seconds),
            "replay_rows_per_s": round(rows / replay_seconds),
            "ratio_to_copy": round(copy_seconds / replay_seconds, 3),
            "replay_seconds": round(replay_seconds, 2),
            "replay_cpu_seconds": round(cpu, 2),
            "replay_peak_rss_mb": round(peak_kb / 1024, 1),
            "replay_output": result.stdout.strip(),
        }
    finally:
        kafka.stop()
        pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--tx-rows", type=int, default=1_000)
    parser.add_argument("--keep", type=Path, help="keep service data and logs in this folder")
    parser.add_argument("--batch", type=int, default=20_000, help="changes per target transaction")
    parser.add_argument(
        "--profile", type=Path, help="write a py-spy profile (speedscope) of the replay here"
    )
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(args.rows, args.tx_rows, args.keep, args.profile, args.batch)
    else:
        with tempfile.TemporaryDirectory(prefix="cdc-bench-") as tmp:
            os.chmod(tmp, 0o755)
            result = run(args.rows, args.tx_rows, Path(tmp), args.profile, args.batch)
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
