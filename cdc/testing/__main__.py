"""``python -m cdc.testing up``: run a throwaway PostgreSQL and Kafka until Ctrl-C.

For humans trying the daemon or debugging a test by hand: it prints the DSN and the
bootstrap servers, waits, and stops both servers on Ctrl-C or SIGTERM. No other commands.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from cdc.testing import ServiceError
from cdc.testing.kafka import start_kafka
from cdc.testing.postgres import start_postgres

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run ``up``; return the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m cdc.testing", description="Throwaway PostgreSQL and Kafka servers."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start both servers and wait for Ctrl-C")
    up.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="folder for their data, kept afterwards (default: a temporary one, removed)",
    )
    args = parser.parse_args(argv)
    return _up(args.dir)


def _up(directory: Path | None) -> int:
    base_dir = directory if directory is not None else Path(tempfile.mkdtemp(prefix="cdc-"))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        with (
            start_postgres(base_dir / "postgres") as postgres,
            start_kafka(base_dir / "kafka") as kafka,
        ):
            print(f"PostgreSQL: {postgres.dsn()}  (log: {postgres.log_path})")
            print(f"Kafka:      {kafka.bootstrap_servers}  (log: {kafka.log_path})")
            print("Press Ctrl-C to stop both.", flush=True)
            stop.wait()
            print("Stopping.", flush=True)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if directory is None:
            shutil.rmtree(base_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
