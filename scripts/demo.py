"""``./scripts/demo``: see cdc work end to end, on throwaway servers, in well under a minute.

It starts a throwaway PostgreSQL and Kafka (``cdc.testing``) in a temporary folder, creates
a small "legacy" shop database (one table without a primary key) that already holds rows,
writes the daemon's two kinds of config file, runs the real daemon (``python -m cdc run``)
as a child process, which snapshots the existing rows (op "r") and then streams, commits a
workload of inserts, updates (one changes a primary key) and deletes on top, many of them
on snapshotted rows, then reads both topics back and prints them: the snapshot, a few
retention events, the compacted state per key, and whether what Kafka holds equals the
tables. Then it builds a "new service" database from the log alone (``cdc replay``) and
proves it equals the legacy tables (``cdc verify --target-dsn``). It stops the daemon with
SIGTERM (it flushes and confirms), then the servers, and removes the folder unless
``--keep DIR``.

Exit status: 0 when everything matched, 1 when something did not, 2 when the demo could
not run (a server or the daemon did not start), 130 after Ctrl-C.

It is a script for humans: it must not be imported by the daemon or the tests, and it
never touches a server it did not start.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, TopicPartition
from psycopg.rows import dict_row

from cdc.lsn import format_lsn, parse_lsn
from cdc.testing import ServiceError, free_port
from cdc.testing.kafka import KafkaServer, start_kafka
from cdc.testing.postgres import PostgresServer, start_postgres

CONNECTOR = "shop"
DATABASE = "shop"
SCHEMA = "public"
# Three partitions, so the output shows that every change of one key stays on one partition.
PARTITIONS = 3
# Seconds to wait for the daemon to stream, and for every expected event to reach Kafka:
# both take about a second here; the margin is for a busy 2-core machine.
DAEMON_START_TIMEOUT_S = 60.0
CONSUME_TIMEOUT_S = 30.0
# After the expected events arrived, listen this long more: a duplicate would show up.
DRAIN_S = 1.0
# SIGTERM makes the daemon flush Kafka (up to 30 s) and confirm; then we SIGKILL it.
DAEMON_STOP_TIMEOUT_S = 45.0
# The "new service" database that `cdc replay` builds from the log (section 10).
SERVICE_DATABASE = "orders_service"
# A replay or verify of the demo's few hundred changes takes seconds; this bounds a hang.
REPLAY_TIMEOUT_S = 180.0
# Keys printed per compacted topic; the check below covers every key.
SHOWN_KEYS = 8
DEFAULT_ROWS = 20
# Archived orders already in the database when the daemon starts: enough for the
# snapshot's rows/s to mean something, few enough to keep the demo quick.
DEFAULT_LEGACY_ROWS = 1000
LEGACY_FIRST_ID = 100_001
# Prose lines are wrapped at this width; JSON rows are not.
WRAP = 92
DAEMON_COMMAND = (sys.executable, "-m", "cdc", "run")

DDL = """
CREATE TABLE customers (
    id         bigint PRIMARY KEY,
    name       text NOT NULL,
    email      text,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Full "before" images on update and delete, to contrast with orders (default identity).
ALTER TABLE customers REPLICA IDENTITY FULL;
CREATE TABLE products (
    sku   text PRIMARY KEY,
    title text NOT NULL,
    price numeric(10,2) NOT NULL,
    tags  jsonb
);
CREATE TABLE orders (
    id          bigint PRIMARY KEY,
    customer_id bigint NOT NULL,
    status      text NOT NULL,
    total       numeric(12,2) NOT NULL,
    placed_at   timestamptz NOT NULL DEFAULT now()
);
-- A legacy table without a primary key: events get a null key and no compacted topic.
CREATE TABLE audit_log (
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    message text NOT NULL
);
"""
TABLE_NOTES = {
    "customers": "id bigint PK, name, email, created_at timestamptz; REPLICA IDENTITY FULL",
    "products": "sku text PK, title, price numeric(10,2), tags jsonb",
    "orders": "id bigint PK, customer_id, status, total numeric(12,2), placed_at timestamptz",
    "audit_log": "at timestamptz, message; NO primary key",
}
KEYED_TABLES = ("customers", "products", "orders")
TABLES = (*KEYED_TABLES, "audit_log")

DAEMON_CONFIG = """\
# Written by scripts/demo: a single local broker, so replication factor 1.
kafka:
  bootstrap_servers: "{bootstrap}"
topics:
  partitions: {partitions}
  replication_factor: 1
log:
  level: info
  format: json        # one JSON object per line, read back by the demo
metrics:
  host: 127.0.0.1
  port: {metrics_port}
"""
CONNECTOR_CONFIG = """\
# Written by scripts/demo. Slot and publication default to cdc_{name}; both are created.
name: {name}
postgres:
  dsn: "{dsn}"
tables: [{tables}]
status_interval_seconds: 1
snapshot:
  mode: initial       # the default: publish the existing rows (op "r") once, then stream
"""


# --- output ---------------------------------------------------------------------------


class Out:
    """Plain stdout with headings; ANSI styles only on a terminal (and without NO_COLOR)."""

    def __init__(self) -> None:
        self.color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")

    def _style(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def heading(self, text: str) -> None:
        print(f"\n{self._style('1', f'== {text} ==')}", flush=True)

    def line(self, text: str = "") -> None:
        print(text, flush=True)

    def dim(self, text: str) -> str:
        return self._style("2", text)

    def good(self, text: str) -> str:
        return self._style("32", text)

    def bad(self, text: str) -> str:
        return self._style("31;1", text)

    def warn(self, text: str) -> str:
        return self._style("33", text)


def compact(value: Any) -> str:
    """One-line JSON with a space after separators: rows stay readable and short."""
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def pretty(value: Any, indent: str) -> str:
    """Indented JSON, every line after the first prefixed with ``indent``."""
    return json.dumps(value, ensure_ascii=False, indent=2).replace("\n", "\n" + indent)


# --- the daemon as a child process ----------------------------------------------------


@dataclass
class Daemon:
    """``python -m cdc run`` in its own session, its JSON log lines in a file."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, config: Path, connectors: Path, log_path: Path) -> Daemon:
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [*DAEMON_COMMAND, "--config", str(config), "--connectors", str(connectors)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                # Its own session: Ctrl-C reaches only the demo, which then stops the
                # daemon with SIGTERM itself, in order (daemon first, then the servers).
                start_new_session=True,
            )
        return cls(process, log_path)

    def events(self) -> list[dict[str, Any]]:
        """Every log line so far, parsed; a line that is not JSON becomes ``event=raw``."""
        lines: list[dict[str, Any]] = []
        try:
            raw_lines = self.log_path.read_bytes().splitlines()
        except FileNotFoundError:
            return lines
        for raw in raw_lines:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                lines.append(parsed)
            elif raw.strip():
                lines.append({"event": "raw", "text": raw.decode(errors="replace")})
        return lines

    def wait_for(self, event: str, timeout: float) -> dict[str, Any]:
        """Return the first log line with this event; raise DemoError if it never comes."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.events():
                if line.get("event") == event:
                    return line
            if self.process.poll() is not None:
                reason = f"the daemon exited with status {self.process.returncode}"
                break
            if time.monotonic() > deadline:
                reason = f"no {event!r} log line within {timeout:.0f}s"
                break
            time.sleep(0.05)
        raise DemoError(f"{reason}; its log ends with:\n{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])

    def terminate(self) -> int:
        """SIGTERM, as systemd or Kubernetes would; SIGKILL if it hangs. Returns its status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(DAEMON_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class DemoError(Exception):
    """Something the demo needs did not happen; the message says what."""


# --- the workload ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One SQL statement and what it does to which table, to count the events it makes."""

    table: str
    op: str  # "c", "u", "d", or "k": an update that changes the primary key (d + c)
    sql: str


def audit(message: str) -> Change:
    return Change("audit_log", "c", f"INSERT INTO audit_log (message) VALUES ('{message}')")


def legacy_data(rows: int) -> list[tuple[str, list[Change]]]:
    """What the shop's database holds before cdc starts; ``rows`` archived orders at the end."""
    c = "c"
    steps = [
        ("sign-ups and a catalogue", [
            Change("customers", c, "INSERT INTO customers (id, name, email) VALUES"
                   " (1, 'Ada Lovelace', 'ada@example.com'),"
                   " (2, 'Grace Hopper', 'grace@example.com'), (3, 'Linus Pauling', NULL)"),
            Change("products", c, "INSERT INTO products VALUES"
                   """ ('TEA-01', 'Earl Grey, 100 g', 6.90, '["tea", "black"]'),"""
                   """ ('MUG-02', 'Enamel mug', 12.50, '["kitchen"]'),"""
                   " ('KET-03', 'Kettle', 49.00, NULL)"),
        ]),
        ("four orders placed", [
            Change("orders", c, "INSERT INTO orders (id, customer_id, status, total) VALUES"
                   " (1001, 1, 'new', 19.40), (1002, 2, 'new', 49.00),"
                   " (1003, 3, 'new', 6.90), (1004, 1, 'new', 12.50)"),
            audit("4 orders placed"),
        ]),
    ]  # fmt: skip
    if rows > 0:
        first, last = LEGACY_FIRST_ID, LEGACY_FIRST_ID - 1 + rows
        steps.append((f"archive: {rows} delivered orders from 2020 on", [
            Change("orders", c, "INSERT INTO orders (id, customer_id, status, total, placed_at)"
                   " SELECT g, 1 + g % 2, 'delivered', g % 89 + 0.49,"
                   f" timestamptz '2020-01-01 00:00Z' + (g - {first}) * interval '1 hour'"
                   f" FROM generate_series({first}, {last}) AS g"),
        ]))  # fmt: skip
    return steps


def workload(rows: int, legacy_rows: int) -> list[tuple[str, list[Change]]]:
    """The shop's day as (title, statements) transactions; ``rows`` bulk orders at the end.

    Most statements change rows that were in the database before the daemon started, so
    their events follow the snapshot's ``"r"`` event of the same key.
    """
    c, u, d, k = "c", "u", "d", "k"
    steps = [
        ("payment, shipping, a new e-mail, a price change", [
            Change("orders", u, "UPDATE orders SET status = 'paid' WHERE id = 1001"),
            Change("orders", u, "UPDATE orders SET status = 'shipped' WHERE id = 1001"),
            Change("orders", u, "UPDATE orders SET status = 'paid' WHERE id = 1002"),
            Change("customers", u, "UPDATE customers SET email = 'grace@navy.example'"
                   " WHERE id = 2"),
            Change("products", u, "UPDATE products SET price = 5.90,"
                   """ tags = tags || '["sale"]' WHERE sku = 'TEA-01'"""),
            audit("order 1001 shipped"),
        ]),
        ("order 1004 renumbered to 2004 (primary key change)", [
            Change("orders", k, "UPDATE orders SET id = 2004 WHERE id = 1004"),
            audit("order 1004 renumbered 2004"),
        ]),
        ("a cancellation and an account removal", [
            Change("orders", d, "DELETE FROM orders WHERE id = 1003"),
            Change("customers", d, "DELETE FROM customers WHERE id = 3"),
            audit("order 1003 cancelled, customer 3 removed"),
        ]),
    ]  # fmt: skip
    if legacy_rows > 0:
        steps.append(("purge: every 10th archived order deleted", [
            Change("orders", d, f"DELETE FROM orders WHERE id >= {LEGACY_FIRST_ID}"
                   " AND id % 10 = 0"),
            audit("archive purged"),
        ]))  # fmt: skip
    if rows > 0:
        first, last = 10_001, 10_000 + rows
        between = f"id BETWEEN {first} AND {last}"
        steps.append((f"bulk: {rows} orders, every 2nd paid, every 5th deleted", [
            Change("orders", c, "INSERT INTO orders (id, customer_id, status, total)"
                   " SELECT g, 1 + g % 2, 'new', g % 97 + 0.99"
                   f" FROM generate_series({first}, {last}) AS g"),
            Change("orders", u, f"UPDATE orders SET status = 'paid' WHERE {between}"
                   " AND id % 2 = 0"),
            Change("orders", d, f"DELETE FROM orders WHERE {between} AND id % 5 = 0"),
            audit(f"{rows} bulk orders"),
        ]))  # fmt: skip
    return steps


@dataclass
class Expected:
    """Records each table must produce on its topics: snapshot rows, then streamed events."""

    snapshot: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    streamed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))

    def add(self, change: Change, rowcount: int) -> None:
        # A key change is a delete of the old key and a create of the new one.
        self.streamed[change.table] += rowcount * (2 if change.op == "k" else 1)

    def records(self, table: str) -> int:
        """Per topic, retention or compacted: every change makes one record on each."""
        return self.snapshot[table] + self.streamed[table]


