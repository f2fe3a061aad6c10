"""Fault-injection soak: a live workload, the daemon SIGKILLed again and again, a Kafka
broker crash and a PostgreSQL crash, then every event checked against the table.

Not a test: it prints one JSON line per delivery mode and exits 1 when a mode's guarantee
did not hold (a pytest wrapper, tests/integration/test_soak.py, runs a short version).

    .venv/bin/python -m bench.soak [--kills 50] [--mode exactly_once|at_least_once|both]
                                   [--keep DIR] [--seed N] [--rate 50] [--duration 0]

On a throwaway PostgreSQL and single-node Kafka, for each mode, on a fresh database:

- a workload thread writes transactions of 1 to 20 statements into ``soak`` (inserts with
  ``v = 1``, updates ``v = v + 1``, primary-key changes that also set ``moved_from`` and
  increment ``v``, deletes; a key is never reused), and once each: ``TRUNCATE soak_aux``,
  a 200,000-row transaction and ``ALTER TABLE soak ADD COLUMN extra text``. It survives
  PostgreSQL restarts: the table, not the workload's memory, is the truth at the end;
- the daemon (``cdc run``, a child process) is SIGKILLed ``--kills`` times, each 0.3 to
  3 s after it logged ``streaming_started``, and started again; once the broker is killed
  and restarted, once PostgreSQL. The next kill waits until the daemon works again: a new
  ``streaming_started``, or its slot past the WAL written since the restart (a broker
  outage may be ridden out without restarting the connector);
- then the workload stops, the slot catches up with the WAL, the daemon gets SIGTERM
  (exit 0 expected), and both topics are read to their end with a ``read_committed``
  consumer.

Checks, per key, in offset order on the retention topic: an event's identity is
``(key, op, v)`` (``before.v`` for a delete); a repeated identity is a duplicate; a ``v``
below the highest seen is out of order; a ``v`` skipping values is a loss (a key's first
event must follow its insert, ``v = 1``, or its key change: the old key's delete
``before.v + 1``). Each row of the table must be its key's last event, each key not in
the table must end with a delete, there must be exactly one truncate event, and the
compacted topic's latest value per key must equal the table.

Pass: ``exactly_once``: nothing lost, duplicated or out of order; ``at_least_once``:
nothing lost or out of order (duplicates are reported); for both, the compacted topic
equals the table, the slot caught up with the WAL, the daemon never exited on its own
and it exited 0 on SIGTERM.
Details of every problem found go to standard error and to ``problems.json`` beside the
daemon's log (kept with ``--keep``).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar, cast

import orjson
import psycopg
import yaml

from cdc.positions import COMPLETE
from cdc.testing import ServiceError
from cdc.testing.kafka import KafkaServer, read_committed, start_kafka
from cdc.testing.postgres import PostgresServer, start_postgres

Mode = Literal["exactly_once", "at_least_once"]
MODES: tuple[Mode, ...] = ("exactly_once", "at_least_once")

SCHEMA = """
CREATE TABLE soak (id bigint PRIMARY KEY, v bigint NOT NULL, moved_from bigint, pad text);
ALTER TABLE soak REPLICA IDENTITY FULL;
CREATE TABLE soak_aux (id bigint PRIMARY KEY, note text);
"""

# Workload keys start here and only grow: a key is never used twice.
FIRST_ID = 1_000_000_000
BIG_TX_ROWS = 200_000
AUX_ROWS = 5
MAX_TX_STATEMENTS = 20
# Statement mix: the rest of the rolls are deletes.
INSERT_SHARE, UPDATE_SHARE, MOVE_SHARE = 0.35, 0.35, 0.10
# Below this many rows every statement is an insert, so there is something to change.
MIN_ROWS = 20

KILL_DELAY_S = (0.3, 3.0)  # after streaming_started, before SIGKILL
BROKER_DOWN_S = 3.0  # between the broker's SIGKILL and its restart
STARTED_TIMEOUT_S = 180.0  # from a daemon start to its streaming_started
RECOVER_TIMEOUT_S = 300.0  # from a broker or PostgreSQL restart to the daemon working
SPECIALS_TIMEOUT_S = 300.0  # the workload's one-off statements must be done by then
CATCH_UP_TIMEOUT_S = 900.0  # the slot reaching the WAL end once the workload stopped
READ_IDLE_TIMEOUT_S = 120.0  # reading a topic: longest wait without any progress
POLL_S = 0.05  # polling interval of every wait
RECONNECT_POLL_S = 0.2  # the workload retries a refused connection this often
MAX_EXAMPLES = 20  # problems printed to standard error per kind
MAX_STORED = 1000  # problems written to problems.json per kind (all are counted)


class SoakError(RuntimeError):
    """The soak itself could not go on (the daemon never streamed, a wait timed out)."""


T = TypeVar("T")


def _retry_pg(call: Callable[[], T], timeout: float = RECOVER_TIMEOUT_S) -> T:
    """``call()``, retried while PostgreSQL refuses connections (it may be restarting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(RECONNECT_POLL_S)


def _fetch_int(dsn: str, sql: str, params: Sequence[Any] = ()) -> int | None:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(sql, params).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def current_wal_lsn(dsn: str) -> int:
    lsn = _retry_pg(lambda: _fetch_int(dsn, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
    assert lsn is not None
    return lsn


def slot_confirmed_lsn(dsn: str, slot: str) -> int | None:
    """The slot's confirmed_flush_lsn as a number; None if PostgreSQL does not answer."""
    try:
        return _fetch_int(
            dsn,
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots"
            " WHERE slot_name = %s",
            (slot,),
        )
    except psycopg.OperationalError:
        return None


# --- the workload ---------------------------------------------------------------------


class IdSet:
    """The ids that exist in ``soak``: random choice and removal in O(1)."""

    __slots__ = ("_ids", "_index")

    def __init__(self) -> None:
        self._ids: list[int] = []
        self._index: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, key: int) -> None:
        self._index[key] = len(self._ids)
        self._ids.append(key)

    def remove(self, key: int) -> None:
        position = self._index.pop(key)
        last = self._ids.pop()
        if last != key:
            self._ids[position] = last
            self._index[last] = position

    def choice(self, rng: random.Random) -> int:
        return self._ids[rng.randrange(len(self._ids))]

    def reset(self, keys: Sequence[int]) -> None:
        self._ids = list(keys)
        self._index = {key: i for i, key in enumerate(self._ids)}


@dataclass
class Specials:
    """When (seconds after the workload started) each one-off statement is due."""

    truncate_at: float
    big_insert_at: float
    alter_at: float


class Workload(threading.Thread):
    """Writes into ``soak`` until ``finish()``; reconnects whenever PostgreSQL goes away.

    What exists is tracked in memory to pick rows to change, and read back from the table
    after every reconnect (a COMMIT cut off by a crash may or may not have happened).
    """

    def __init__(self, dsn: str, rng: random.Random, *, rate: float, specials: Specials) -> None:
        super().__init__(name="soak-workload", daemon=True)
        self.dsn = dsn
        self.rng = rng
        self.rate = rate
        self.specials = specials
        self.stopping = threading.Event()
        self.specials_done = threading.Event()
        self.error: BaseException | None = None
        self.ids = IdSet()
        self.next_id = FIRST_ID
        self.transactions = 0  # committed as far as we know (a cut-off COMMIT is not)
        self.connects = 0
        self.altered = False
        self.aux_filled = False
        self.truncate_sent = False
        self.truncated = False
        self.big_range: tuple[int, int] | None = None
        self.big_done = False
        self._conn: psycopg.Connection[Any] | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread by check()
            self.error = exc
        finally:
            if self._conn is not None:
                self._conn.close()

    def check(self) -> None:
        """Raise the workload's error in the calling thread, if it died of one."""
        if self.error is not None:
            raise SoakError(f"workload failed: {self.error!r}") from self.error

    def finish(self) -> None:
        """Let the one-off statements happen, then stop after the current transaction."""
        deadline = time.monotonic() + SPECIALS_TIMEOUT_S
        while not self.specials_done.wait(POLL_S):
            self.check()
            if time.monotonic() > deadline:
                raise SoakError(f"workload one-offs not done in {SPECIALS_TIMEOUT_S:.0f}s")
        self.stopping.set()
        self.join(RECOVER_TIMEOUT_S)
        self.check()
        if self.is_alive():
            raise SoakError("workload did not stop")

    # -- internals --

    def _run(self) -> None:
        started = time.monotonic()
        interval = 1.0 / self.rate
        due = started
        while not self.stopping.is_set():
            conn = self._connection()
            if conn is None:
                return
            try:
                self._one_offs(conn, time.monotonic() - started)
                self._transaction(conn)
            except psycopg.OperationalError:
                self._conn = None
                conn.close()
                continue
            due += interval
            delay = due - time.monotonic()
            if delay > 0:
                self.stopping.wait(delay)
            else:
                due = time.monotonic()  # behind: no burst to catch up

    def _connection(self) -> psycopg.Connection[Any] | None:
        """The open connection, or a new one (then the ids are read back from the table);
        None when told to stop while PostgreSQL is away."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        while not self.stopping.is_set():
            try:
                conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
            except psycopg.OperationalError:
                self.stopping.wait(RECONNECT_POLL_S)
                continue
            try:
                rows = conn.execute("SELECT id FROM soak").fetchall()
            except psycopg.OperationalError:
                conn.close()
                continue
            self.ids.reset([int(row[0]) for row in rows])
            self.connects += 1
            self._conn = conn
            return conn
        return None

    def _new_id(self) -> int:
        key = self.next_id
        self.next_id += 1
        return key

    def _pad(self) -> str:
        return uuid.uuid4().hex * self.rng.randint(0, 4)

    def _transaction(self, conn: psycopg.Connection[Any]) -> None:
        rng = self.rng
        with conn.transaction():
            for _ in range(rng.randint(1, MAX_TX_STATEMENTS)):
                roll = rng.random()
                if roll < INSERT_SHARE or len(self.ids) < MIN_ROWS:
                    key = self._new_id()
                    if self.altered:
                        conn.execute(
                            "INSERT INTO soak (id, v, pad, extra) VALUES (%s, 1, %s, %s)",
                            (key, self._pad(), f"x{key}"),
                        )
                    else:
                        conn.execute(
                            "INSERT INTO soak (id, v, pad) VALUES (%s, 1, %s)", (key, self._pad())
                        )
                    self.ids.add(key)
                elif roll < INSERT_SHARE + UPDATE_SHARE:
                    key = self.ids.choice(rng)
                    self._expect_one(
                        conn.execute("UPDATE soak SET v = v + 1 WHERE id = %s", (key,))
                    )
                elif roll < INSERT_SHARE + UPDATE_SHARE + MOVE_SHARE:
                    key, new = self.ids.choice(rng), self._new_id()
                    self._expect_one(
                        conn.execute(
                            "UPDATE soak SET id = %s, moved_from = id, v = v + 1 WHERE id = %s",
                            (new, key),
                        )
                    )
                    self.ids.remove(key)
                    self.ids.add(new)
                else:
                    key = self.ids.choice(rng)
                    self._expect_one(conn.execute("DELETE FROM soak WHERE id = %s", (key,)))
                    self.ids.remove(key)
        self.transactions += 1

    @staticmethod
    def _expect_one(cursor: psycopg.Cursor[Any]) -> None:
        if cursor.rowcount != 1:
            raise SoakError(f"workload out of step with the table: {cursor.rowcount} rows")

    def _one_offs(self, conn: psycopg.Connection[Any], elapsed: float) -> None:
        """Each one-off statement once, when due; safe to call again after a crash cut one
        off (its outcome is read from the table)."""
        specials = self.specials
        if not self.truncated and elapsed >= specials.truncate_at:
            self._truncate_aux(conn)
        if not self.big_done and elapsed >= specials.big_insert_at:
            self._big_insert(conn)
        if not self.altered and elapsed >= specials.alter_at:
            with conn.transaction():
                conn.execute("ALTER TABLE soak ADD COLUMN IF NOT EXISTS extra text")
            self.altered = True
        if self.truncated and self.big_done and self.altered:
            self.specials_done.set()

    def _truncate_aux(self, conn: psycopg.Connection[Any]) -> None:
        if not self.aux_filled:
            with conn.transaction():
                for key in range(1, AUX_ROWS + 1):
                    conn.execute(
                        "INSERT INTO soak_aux VALUES (%s, %s) ON CONFLICT DO NOTHING",
                        (key, f"aux {key}"),
                    )
            self.aux_filled = True
        if self.truncate_sent:  # a TRUNCATE was cut off: did it commit?
            row = conn.execute("SELECT count(*) FROM soak_aux").fetchone()
            if row is not None and row[0] == 0:
                self.truncated = True
                return
        self.truncate_sent = True
        with conn.transaction():
            conn.execute("TRUNCATE soak_aux")
        self.truncated = True

    def _big_insert(self, conn: psycopg.Connection[Any]) -> None:
        if self.big_range is not None:  # the last try was cut off: did it commit?
            first, last = self.big_range
            row = conn.execute(
                "SELECT count(*) FROM soak WHERE id BETWEEN %s AND %s", (first, last)
            ).fetchone()
            if row is not None and row[0] == BIG_TX_ROWS:
                self.big_done = True  # its ids were read back at the reconnect
                return
        first = self.next_id
        self.next_id += BIG_TX_ROWS
        last = first + BIG_TX_ROWS - 1
        self.big_range = (first, last)
        with conn.transaction():
            conn.execute(
                "INSERT INTO soak (id, v, pad)"
                " SELECT g, 1, md5(g::text) FROM generate_series(%s::bigint, %s::bigint) g",
                (first, last),
            )
        for key in range(first, last + 1):
            self.ids.add(key)
        self.big_done = True


# --- the daemon -----------------------------------------------------------------------


def write_config(directory: Path, bootstrap_servers: str, connector: dict[str, Any]) -> list[str]:
    """config/cdc.yaml and connectors/<name>.yaml; returns the daemon's command line."""
    config_dir, connectors_dir = directory / "config", directory / "connectors"
    config_dir.mkdir(parents=True, exist_ok=True)
    connectors_dir.mkdir(parents=True, exist_ok=True)
    daemon = {
        "kafka": {"bootstrap_servers": bootstrap_servers},
        "topics": {"partitions": 3, "replication_factor": 1},
        "log": {"level": "info", "format": "json"},
        "metrics": {"port": None},
    }
    (config_dir / "cdc.yaml").write_text(yaml.safe_dump(daemon))
    (connectors_dir / f"{connector['name']}.yaml").write_text(yaml.safe_dump(connector))
    return [
        sys.executable, "-m", "cdc", "run",
        "--config", str(config_dir / "cdc.yaml"),
        "--connectors", str(connectors_dir),
    ]  # fmt: skip


@dataclass
class DaemonProcess:
    """``cdc run`` as a child process; every start appends to one log file."""

    command: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    offset: int = 0  # where the current process's lines begin in the log
    unexpected_exits: list[int] = field(default_factory=list)

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def start(self) -> None:
        self.offset = self.log_size()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def lines(self, since: int = 0) -> list[dict[str, Any]]:
        """The JSON log lines written at or after byte ``since`` (complete lines only)."""
        with self.log_path.open("rb") as log:
            log.seek(since)
            data = log.read()
        found = []
        for raw in data.split(b"\n")[:-1]:
            if raw.startswith(b"{"):
                try:
                    found.append(orjson.loads(raw))
                except orjson.JSONDecodeError:
                    continue
        return found

    def tail(self, since: int | None = None, lines: int = 40) -> str:
        data = self.log_path.read_bytes()[self.offset if since is None else since :]
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raise if the daemon exited by itself; it is restarted first, so a soak that
        keeps going still counts it (``unexpected_exits``)."""
        assert self.process is not None
        code = self.process.poll()
        if code is not None:
            self.unexpected_exits.append(code)
            raise SoakError(f"daemon exited by itself with code {code}:\n{self.tail()}")

    def wait_started(self, since: int | None = None) -> None:
        """Until this process logs ``streaming_started`` (after byte ``since``)."""
        start = self.offset if since is None else since
        deadline = time.monotonic() + STARTED_TIMEOUT_S
        while not any(line.get("event") == "streaming_started" for line in self.lines(start)):
            self.check_alive()
            if time.monotonic() > deadline:
                raise SoakError(
                    f"no streaming_started within {STARTED_TIMEOUT_S:.0f}s:\n{self.tail(start)}"
                )
            time.sleep(POLL_S)

    def kill(self) -> None:
        assert self.process is not None
        self.check_alive()
        self.process.kill()
        self.process.wait(30)

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(120)

    def stop_quietly(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)


# --- reading the topics ---------------------------------------------------------------


class Event(NamedTuple):
    """What the checker needs of one retention record."""

    partition: int
    offset: int
    key: int | None
    op: str
    v: int | None  # after.v, or before.v for a delete
    moved_from: int | None
    lsn: int | None
    tx_id: int | None


def read_topic(
    bootstrap_servers: str, topic: str, decode: Callable[[int, int, Any, Any], T]
) -> list[T]:
    """Every record of ``topic`` a ``read_committed`` consumer sees, each partition from
    offset 0 to its end; ``decode(partition, offset, key, value)`` (JSON decoded, None
    for a missing key or a tombstone) keeps what is needed of each."""

    def decoded(partition: int, offset: int, key: bytes | None, value: bytes | None) -> T:
        return decode(
            partition,
            offset,
            None if key is None else orjson.loads(key),
            None if value is None else orjson.loads(value),
        )

    try:
        return read_committed(bootstrap_servers, topic, decoded, idle_timeout=READ_IDLE_TIMEOUT_S)
    except ServiceError as exc:
        raise SoakError(str(exc)) from exc


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def decode_event(partition: int, offset: int, key: Any, value: Any) -> Event:
    if value is None:  # a tombstone: the retention topic should have none
        return Event(partition, offset, _key_id(key), "tombstone", None, None, None, None)
    op = str(value["op"])
    row = value["before"] if op == "d" else value["after"]
    source = value.get("source") or {}
    return Event(
        partition,
        offset,
        _key_id(key),
        op,
        None if row is None else _int_or_none(row.get("v")),
        None if row is None else _int_or_none(row.get("moved_from")),
        _int_or_none(source.get("lsn")),
        _int_or_none(source.get("txId")),
    )


def _key_id(key: Any) -> int | None:
    return None if key is None else int(key["id"])


def decode_latest(_partition: int, _offset: int, key: Any, value: Any) -> tuple[int, int | None]:
    """(id, v) of a compacted record; v None for a tombstone."""
    return int(key["id"]), None if value is None else int(value["v"])


# --- the checker ----------------------------------------------------------------------


@dataclass
class Verdict:
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    truncate_events: int = 0
    compacted_equal: bool = False
    compacted_keys: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # problems found, by kind
    problems: list[dict[str, Any]] = field(default_factory=list)  # the first of each kind
    # Every event of the first keys with a problem other than a duplicate:
    # [partition, offset, op, v, source.lsn, source.txId] each.
    histories: dict[int, list[list[Any]]] = field(default_factory=dict)

    def problem(self, kind: str, **details: Any) -> None:
        count = self.counts[kind] = self.counts.get(kind, 0) + 1
        if count <= MAX_STORED:
            self.problems.append({"kind": kind, **details})


def _brief(event: Event) -> list[Any]:
    return [event.partition, event.offset, event.op, event.v, event.lsn, event.tx_id]


def check(
    events: list[Event],
    aux_events: list[Event],
    latest: list[tuple[int, int | None]],
    table: dict[int, int],
) -> Verdict:
    """Compare what the topics hold with the table; see the module docstring."""
    verdict = Verdict()
    by_key: dict[int, list[Event]] = defaultdict(list)
    for event in sorted(events, key=lambda e: (e.partition, e.offset)):
        if event.op == "t":
            verdict.truncate_events += 1
            verdict.problem("truncate_on_soak", event=_brief(event))
        elif event.key is None or event.v is None or event.op not in {"c", "u", "d", "r"}:
            verdict.lost += 1
            verdict.problem("malformed", event=_brief(event), key=event.key)
        else:
            by_key[event.key].append(event)
    verdict.truncate_events += sum(1 for event in aux_events if event.op == "t")
    if verdict.truncate_events == 0:
        verdict.lost += 1
        verdict.problem("truncate_missing")
    elif verdict.truncate_events > 1:
        verdict.duplicated += verdict.truncate_events - 1
        verdict.problem("truncate_repeated", count=verdict.truncate_events)

    # The value a key had when it was deleted (a key change deletes the old key).
    deleted_at: dict[int, int] = {}
    for key, key_events in by_key.items():
        for event in key_events:
            if event.op == "d" and event.v is not None:
                deleted_at.setdefault(key, event.v)

    for key, key_events in by_key.items():
        _check_key(verdict, key, key_events, deleted_at)

    for key, v in table.items():
        key_events = by_key.get(key, [])
        last = key_events[-1] if key_events else None
        if last is None:
            verdict.lost += v
            verdict.problem("row_without_events", key=key, table_v=v)
        elif last.op == "d" or last.v is None or last.v > v:
            verdict.lost += 1
            verdict.problem("row_not_last_event", key=key, table_v=v, last=_brief(last))
        elif last.v < v:
            verdict.lost += v - last.v
            verdict.problem("row_newer_than_events", key=key, table_v=v, last=_brief(last))
    for key, key_events in by_key.items():
        if key not in table and key_events[-1].op != "d":
            verdict.lost += 1
            verdict.problem("delete_missing", key=key, last=_brief(key_events[-1]))

    state: dict[int, int] = {}
    for key, latest_v in latest:
        if latest_v is None:
            state.pop(key, None)
        else:
            state[key] = latest_v
    verdict.compacted_keys = len(state)
    verdict.compacted_equal = state == table
    if not verdict.compacted_equal:
        missing = sorted(set(table) - set(state))
        extra = sorted(set(state) - set(table))
        differ = sorted(k for k in set(table) & set(state) if table[k] != state[k])
        verdict.problem(
            "compacted_differs",
            missing=len(missing),
            extra=len(extra),
            wrong_v=len(differ),
            examples={
                "missing": missing[:MAX_EXAMPLES],
                "extra": extra[:MAX_EXAMPLES],
                "wrong_v": [[k, table[k], state[k]] for k in differ[:MAX_EXAMPLES]],
            },
        )
    for problem in verdict.problems:
        problem_key: int | None = problem.get("key")
        if problem_key is None or problem["kind"] == "duplicate":
            continue
        if len(verdict.histories) >= MAX_EXAMPLES:
            break
        for related in (problem_key, problem.get("moved_from")):
            if related is not None and related not in verdict.histories:
                verdict.histories[related] = [_brief(e) for e in by_key.get(related, [])]
    return verdict


def _check_key(verdict: Verdict, key: int, events: list[Event], deleted_at: dict[int, int]) -> None:
    """One key's events in offset order: duplicates, order, gaps (see the docstring)."""
    seen: set[tuple[str, int]] = set()
    highest: int | None = None
    deleted = False
    for event in events:
        v = event.v
        assert v is not None
        identity = (event.op, v)
        if identity in seen:
            verdict.duplicated += 1
            verdict.problem("duplicate", key=key, event=_brief(event))
            continue
        seen.add(identity)
        if highest is None:  # the first event: after the insert (v = 1) or the key change
            if event.moved_from is None:
                baseline: int | None = 0
            else:
                baseline = deleted_at.get(event.moved_from)  # None: its delete is missing,
                # which the table comparison counts for the old key
            if baseline is not None:
                expected = baseline + 1
                if event.op == "d":  # its insert (or key change) is missing, and maybe more
                    missing = max(1, v - baseline)
                else:
                    missing = v - expected if v > expected else (1 if v < expected else 0)
                if missing:
                    verdict.lost += missing
                    verdict.problem(
                        "first_event_gap",
                        key=key,
                        moved_from=event.moved_from,
                        expected_v=expected,
                        event=_brief(event),
                        missing=missing,
                    )
            highest = v
            deleted = event.op == "d"
            continue
        if deleted or v < highest or (v == highest and event.op != "d"):
            verdict.out_of_order += 1
            verdict.problem(
                "out_of_order", key=key, highest=highest, after_delete=deleted, event=_brief(event)
            )
        else:
            gap = v - highest if event.op == "d" else v - highest - 1
            if gap > 0:
                verdict.lost += gap
                verdict.problem("gap", key=key, highest=highest, event=_brief(event), missing=gap)
        highest = max(highest, v)
        deleted = deleted or event.op == "d"


# --- one mode's run -------------------------------------------------------------------


@dataclass
class Services:
    pg: PostgresServer
    kafka: KafkaServer


def passed(result: dict[str, Any]) -> bool:
    """Whether a result line shows the guarantee of its mode."""
    if result.get("error") is not None:
        return False
    ok = (
        result["lost"] == 0
        and result["out_of_order"] == 0
        and result["compacted_equal"] is True
        and result["caught_up"] is True
        and result["daemon_exit_code"] == 0
        and result["unexpected_exits"] == 0
    )
    if result["mode"] == "exactly_once":
        ok = ok and result["duplicated"] == 0
    return ok


def run_mode(
    services: Services,
    base: Path,
    mode: Mode,
    *,
    kills: int,
    seed: int,
    rate: float = 50.0,
    duration: float = 0.0,
) -> dict[str, Any]:
    """One soak of ``mode`` on a fresh database; returns its result line (``ok`` set)."""
    started = time.monotonic()
    rng = random.Random(seed)
    name = f"soak_{'eo' if mode == 'exactly_once' else 'alo'}_{uuid.uuid4().hex[:6]}"
    workdir = base / name
    workdir.mkdir(parents=True)
    pg, kafka = services.pg, services.kafka
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = pg.dsn(dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
    command = write_config(
        workdir,
        kafka.bootstrap_servers,
        {
            "name": name,
            "postgres": {"dsn": dsn},
            "slot": name,
            "publication": name,
            "tables": ["public.soak", "public.soak_aux"],
            "delivery": mode,
            "snapshot": {"mode": "never"},
            "status_interval_seconds": 1,
        },
    )
    daemon = DaemonProcess(command, workdir / "daemon.log")
    # The one-offs early in the run: within the first ~40% of the time the kills take.
    horizon = max(2.0, 0.4 * kills * sum(KILL_DELAY_S) / 2 + 1.0)
    specials = Specials(*(rng.uniform(0.3, horizon) for _ in range(3)))
    workload = Workload(dsn, random.Random(rng.random()), rate=rate, specials=specials)
    broker_at = kills // 3 if kills else None
    postgres_at = (2 * kills) // 3 if kills else None
    result: dict[str, Any] = {
        "mode": mode,
        "kills": 0,
        "broker_restarts": 0,
        "postgres_restarts": 0,
        "seed": seed,
        "connector": name,
    }
    caught_up = False
    exit_code: int | None = None
    error: str | None = None
    recoveries: list[str] = []

    def wait_recovered(since: int) -> None:
        """Until the daemon works again after a broker or PostgreSQL restart: a new
        ``streaming_started``, or its slot past the WAL written since the restart."""
        target = current_wal_lsn(dsn)
        deadline = time.monotonic() + RECOVER_TIMEOUT_S
        while True:
            if any(line.get("event") == "streaming_started" for line in daemon.lines(since)):
                recoveries.append("restarted")
                return
            confirmed = slot_confirmed_lsn(dsn, name)
            if confirmed is not None and confirmed >= target:
                recoveries.append("resumed")
                return
            daemon.check_alive()
            workload.check()
            if time.monotonic() > deadline:
                raise SoakError(
                    f"daemon not working {RECOVER_TIMEOUT_S:.0f}s after a restart:\n"
                    + daemon.tail(since)
                )
            time.sleep(POLL_S)

    try:
        daemon.start()
        daemon.wait_started()
        workload.start()
        workload_started = time.monotonic()
        for i in range(kills):
            workload.check()
            time.sleep(rng.uniform(*KILL_DELAY_S))
            try:
                daemon.kill()
            except SoakError:  # it exited by itself: counted, and started again
                daemon.start()
                daemon.wait_started()
                continue
            result["kills"] += 1
            daemon.start()
            daemon.wait_started()
            if i == broker_at:
                since = daemon.log_size()
                kafka.kill()
                time.sleep(BROKER_DOWN_S)
                kafka.restart()
                result["broker_restarts"] += 1
                wait_recovered(since)
            if i == postgres_at:
                since = daemon.log_size()
                pg.kill()
                pg.restart()
                result["postgres_restarts"] += 1
                wait_recovered(since)
        remaining = duration - (time.monotonic() - workload_started)
        if remaining > 0:  # --duration: a workload of at least this long
            workload.stopping.wait(remaining)
        workload.finish()
        target = current_wal_lsn(dsn)
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        while time.monotonic() < deadline:
            confirmed = slot_confirmed_lsn(dsn, name)
            if confirmed is not None and confirmed >= target:
                caught_up = True
                break
            daemon.check_alive()
            time.sleep(POLL_S)
        exit_code = daemon.terminate()
    except SoakError as exc:
        error = str(exc)
        print(f"soak {mode}: {exc}", file=sys.stderr, flush=True)
    finally:
        workload.stopping.set()
        daemon.stop_quietly()
        workload.join(60)

    result["transactions"] = workload.transactions
    result["workload_reconnects"] = max(0, workload.connects - 1)
    result["daemon_exit_code"] = exit_code
    result["unexpected_exits"] = len(daemon.unexpected_exits)
    result["caught_up"] = caught_up
    if daemon.log_path.exists():
        log = daemon.lines()
        result["connector_restarts"] = sum(
            1 for x in log if x.get("event") == "connector_restarting"
        )
        result["daemon_errors"] = sorted(
            {
                str(x.get("error_type"))
                for x in log
                if x.get("event")
                in ("connector_restarting", "connector_failed", "connector_crashed")
            }
        )
        # Starts that resumed inside a source transaction (part of it was committed to
        # Kafka before the kill; ``resume`` is [commit LSN, index]): the hardest case of
        # exactly_once. Informative only.
        result["mid_transaction_resumes"] = sum(
            1
            for x in log
            if x.get("event") == "streaming_started"
            and isinstance(x.get("resume"), list)
            and x["resume"][1] != COMPLETE
        )
    result["recoveries"] = recoveries
    if error is None:
        topic = f"{name}.public.soak"
        events = read_topic(kafka.bootstrap_servers, topic, decode_event)
        aux_events = read_topic(kafka.bootstrap_servers, f"{name}.public.soak_aux", decode_event)
        latest = read_topic(kafka.bootstrap_servers, f"{topic}.latest", decode_latest)
        with psycopg.connect(dsn, autocommit=True) as conn:
            table = {int(k): int(v) for k, v in conn.execute("SELECT id, v FROM soak").fetchall()}
        verdict = check(events, aux_events, latest, table)
        result.update(
            rows=len(table),
            events=len(events),
            compacted_records=len(latest),
            lost=verdict.lost,
            duplicated=verdict.duplicated,
            out_of_order=verdict.out_of_order,
            truncate_events=verdict.truncate_events,
            compacted_equal=verdict.compacted_equal,
        )
        _report_problems(mode, verdict, workdir)
    result["error"] = error
    result["seconds"] = round(time.monotonic() - started, 1)
    result["ok"] = passed(result)
    (workdir / "result.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return result


def _report_problems(mode: str, verdict: Verdict, workdir: Path) -> None:
    if not verdict.problems:
        return
    path = workdir / "problems.json"
    report = {
        "counts": verdict.counts,
        "problems": verdict.problems,
        "histories": {str(key): events for key, events in verdict.histories.items()},
    }
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for problem in verdict.problems:
        by_kind[problem["kind"]].append(problem)
    print(f"soak {mode}: problems ({path}):", file=sys.stderr)
    for kind, found in by_kind.items():
        print(f"  {kind}: {verdict.counts[kind]}", file=sys.stderr)
        if kind == "duplicate" and mode == "at_least_once":
            continue  # expected after a crash: counted, not listed
        for problem in found[:MAX_EXAMPLES]:
            print(f"    {orjson.dumps(problem).decode()}", file=sys.stderr)
    for key, events in verdict.histories.items():
        print(f"  events of key {key}: {orjson.dumps(events).decode()}", file=sys.stderr)
    sys.stderr.flush()


def run(
    base: Path,
    modes: Sequence[Mode],
    *,
    kills: int,
    seed: int,
    rate: float,
    duration: float,
    emit: Callable[[dict[str, Any]], None],
) -> bool:
    """Start the services under ``base``, soak each mode, stop them; whether all passed."""
    ok = True
    pg = start_postgres(base / "pg")
    try:
        kafka = start_kafka(base / "kafka")
        try:
            services = Services(pg, kafka)
            for mode in modes:
                result = run_mode(
                    services, base, mode, kills=kills, seed=seed, rate=rate, duration=duration
                )
                emit(result)
                ok = ok and bool(result["ok"])
        finally:
            kafka.stop()
    finally:
        pg.stop()
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kills", type=int, default=50, help="daemon SIGKILLs (default 50)")
    parser.add_argument(
        "--mode", choices=[*MODES, "both"], default="exactly_once", help="delivery mode(s)"
    )
    parser.add_argument("--keep", type=Path, help="keep service data and logs in this folder")
    parser.add_argument("--seed", type=int, help="random seed (default: a random one)")
    parser.add_argument("--rate", type=float, default=50.0, help="workload transactions/s")
    parser.add_argument(
        "--duration", type=float, default=0.0, help="run the workload at least this many s"
    )
    args = parser.parse_args(argv)
    modes: list[Mode] = list(MODES) if args.mode == "both" else [cast(Mode, args.mode)]
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)

    def emit(result: dict[str, Any]) -> None:
        print(orjson.dumps(result).decode(), flush=True)

    options: dict[str, Any] = {
        "kills": args.kills,
        "seed": seed,
        "rate": args.rate,
        "duration": args.duration,
        "emit": emit,
    }
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        ok = run(args.keep, modes, **options)
    else:
        with tempfile.TemporaryDirectory(prefix="cdc-soak-") as tmp:
            os.chmod(tmp, 0o755)
            ok = run(Path(tmp), modes, **options)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
