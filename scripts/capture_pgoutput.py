"""Capture golden pgoutput bytes from a throwaway PostgreSQL 15 into tests/fixtures/pgoutput/.

Starts its own server (initdb + postgres as the ``postgres`` OS user, on a free port and a
temp dir), runs a fixed workload that makes the server send every kind of message we can
provoke (row changes with keys, REPLICA IDENTITY FULL, an enum type, an unchanged TOASTed
value, truncate, logical messages, a replication origin, streamed and two-phase
transactions), reads the slot over the streaming replication protocol with psycopg and
saves each XLogData payload as ``NNN-<kind>.bin``. ``expected.json`` lists, per file, the
fields our decoder produced: REVIEW ITS DIFF before committing it, since it becomes the
truth the unit tests check against. Stops the server and deletes the temp dir at the end.

    sudo .venv/bin/python scripts/capture_pgoutput.py [--out tests/fixtures/pgoutput]

Needs root (for runuser) and initdb/postgres on PATH.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cdc.protocol.messages import (  # noqa: E402
    Insert,
    LogicalMessage,
    PgoutputMessage,
    StreamStart,
    StreamStop,
    XLogData,
)
from cdc.protocol.pgoutput import PgoutputDecoder  # noqa: E402
from cdc.protocol.replication import (  # noqa: E402
    encode_standby_status,
    parse_copy_data,
    unix_us_to_pg_us,
)
from tests.unit.pgoutput_encoder import message_to_json  # noqa: E402

PROTOCOL_VERSION = 3  # 3, not 2: two-phase messages (b, P, K, r, p) need it
START_REPLICATION = (
    "START_REPLICATION SLOT s LOGICAL 0/0 ("
    f"proto_version '{PROTOCOL_VERSION}', publication_names 'p', messages 'true', "
    "streaming 'on', two_phase 'true')"
)
DONE_PREFIX = "capture-done"  # a non-transactional message marking the end of the workload
INSERTS_KEPT_PER_STREAM_BLOCK = 1  # streamed transactions are big; keep the fixtures small
IDLE_SECONDS = 1.0
TOAST_VALUE = "".join(f"{i:05d}-" for i in range(1700))  # ~10 kB, stored out of line

SETUP = [
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
    """CREATE TABLE items (
        id bigint PRIMARY KEY,
        name text NOT NULL,
        body text,
        price numeric(12, 2),
        updated_at timestamptz
    )""",
    # EXTERNAL: no compression, so the 10 kB value is TOASTed out of line, which is what
    # makes pgoutput send it as 'u' (unchanged TOAST) in an UPDATE that does not touch it.
    "ALTER TABLE items ALTER COLUMN body SET STORAGE EXTERNAL",
    "CREATE TABLE events (id int, kind text, payload jsonb, raw bytea)",
    "ALTER TABLE events REPLICA IDENTITY FULL",
    "CREATE TABLE moods (id serial PRIMARY KEY, feeling mood NOT NULL)",
    "CREATE PUBLICATION p FOR TABLE items, events, moods",
    "SELECT pg_create_logical_replication_slot('s', 'pgoutput', false, true)",
    "SELECT pg_replication_origin_create('upstream')",
]

BIG_ROWS = "SELECT g, 'bulk ' || g || repeat('.', 80) FROM generate_series({start}, {stop}) g"

WORKLOAD: list[list[str]] = [
    # Each inner list is one transaction.
    [
        "INSERT INTO items VALUES (1, 'chair', %(toast)s, 12.50, '2024-01-02 03:04:05.678+00')",
        "INSERT INTO items (id, name) VALUES (2, 'table')",
    ],
    ["UPDATE items SET price = 13.00 WHERE id = 1"],  # body unchanged: 'u'
    ["UPDATE items SET id = 20, name = 'desk' WHERE id = 2"],  # key change: old 'K'
    ["INSERT INTO events VALUES (1, 'click', '{\"x\": 1, \"tags\": [\"a\"]}', '\\x00ff')"],
    ["UPDATE events SET kind = 'tap' WHERE id = 1"],  # FULL: old 'O'
    ["DELETE FROM events WHERE id = 1"],  # FULL: old 'O'
    ["DELETE FROM items WHERE id = 20"],  # DEFAULT: old 'K'
    ["INSERT INTO moods (feeling) VALUES ('happy'), ('sad')"],  # Type 'Y' first
    [
        "SELECT pg_logical_emit_message(true, 'cdc', 'transactional hello')",
        "INSERT INTO moods (feeling) VALUES ('ok')",
    ],
    ["SELECT pg_logical_emit_message(false, 'cdc', '\\x00010203'::bytea)"],
    ["TRUNCATE items, events"],
    ["TRUNCATE moods RESTART IDENTITY CASCADE"],
    # A transaction that arrived through replication origin 'upstream': Origin 'O'.
    [
        "SELECT pg_replication_origin_session_setup('upstream')",
        "SELECT pg_replication_origin_xact_setup('0/ABCDEF', '2024-01-01 00:00:00+00')",
        "INSERT INTO items (id, name) VALUES (3, 'from upstream')",
    ],
    ["SELECT pg_replication_origin_session_reset()"],
    # Bigger than logical_decoding_work_mem: streamed (S ... E, then c / A).
    [f"INSERT INTO items (id, name) {BIG_ROWS.format(start=1000, stop=1500)}"],
    [
        "INSERT INTO items (id, name) VALUES (4, 'kept')",
        "SAVEPOINT sp",
        f"INSERT INTO items (id, name) {BIG_ROWS.format(start=4000, stop=4500)}",
        "ROLLBACK TO SAVEPOINT sp",  # streamed subtransaction abort: A with subxid
        "INSERT INTO items (id, name) VALUES (5, 'kept too')",
    ],
    [
        f"INSERT INTO items (id, name) {BIG_ROWS.format(start=7000, stop=7500)}",
        "ROLLBACK",  # streamed top-level abort: A
    ],
    # Two-phase commit (protocol 3, two_phase 'true'): b, P, then K or r.
    [
        "INSERT INTO items (id, name) VALUES (6, 'prepared')",
        "PREPARE TRANSACTION 'tx-commit'",
    ],
    ["COMMIT PREPARED 'tx-commit'"],
    [
        "INSERT INTO items (id, name) VALUES (7, 'rolled back')",
        "PREPARE TRANSACTION 'tx-rollback'",
    ],
    ["ROLLBACK PREPARED 'tx-rollback'"],
    # A streamed prepared transaction: S ... E, then p (Stream Prepare), then K.
    [
        f"INSERT INTO items (id, name) {BIG_ROWS.format(start=10000, stop=10500)}",
        "PREPARE TRANSACTION 'tx-big'",
    ],
    ["COMMIT PREPARED 'tx-big'"],
    [f"SELECT pg_logical_emit_message(false, '{DONE_PREFIX}', '')"],
]

KIND_NAMES = {
    "Begin": "begin",
    "Commit": "commit",
    "Origin": "origin",
    "Relation": "relation",
    "Type": "type",
    "Insert": "insert",
    "Update": "update",
    "Delete": "delete",
    "Truncate": "truncate",
    "LogicalMessage": "message",
    "StreamStart": "stream-start",
    "StreamStop": "stream-stop",
    "StreamCommit": "stream-commit",
    "StreamAbort": "stream-abort",
    "BeginPrepare": "begin-prepare",
    "Prepare": "prepare",
    "CommitPrepared": "commit-prepared",
    "RollbackPrepared": "rollback-prepared",
    "StreamPrepare": "stream-prepare",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def as_postgres(*argv: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv]


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Yield the DSN of a fresh PostgreSQL with wal_level=logical; remove it afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="cdc-capture-"))
    shutil.chown(tmp, "postgres", "postgres")
    data = tmp / "data"
    port = free_port()
    server: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            as_postgres("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"),
            check=True,
            capture_output=True,
        )
        log = (tmp / "postgres.log").open("wb")
        server = subprocess.Popen(
            as_postgres(
                "postgres", "-D", str(data), "-p", str(port),
                "-c", "wal_level=logical",
                "-c", "listen_addresses=127.0.0.1",
                "-c", f"unix_socket_directories={tmp}",
                "-c", "max_prepared_transactions=10",
                # The minimum, so a few thousand rows make a streamed transaction.
                "-c", "logical_decoding_work_mem=64kB",
                "-c", "fsync=off",
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=5"
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(dsn).close()
                break
            except psycopg.OperationalError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"PostgreSQL did not start:\n{(tmp / 'postgres.log').read_text()}"
                    ) from None
                time.sleep(0.2)
        yield dsn
    finally:
        if server is not None:
            server.terminate()  # SIGTERM: smart shutdown
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def run_workload(dsn: str) -> str:
    """Run SETUP, then WORKLOAD with explicit BEGIN/COMMIT (PREPARE and ROLLBACK end some)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in SETUP:
            conn.execute(statement)
        for transaction in WORKLOAD:
            if len(transaction) > 1:
                conn.execute("BEGIN")
            for statement in transaction:
                conn.execute(statement, {"toast": TOAST_VALUE} if "%(" in statement else None)
            if len(transaction) > 1 and not transaction[-1].startswith(("PREPARE", "ROLLBACK")):
                conn.execute("COMMIT")
        version: str = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        return version