def run_workload(dsn: str, steps: Sequence[tuple[str, list[Change]]], out: Out) -> Expected:
    """Commit each step as one transaction; print its xid and the rows it touched."""
    expected = Expected()
    width = max(len(title) for title, _ in steps)
    with psycopg.connect(dsn) as conn:
        for number, (title, changes) in enumerate(steps, start=1):
            counts: dict[str, int] = {}
            with conn.transaction():
                for change in changes:
                    # No parameters, so psycopg sends the SQL (and its % operators) as is.
                    cursor = conn.execute(change.sql)
                    expected.add(change, cursor.rowcount)
                    counts[change.table] = counts.get(change.table, 0) + cursor.rowcount
                txid = conn.execute("SELECT txid_current()").fetchone()
            rows = ", ".join(f"{table} {n}" for table, n in counts.items())
            xid = out.dim(f"xid {txid[0] if txid else '?'}")
            out.line(f"  {number}. {xid}  {title:<{width}}  {out.dim(rows)}")
    return expected


def count_rows(dsn: str) -> dict[str, int]:
    """Rows per table now: before the daemon starts, exactly what its snapshot must read."""
    counts: dict[str, int] = {}
    with psycopg.connect(dsn) as conn:
        for table in TABLES:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # our own names
            counts[table] = row[0] if row else 0
    return counts


# --- reading the topics ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: Any  # decoded JSON key, None for a null key
    value: Any  # decoded JSON value, None for a tombstone
    tombstone: bool


def read_topics(bootstrap: str, wanted: dict[str, int], timeout: float) -> dict[str, list[Message]]:
    """Read every partition of each topic from offset 0 until ``wanted`` counts are reached.

    Then listen ``DRAIN_S`` more so duplicates would be counted too. Never commits offsets.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"cdc-demo-{os.getpid()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "log_level": 3,
        }
    )
    messages: dict[str, list[Message]] = {topic: [] for topic in wanted}
    try:
        metadata = consumer.list_topics(timeout=10)
        assignment = []
        for topic in wanted:
            if topic not in metadata.topics:
                raise DemoError(f"topic {topic} does not exist; the daemon should create it")
            assignment += [TopicPartition(topic, p, 0) for p in metadata.topics[topic].partitions]
        consumer.assign(assignment)
        deadline = time.monotonic() + timeout
        drain_until: float | None = None
        while True:
            now = time.monotonic()
            if drain_until is None and all(len(messages[t]) >= n for t, n in wanted.items()):
                drain_until = now + DRAIN_S
            if (drain_until is not None and now >= drain_until) or now >= deadline:
                break
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise DemoError(f"consumer error: {error}")
                name, partition, offset = msg.topic(), msg.partition(), msg.offset()
                assert name is not None
                assert partition is not None
                assert offset is not None
                raw_key, raw_value = msg.key(), msg.value()
                messages[name].append(
                    Message(
                        topic=name,
                        partition=partition,
                        offset=offset,
                        key=json.loads(raw_key) if raw_key is not None else None,
                        value=json.loads(raw_value) if raw_value is not None else None,
                        tombstone=raw_value is None,
                    )
                )
    finally:
        consumer.close()
    for topic_messages in messages.values():
        topic_messages.sort(key=lambda m: (m.partition, m.offset))
    return messages


def key_order(key: Any) -> tuple[str, ...]:
    """Sort keys by their values, numbers numerically: {"id": 2} before {"id": 10}."""
    if not isinstance(key, dict):
        return (compact(key),)
    return tuple(f"{v:020d}" if isinstance(v, int) else str(v) for v in key.values())


def latest_state(messages: list[Message]) -> dict[str, Message]:
    """The last record per key (offset order; one key always lands on one partition)."""
    state: dict[str, Message] = {}
    for message in messages:  # sorted by (partition, offset)
        state[compact(message.key)] = message
    return state


def replay_retention(messages: list[Message]) -> dict[str, Any]:
    """Rebuild the table from its change log: what a consumer of the retention topic sees."""
    rows: dict[str, Any] = {}
    for message in messages:
        event = message.value
        key = compact(message.key)
        if event["op"] in ("c", "u", "r"):
            rows[key] = event["after"]
        elif event["op"] == "d":
            rows.pop(key, None)
    return rows


# --- comparing with PostgreSQL --------------------------------------------------------


def same_value(expected: Any, actual: Any) -> bool:
    """Compare a psycopg value with the event's JSON value, independently of cdc's code."""
    if expected is None or actual is None:
        return expected is actual
    if isinstance(expected, Decimal):
        return bool(str(expected) == actual)  # exact decimal text, scale kept: "5.90"
    if isinstance(expected, datetime):
        return isinstance(actual, str) and datetime.fromisoformat(actual) == expected
    if isinstance(expected, (dict, list)):  # jsonb, parsed by psycopg
        return isinstance(actual, str) and json.loads(actual) == expected
    return bool(expected == actual)


def table_rows(dsn: str, table: str, key_columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        rows = conn.execute(f"SELECT * FROM {table}").fetchall()  # our own table names
    return {compact({c: row[c] for c in key_columns}): row for row in rows}


def differences(
    table: dict[str, dict[str, Any]], topic: dict[str, Any], limit: int = 5
) -> list[str]:
    """Human-readable differences between the table's rows and rows rebuilt from Kafka."""
    found: list[str] = []
    for key in sorted(table.keys() | topic.keys()):
        if key not in topic:
            found.append(f"key {key}: in the table, not in Kafka")
        elif key not in table:
            found.append(f"key {key}: in Kafka, not in the table")
        else:
            row, event_row = table[key], topic[key]
            if row.keys() != (event_row or {}).keys():
                found.append(f"key {key}: columns differ: {compact(event_row)}")
                continue
            for column, value in row.items():
                if not same_value(value, event_row[column]):
                    found.append(
                        f"key {key}: {column} is {value!r} in the table,"
                        f" {event_row[column]!r} in Kafka"
                    )
    return found[:limit]