def read_slot(dsn: str) -> tuple[list[bytes], bytes, bytes]:
    """Read CopyData frames until the done marker; return payloads, one 'w' and one 'k'."""
    decoder = PgoutputDecoder(PROTOCOL_VERSION)
    payloads: list[bytes] = []
    xlog_frame = keepalive_frame = b""
    # Not "with": leaving it would try to COMMIT in the middle of COPY BOTH.
    conn = psycopg.connect(dsn, replication="database", autocommit=True)
    try:
        conn.execute(START_REPLICATION)
        pgconn = conn.pgconn
        done = False
        idle_since = time.monotonic()
        while not (done and keepalive_frame) and time.monotonic() - idle_since < IDLE_SECONDS * 5:
            nbytes, view = pgconn.get_copy_data(1)
            if nbytes == 0:
                readable, _, _ = select.select([pgconn.socket], [], [], IDLE_SECONDS)
                if readable:
                    pgconn.consume_input()
                elif done:
                    # Ask for a keepalive if the server has not sent one yet.
                    now = unix_us_to_pg_us(time.time_ns() // 1000)
                    pgconn.put_copy_data(encode_standby_status(0, 0, 0, now, reply_requested=True))
                    pgconn.flush()
                continue
            if nbytes < 0:
                break
            idle_since = time.monotonic()
            frame = bytes(view)
            if frame[:1] == b"k":
                keepalive_frame = keepalive_frame or frame
                continue
            message = parse_copy_data(frame)
            assert isinstance(message, XLogData)
            if not xlog_frame and len(frame) < 200:
                xlog_frame = frame
            payload = message.data
            assert isinstance(payload, bytes)
            decoded = decoder.decode(payload)
            payloads.append(payload)
            if isinstance(decoded, LogicalMessage) and decoded.prefix == DONE_PREFIX:
                done = True
    finally:
        conn.close()
    return payloads, xlog_frame, keepalive_frame


def keep(payloads: list[bytes]) -> list[tuple[bytes, PgoutputMessage]]:
    """Decode in order; drop the bulk of the inserts inside each streamed block."""
    decoder = PgoutputDecoder(PROTOCOL_VERSION)
    kept: list[tuple[bytes, PgoutputMessage]] = []
    inserts_in_block = 0
    for payload in payloads:
        message = decoder.decode(payload)
        if isinstance(message, StreamStart | StreamStop):
            inserts_in_block = 0
        if isinstance(message, Insert) and decoder.in_stream:
            inserts_in_block += 1
            if inserts_in_block > INSERTS_KEPT_PER_STREAM_BLOCK:
                continue
        kept.append((payload, message))
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "pgoutput")
    args = parser.parse_args()
    out: Path = args.out

    with throwaway_postgres() as dsn:
        server_version = run_workload(dsn)
        payloads, xlog_frame, keepalive_frame = read_slot(dsn)

    kept = keep(payloads)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.bin"):
        old.unlink()
    messages: list[dict[str, Any]] = []
    for number, (payload, message) in enumerate(kept, start=1):
        name = f"{number:03d}-{KIND_NAMES[type(message).__name__]}.bin"
        (out / name).write_bytes(payload)
        messages.append({"file": name, "expected": message_to_json(message)})

    xlog = parse_copy_data(xlog_frame)
    keepalive = parse_copy_data(keepalive_frame)
    (out / "frame-xlogdata.bin").write_bytes(xlog_frame)
    (out / "frame-keepalive.bin").write_bytes(keepalive_frame)
    frames = {
        "xlogdata": {
            "wal_start": getattr(xlog, "wal_start", None),
            "wal_end": xlog.wal_end,
            "send_time": xlog.send_time,
            "data_hex": getattr(xlog, "data", b"").hex(),
        },
        "keepalive": {
            "wal_end": keepalive.wal_end,
            "send_time": keepalive.send_time,
            "reply_requested": getattr(keepalive, "reply_requested", None),
        },
    }
    index = {
        "comment": "Captured by scripts/capture_pgoutput.py; expected values reviewed by hand.",
        "server_version": server_version,
        "protocol_version": PROTOCOL_VERSION,
        "start_replication": START_REPLICATION,
        "frames": frames,
        "messages": messages,
    }
    (out / "expected.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n")
    total = sum(path.stat().st_size for path in out.iterdir())
    print(f"{len(messages)} messages ({len(payloads)} received), {total} bytes in {out}")


if __name__ == "__main__":
    main()