def primary_keys(dsn: str) -> dict[str, tuple[str, ...]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT c.relname, a.attname FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indrelid"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indisprimary AND c.relnamespace = 'public'::regnamespace"
            " ORDER BY c.relname, array_position(i.indkey, a.attnum)"
        ).fetchall()
    keys: dict[str, tuple[str, ...]] = {}
    for table, column in rows:
        keys[table] = (*keys.get(table, ()), column)
    return keys


# --- printing -------------------------------------------------------------------------


def print_event(out: Out, message: Message, *, full: bool = False) -> None:
    """One retention event: key, op, before/after, and where it came from in the WAL."""
    event = message.value
    source = event["source"]
    place = out.dim(f"partition {message.partition}, offset {message.offset}")
    out.line(f"  key:   {compact(message.key)}   {place}")
    if full:
        out.line(f"  value: {pretty(event, '         ')}")
        out.line(
            out.dim(f"  source.lsn {source['lsn']} is {format_lsn(source['lsn'])} in WAL terms")
        )
    else:
        trimmed = {
            "op": event["op"],
            "before": event["before"],
            "after": event["after"],
        }
        out.line("  value: {")
        for name, value in trimmed.items():
            out.line(f'           "{name}": {compact(value)},')
        # The snapshot marker only where it says something: it is "false" on streamed events.
        marker = (
            "" if source["snapshot"] == "false" else f'"snapshot": {compact(source["snapshot"])}, '
        )
        txid, lsn = compact(source["txId"]), compact(source["lsn"])
        lsn_note = out.dim(f"# lsn {format_lsn(source['lsn'])}")
        out.line(
            f'           "source": {{{marker}"txId": {txid}, "lsn": {lsn}, ...}}, ...   {lsn_note}'
        )
        out.line("         }")
    out.line()


def print_retention(out: Out, orders: list[Message], customers: list[Message]) -> None:
    """A handful of events that show each kind of change, not the whole topic."""

    def pick(messages: list[Message], keys: Sequence[int], ops: str = "rcud") -> list[Message]:
        return [
            m
            for m in messages
            if m.value is not None and m.key in [{"id": k} for k in keys] and m.value["op"] in ops
        ]

    streamed = [m for m in orders if m.value["op"] != "r"]
    first = min(streamed, key=lambda m: m.value["source"]["lsn"]) if streamed else None
    sections = [
        (
            "Order 1001 read by the snapshot, then paid and shipped. 'before' is null on update:"
            " orders has the default REPLICA IDENTITY (the server sends the old row only when"
            " the key changes)",
            pick(orders, [1001]),
        ),
        (
            "Order 1004 renumbered 2004: a primary key change is a delete of the old key"
            " and a create of the new one, in the same transaction",
            pick(orders, [1004, 2004], "cd")[-2:],
        ),
        ("Order 1003 cancelled: 'before' holds the key only", pick(orders, [1003], "d")),
        (
            "Customer 2 changed e-mail: customers is REPLICA IDENTITY FULL,"
            " so 'before' is the whole old row",
            pick(customers, [2], "u"),
        ),
    ]
    if first is not None:
        out.line(f"The first streamed event on {first.topic}, in full:")
        print_event(out, first, full=True)
    for title, chosen in sections:
        for line in textwrap.wrap(title, width=WRAP):
            out.line(line)
        for message in chosen:
            if message is not first:
                print_event(out, message)


def print_compacted(out: Out, topic: str, messages: list[Message]) -> None:
    state = latest_state(messages)
    keys = sorted(state, key=lambda k: key_order(state[k].key))
    out.line(f"{topic}: {len(state)} keys in {len(messages)} records")
    width = max((len(k) for k in keys[:SHOWN_KEYS]), default=0)
    for key in keys[:SHOWN_KEYS]:
        message = state[key]
        shown = out.warn("null (tombstone)") if message.tombstone else compact(message.value)
        out.line(f"  {key:<{width}}  {shown}")
    if len(keys) > SHOWN_KEYS:
        out.line(out.dim(f"  ... {len(keys) - SHOWN_KEYS} more keys (all checked below)"))


def print_daemon_log(
    out: Out, lines: list[dict[str, Any]], events: Sequence[str], hide: Sequence[str] = ()
) -> None:
    """Selected daemon log lines as ``level event key=value``; a long ``detail`` wrapped."""
    skip = {"event", "level", "timestamp", "logger", "connector", "slot", "detail", *hide}
    for line in lines:
        if line.get("event") not in events:
            continue
        level = str(line.get("level", "info"))
        fields = " ".join(
            f"{k}={v if isinstance(v, str) else compact(v)}"
            for k, v in line.items()
            if k not in skip
        )
        label = out.warn(f"{level:<7}") if level == "warning" else f"{level:<7}"
        out.line(f"  {label}  {line['event']}  {fields}")
        if "detail" in line:
            for text in textwrap.wrap(str(line["detail"]), width=WRAP - 11):
                out.line(out.dim(f"           {text}"))


def print_snapshot(
    out: Out, log: list[dict[str, Any]], topics: dict[str, list[Message]], expected: Expected
) -> bool:
    """The initial snapshot as a consumer meets it; True if it is exactly the rows before.

    Checks that each table's retention topic got one ``"r"`` event per row that existed
    when the daemon started, that its compacted topic starts with the same rows (a key
    stays on one partition, and streaming starts only after Kafka acknowledged the
    snapshot, so a key's first record there is its snapshot row), and that the events
    carry Debezium's markers: "first" once, "last" once, "true" between, all at the
    slot's consistent point, with no transaction id.
    """
    # The per-table counts are in the table below, so the log line leaves them out.
    print_daemon_log(out, log, ("snapshot_finished",), hide=("tables",))
    lsns = {
        line["event"]: parse_lsn(str(line.get("lsn")))
        for line in log
        if line.get("event") in ("snapshot_started", "streaming_started")
    }
    point = lsns.get("snapshot_started", 0)
    ok = True
    snapshot_events: list[Message] = []

    def row(*cells: str) -> str:
        return "  {:<10} {:>11}  {:>17}  {:>16}  {}".format(*cells).rstrip()

    out.line()
    out.line(row("table", "rows before", 'op "r" on topic', "first on .latest", ""))
    for table in TABLES:
        reads = [m for m in topics[topic_name(table)] if m.value and m.value["op"] == "r"]
        snapshot_events += reads
        on_latest = "-"
        good = len(reads) == expected.snapshot[table]
        if table in KEYED_TABLES:
            first_per_key: dict[str, Any] = {}
            for message in topics[topic_name(table, latest=True)]:
                first_per_key.setdefault(compact(message.key), message.value)
            same = sum(1 for m in reads if first_per_key.get(compact(m.key)) == m.value["after"])
            good &= same == expected.snapshot[table]
            on_latest = str(same)
        ok &= good
        mark = out.good("ok") if good else out.bad("MISMATCH")
        out.line(row(table, str(expected.snapshot[table]), str(len(reads)), on_latest, mark))
    first = next((m for m in snapshot_events if m.value["source"]["snapshot"] == "first"), None)
    if first is not None:
        out.line()
        out.line(f'The "first" snapshot event, on {first.topic}:')
        print_event(out, first)
    markers = Counter(m.value["source"]["snapshot"] for m in snapshot_events)
    consistent = (
        point != 0
        and lsns.get("streaming_started") == point
        and markers["first"] == markers["last"] == 1
        and markers["true"] == len(snapshot_events) - 2
        and all(
            m.value["source"]["lsn"] == point
            and m.value["source"]["txId"] is None
            and m.value["before"] is None
            for m in snapshot_events
        )
    )
    ok &= consistent
    counts = ", ".join(f"{compact(k)} on {n}" for k, n in sorted(markers.items()))
    note = (
        'Each row that existed before the daemon is one "r" event on its table\'s topic and'
        " the first record of its key on the .latest topic (a table without a key has none)."
        f" source.snapshot is {counts}; all have source.lsn {format_lsn(point)}, the slot's"
        " consistent point where streaming then started, and a null txId and before."
    )
    for line in textwrap.wrap(note, width=WRAP):
        out.line(line if consistent else out.bad(line))
    return ok


def scrape_metrics(port: int) -> list[str]:
    """The daemon's own event counters, from its Prometheus endpoint."""
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError as exc:
        return [f"(metrics unavailable: {exc})"]
    wanted = ("cdc_events_total", "cdc_transactions_total", "cdc_lag_bytes")
    return [line for line in text.splitlines() if line.startswith(wanted)]


# --- the run --------------------------------------------------------------------------


@dataclass
class Resources:
    """What must be stopped at the end, in reverse order of starting."""

    postgres: PostgresServer | None = None
    kafka: KafkaServer | None = None
    daemon: Daemon | None = None

    def close(self, out: Out) -> None:
        if self.daemon is not None and self.daemon.process.poll() is None:
            # stdout may be a closed pipe (``demo | head``): stop everything all the same.
            with suppress(OSError):
                out.line("  stopping the daemon (SIGTERM)")
            self.daemon.terminate()
        if self.kafka is not None:
            self.kafka.stop()
        if self.postgres is not None:
            self.postgres.stop()


def topic_name(table: str, *, latest: bool = False) -> str:
    """The daemon's default topic names: ``{connector}.{schema}.{table}[.latest]``."""
    return f"{CONNECTOR}.{SCHEMA}.{table}" + (".latest" if latest else "")


def start_daemon(
    base: Path, bootstrap: str, dsn: str, out: Out, res: Resources
) -> tuple[Daemon, int]:
    """Write both config files, start ``cdc run``, wait until it streams; print what it said.

    The daemon goes into ``res`` as soon as it is started, so that it is stopped even when
    this fails half-way (a timeout, Ctrl-C, a closed stdout). Returns it and its metrics port.
    """
    config_dir, connectors_dir = base / "config", base / "connectors"
    config_dir.mkdir()
    connectors_dir.mkdir()
    metrics_port = free_port()
    config_path = config_dir / "cdc.yaml"
    config_path.write_text(
        DAEMON_CONFIG.format(bootstrap=bootstrap, partitions=PARTITIONS, metrics_port=metrics_port)
    )
    tables = ", ".join(f"{SCHEMA}.{t}" for t in TABLES)
    (connectors_dir / f"{CONNECTOR}.yaml").write_text(
        CONNECTOR_CONFIG.format(name=CONNECTOR, dsn=dsn, tables=tables)
    )
    out.line(f"  $ python -m cdc run --config {config_path} --connectors {connectors_dir}")
    daemon = res.daemon = Daemon.start(config_path, connectors_dir, base / "daemon.log")
    streaming = daemon.wait_for("streaming_started", DAEMON_START_TIMEOUT_S)
    log = daemon.events()
    print_daemon_log(out, log, ("table_without_key", "table_updates_not_capturable"))
    created = [line["topic"] for line in log if line.get("event") == "topic_created"]
    out.line(f"  {len(created)} topics created ({PARTITIONS} partitions each):")
    for name in sorted(created):
        out.line(f"    {name}")
    finished = next((line for line in log if line.get("event") == "snapshot_finished"), {})
    out.line(
        f"  slot cdc_{CONNECTOR} created; snapshot of the existing rows: {finished.get('rows')}"
        f" rows in {finished.get('seconds')}s (section 6)"
    )
    out.line(
        f"  streaming from LSN {streaming.get('lsn')} through slot cdc_{CONNECTOR}"
        f" and publication cdc_{CONNECTOR}, pgoutput protocol {streaming.get('protocol_version')}"
    )
    return daemon, metrics_port


def print_null_keys(out: Out, messages: list[Message]) -> None:
    if not messages:
        return
    message = min(messages, key=lambda m: m.value["source"]["lsn"])
    spread = len({m.partition for m in messages})
    out.line(f"{message.topic} (no primary key): the key is null")
    out.line(f"  key:   {compact(message.key)}")
    out.line(f"  value: {{\"op\": {compact(message.value['op'])}, \"after\": "
             f"{compact(message.value['after'])}, ...}}")  # fmt: skip
    note = (
        f"Null-key events are spread over partitions ({len(messages)} events on"
        f" {spread} of {PARTITIONS} here), so they have no order among themselves:"
        " give the table a key, or its topic one partition, if order matters."
    )
    for line in textwrap.wrap(note, width=WRAP):
        out.line(out.dim(line))


def check(out: Out, topics: dict[str, list[Message]], wanted: dict[str, int], dsn: str) -> bool:
    """Print counts per topic and compare what Kafka holds with the tables; True if all match."""
    ok = True
    width = max(len(t) for t in wanted)
    for name, count in wanted.items():
        got = len(topics[name])
        mark = out.good("ok") if got == count else out.bad(f"MISMATCH: expected {count}")
        ok &= got == count
        out.line(f"  {name:<{width}}  {got:>5} records  {mark}")
    audit_events = topics[topic_name("audit_log")]
    null_keys = sum(1 for m in audit_events if m.key is None)
    ok &= null_keys == len(audit_events)
    out.line(f"  audit_log events with a null key: {null_keys} of {len(audit_events)}")
    out.line()
    keys = primary_keys(dsn)
    for table in KEYED_TABLES:
        rows_now = table_rows(dsn, table, keys[table])
        latest = latest_state(topics[topic_name(table, latest=True)])
        live = {k: m.value for k, m in latest.items() if not m.tombstone}
        replayed = replay_retention(topics[topic_name(table)])
        for what, rebuilt in (("compacted state", live), ("retention replay", replayed)):
            found = differences(rows_now, rebuilt)
            ok &= not found
            verdict = out.good("equals the table") if not found else out.bad("DIFFERS")
            out.line(f"  {table:<10} {what:<17} {verdict} ({len(rows_now)} rows)")
            for difference in found:
                out.line(f"      {difference}")
    return ok


def stop_daemon(out: Out, daemon: Daemon, dsn: str) -> bool:
    """SIGTERM, then show what the daemon confirmed; True if it stopped cleanly."""
    out.line("  SIGTERM to the daemon: it stops reading, commits its Kafka transaction, confirms")
    status = daemon.terminate()
    log = daemon.events()
    print_daemon_log(out, log, ("streaming_stopped",))
    with psycopg.connect(dsn) as conn:
        slot = conn.execute(
            "SELECT confirmed_flush_lsn::text, pg_current_wal_lsn()::text"
            " FROM pg_replication_slots WHERE slot_name = %s",
            (f"cdc_{CONNECTOR}",),
        ).fetchone()
    if slot is not None:
        out.line(f"  slot cdc_{CONNECTOR} confirmed up to {slot[0]} (server WAL at {slot[1]})")
    problems = [
        line
        for line in log
        if line.get("level") in ("error", "critical") or line.get("event") == "raw"
    ]
    for line in problems[:5]:
        out.line(out.bad(f"  daemon: {compact(line)}"))
    mark = out.good("(clean)") if status == 0 else out.bad("(expected 0)")
    out.line(f"  daemon exit status {status} {mark}")
    return status == 0 and not problems


def replay_and_verify(base: Path, res: Resources, out: Out) -> bool:
    """``cdc replay`` into an empty database, then ``cdc verify`` against it; True if both
    exit 0 (the replayed tables equal the legacy ones)."""
    assert res.postgres is not None
    with psycopg.connect(res.postgres.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {SERVICE_DATABASE}")
    target = res.postgres.dsn(SERVICE_DATABASE)
    files = [
        "--config",
        str(base / "config" / "cdc.yaml"),
        "--connectors",
        str(base / "connectors"),
    ]
    ok = True
    for title, command in (
        ("replay", ["replay", CONNECTOR, "--target-dsn", target, "--log-level", "warning"]),
        ("verify", ["verify", CONNECTOR, "--target-dsn", target]),
    ):
        out.line(f"  $ cdc {' '.join(command[:2])} --target-dsn .../{SERVICE_DATABASE}")
        result = subprocess.run(
            [sys.executable, "-m", "cdc", *command, *files],
            capture_output=True, text=True, timeout=REPLAY_TIMEOUT_S, check=False,
        )  # fmt: skip
        for line in result.stdout.splitlines():
            out.line(f"    {line}")
        for line in result.stderr.splitlines()[-5:]:
            out.line(out.bad(f"    {line}") if result.returncode else out.dim(f"    {line}"))
        mark = out.good("(ok)") if result.returncode == 0 else out.bad("(expected 0)")
        out.line(f"    {title} exit status {result.returncode} {mark}")
        ok &= result.returncode == 0
    with psycopg.connect(target, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables"
            " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
            " ORDER BY 1"
        ).fetchall()
    out.line(out.dim("  tables in " + SERVICE_DATABASE + ": " + ", ".join(t[0] for t in tables)))
    return ok


def demo(base: Path, rows: int, legacy_rows: int, out: Out, res: Resources) -> bool:
    """Everything between starting the servers and stopping them; True if all matched."""
    started = time.monotonic()
    out.heading("1. Throwaway servers")
    res.postgres = start_postgres(base / "postgres")
    out.line(f"  PostgreSQL  {res.postgres.host}:{res.postgres.port}  wal_level=logical")
    res.kafka = start_kafka(base / "kafka")
    out.line(f"  Kafka       {res.kafka.bootstrap_servers}  single node (KRaft)")
    out.line(out.dim(f"  ready in {time.monotonic() - started:.1f}s, data under {base}"))

    out.heading(f'2. A "legacy" database: {DATABASE}')
    with psycopg.connect(res.postgres.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}")
    dsn = res.postgres.dsn(DATABASE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(DDL)
    for table, note in TABLE_NOTES.items():
        out.line(f"  {table:<10} {note}")
    out.line("  Years of business before cdc, one transaction per line:")
    run_workload(dsn, legacy_data(legacy_rows), out)
    before = count_rows(dsn)
    out.line(out.dim("  rows now: " + ", ".join(f"{t} {n}" for t, n in before.items())))

    out.heading("3. The daemon: snapshot, then streaming")
    daemon, metrics_port = start_daemon(base, res.kafka.bootstrap_servers, dsn, out, res)

    out.heading("4. Workload on top: one transaction per line")
    expected = run_workload(dsn, workload(rows, legacy_rows), out)
    expected.snapshot = before

    out.heading("5. Reading both topics back")
    wanted = {topic_name(t): expected.records(t) for t in TABLES}
    wanted |= {topic_name(t, latest=True): expected.records(t) for t in KEYED_TABLES}
    read_started = time.monotonic()
    topics = read_topics(res.kafka.bootstrap_servers, wanted, CONSUME_TIMEOUT_S)
    complete = all(len(topics[name]) >= count for name, count in wanted.items())
    note = (
        f"(incl. {DRAIN_S:.0f}s listening for duplicates)"
        if complete
        else out.bad(f"(gave up after {CONSUME_TIMEOUT_S:.0f}s: records are missing)")
    )
    out.line(
        f"  {sum(len(m) for m in topics.values())} records in {len(topics)} topics,"
        f" read in {time.monotonic() - read_started:.1f}s {note}"
    )

    out.heading('6. The initial snapshot: the rows from before, as op "r" events')
    ok = print_snapshot(out, daemon.events(), topics, expected)

    out.heading(f"7. Retention topic {topic_name('orders')}: every change, Debezium's envelope")
    print_retention(out, topics[topic_name("orders")], topics[topic_name("customers")])
    print_null_keys(out, topics[topic_name("audit_log")])

    out.heading("8. Compacted topics: the latest row per key")
    for number, table in enumerate(("customers", "orders")):
        if number:
            out.line()
        name = topic_name(table, latest=True)
        print_compacted(out, name, topics[name])

    out.heading("9. Summary")
    ok &= check(out, topics, wanted, dsn)
    out.line()
    for line in scrape_metrics(metrics_port):
        out.line(out.dim(f"  metrics: {line}"))

    out.heading('10. A "new service" database, built from the log alone')
    ok &= replay_and_verify(base, res, out)

    out.heading("11. Stopping")
    ok &= stop_daemon(out, daemon, dsn)
    out.line(out.dim(f"  demo work took {time.monotonic() - started:.1f}s"))
    return ok


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def interrupts_ignored() -> Iterator[None]:
    """While cleaning up, a second Ctrl-C must not leave servers running."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/demo",
        description="See cdc work end to end on a throwaway PostgreSQL and Kafka.",
    )
    parser.add_argument(
        "--keep",
        metavar="DIR",
        type=Path,
        help="put the servers' data, the config files and the daemon's log in DIR (new or"
        " empty) and keep it afterwards",
    )
    parser.add_argument(
        "--rows",
        metavar="N",
        type=int,
        default=DEFAULT_ROWS,
        help=f"extra orders in a bulk transaction (default {DEFAULT_ROWS})",
    )
    parser.add_argument(
        "--legacy-rows",
        metavar="N",
        type=int,
        default=DEFAULT_LEGACY_ROWS,
        help="archived orders already in the database when the daemon starts, read by its"
        f" snapshot (default {DEFAULT_LEGACY_ROWS})",
    )
    args = parser.parse_args(argv)
    if args.rows < 0:
        parser.error("--rows must be 0 or more")
    if args.legacy_rows < 0:
        parser.error("--legacy-rows must be 0 or more")
    out = Out()
    keep: Path | None = args.keep
    if keep is not None:
        if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
            parser.error(f"--keep {keep}: must be a new or empty folder")
        keep.mkdir(parents=True, exist_ok=True)
        base = keep.resolve()
    else:
        base = Path(tempfile.mkdtemp(prefix="cdc-demo-"))

    out.line("cdc demo: PostgreSQL -> logical replication (pgoutput) -> cdc -> Kafka")
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a killed demo cleans up too
    resources = Resources()
    status = 2
    removed = False
    try:
        status = 0 if demo(base, args.rows, args.legacy_rows, out, resources) else 1
    except KeyboardInterrupt:
        out.line("\nInterrupted: cleaning up.")
        status = 130
    except (ServiceError, DemoError, psycopg.Error) as exc:
        out.line(out.bad(f"\ndemo failed: {exc}"))
    finally:
        with interrupts_ignored():
            resources.close(out)
            # A failed run keeps its folder: the daemon's and the servers' logs explain it.
            if keep is None and status in (0, 130):
                shutil.rmtree(base, ignore_errors=True)
                removed = True
    if not removed:
        out.line(f"\nKept {base}:")
        out.line(f"  daemon log     {base / 'daemon.log'}")
        out.line(f"  config files   {base / 'config'}, {base / 'connectors'}")
        out.line(f"  server logs    {base / 'postgres/postgres.log'}, {base / 'kafka/kafka.log'}")
    if status == 0:
        out.line(out.good("\nEverything matched."))
    elif status == 1:
        out.line(out.bad("\nSomething did not match: see above."))
    return status


if __name__ == "__main__":
    sys.exit(main())
