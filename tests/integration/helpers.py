"""Helpers for integration tests: a database per test, config files, the daemon as a
process, and a consumer that reads topics from the beginning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import psycopg
import yaml
from confluent_kafka import Consumer, TopicPartition

from cdc.testing.kafka import read_committed


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def create_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(admin_dsn: str, name: str, slot: str | None = None) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        if slot is not None:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE slot_name = %s AND NOT active",
                (slot,),
            )
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def scratch_database(server: Any, prefix: str, schema: str = "") -> Iterator[tuple[str, str]]:
    """A database of its own for one test, ``schema`` applied; yields (name, dsn). Dropped
    afterwards, with the replication slot named like it (tests name their slot so)."""
    name = unique_name(prefix)
    admin_dsn = server.dsn()
    create_database(admin_dsn, name)
    dsn = server.dsn(dbname=name)
    try:
        if schema:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(schema)
        yield name, dsn
    finally:
        drop_database(admin_dsn, name, slot=name)


def connector_config(name: str, dsn: str, *tables: str, **settings: Any) -> dict[str, Any]:
    """A connector file's content: its slot and publication named like it (which
    ``scratch_database`` drops), these ``tables``, status every second, then ``settings``."""
    return {
        "name": name,
        "postgres": {"dsn": dsn},
        "slot": name,
        "publication": name,
        "tables": list(tables),
        "status_interval_seconds": 1,
        **settings,
    }


def write_config(
    directory: Path,
    bootstrap_servers: str,
    connectors: Iterable[dict[str, Any]],
    *,
    partitions: int = 3,
    replication_factor: int = 1,
    kafka_properties: dict[str, Any] | None = None,
    metrics_port: int | None = None,
) -> tuple[Path, Path]:
    """Write config/cdc.yaml and connectors/*.yaml; returns both paths."""
    config_dir = directory / "config"
    connectors_dir = directory / "connectors"
    config_dir.mkdir(parents=True, exist_ok=True)
    connectors_dir.mkdir(parents=True, exist_ok=True)
    daemon = {
        "kafka": {"bootstrap_servers": bootstrap_servers, "properties": kafka_properties or {}},
        "topics": {"partitions": partitions, "replication_factor": replication_factor},
        "log": {"level": "info", "format": "json"},
        "metrics": {"port": metrics_port},
    }
    config_path = config_dir / "cdc.yaml"
    config_path.write_text(yaml.safe_dump(daemon))
    for connector in connectors:
        (connectors_dir / f"{connector['name']}.yaml").write_text(yaml.safe_dump(connector))
    return config_path, connectors_dir


@dataclass
class Daemon:
    """`cdc run` as a child process, its log in a file (shared by the daemons a test
    starts one after the other: each reads only its own part)."""

    process: subprocess.Popen[bytes]
    log_path: Path
    # Where this daemon's lines begin in the log file.
    log_offset: int = 0

    @classmethod
    def start(cls, config: Path, connectors: Path, log_path: Path) -> Daemon:
        offset = log_path.stat().st_size if log_path.exists() else 0
        log = log_path.open("ab")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cdc",
                "run",
                "--config",
                str(config),
                "--connectors",
                str(connectors),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        return cls(process, log_path, offset)

    def log_lines(self, *, all_runs: bool = False) -> list[dict[str, Any]]:
        """This daemon's log lines (``all_runs``: those of every daemon of the file)."""
        data = self.log_path.read_bytes()
        lines = []
        for raw in (data if all_runs else data[self.log_offset :]).splitlines():
            try:
                lines.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                lines.append({"event": "raw", "text": raw.decode(errors="replace")})
        return lines

    def wait_for_log(self, event: str, timeout: float = 60.0, *, count: int = 1) -> dict[str, Any]:
        """The ``count``-th line of ``event`` this daemon logged, once it is there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.log_lines() if line.get("event") == event]
            if len(found) >= count:
                return found[count - 1]
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"no {count} {event!r} log line(s) within {timeout}s; log:\n"
            + self.log_path.read_bytes()[self.log_offset :].decode(errors="replace")
        )

    def failure(self, timeout: float = 90.0) -> dict[str, Any]:
        """The daemon exits 1 on its own (a connector failed for good): its
        ``connector_failed`` line."""
        try:
            assert self.process.wait(timeout) == 1
        finally:
            self.stop_quietly()
        return self.wait_for_log("connector_failed")

    def terminate(self, timeout: float = 60.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def stop_quietly(self) -> None:
        """Stop as an operator would (SIGTERM), and SIGKILL only if that does not work."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: Any
    value: Any  # decoded JSON, or None for a tombstone
    raw_value: bytes | None


def consume(
    bootstrap_servers: str,
    topic: str,
    *,
    until: Callable[[list[Message]], bool],
    timeout: float = 60.0,
) -> list[Message]:
    """Read ``topic`` from the beginning until ``until(messages)`` holds or time runs out."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": unique_name("test"),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        # Topics the daemon creates on first use (messages, outbox) may not exist yet.
        deadline = time.monotonic() + timeout
        while True:
            found = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"topic {topic} does not exist after {timeout}s")
            time.sleep(0.2)
        partitions = found.partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if until(messages):
                return messages
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                if msg.error():
                    raise AssertionError(f"consumer error: {msg.error()}")
                raw_key, raw_value = msg.key(), msg.value()
                topic_name, partition, offset = msg.topic(), msg.partition(), msg.offset()
                assert topic_name is not None
                assert partition is not None
                assert offset is not None
                messages.append(_message(topic_name, partition, offset, raw_key, raw_value))
        if until(messages):
            return messages
        raise AssertionError(f"topic {topic}: condition not met in {timeout}s; got {len(messages)}")
    finally:
        consumer.close()


def at_least(n: int) -> Callable[[list[Message]], bool]:
    return lambda messages: len(messages) >= n


def slot_confirmed_lsn(dsn: str, slot: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots"
            " WHERE slot_name = %s",
            (slot,),
        ).fetchone()
    assert row is not None, f"slot {slot} missing"
    return int(row[0])


def current_wal_lsn(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def wait_until(condition: Callable[[], bool], *, timeout: float = 60.0, what: str = "") -> None:
    """Poll ``condition`` (the daemon's progress: its slot, its topics) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.05)


def read_all(bootstrap_servers: str, topic: str, *, timeout: float = 60.0) -> list[Message]:
    """Every record of ``topic`` a ``read_committed`` consumer sees now: read from the
    beginning of each partition to its end, so duplicates anywhere are counted."""
    return read_committed(bootstrap_servers, topic, partial(_message, topic), idle_timeout=timeout)


def _message(
    topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
) -> Message:
    """A record as the tests read it: key and value parsed (None stays None: a tombstone)."""
    return Message(
        topic=topic,
        partition=partition,
        offset=offset,
        key=orjson.loads(key) if key is not None else None,
        value=orjson.loads(value) if value is not None else None,
        raw_value=value,
    )


def records_in(bootstrap_servers: str, topic: str) -> int:
    """How many records ``topic`` has received (its high watermarks): a cheap progress
    probe, for waits that must not read the whole topic each time."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": unique_name("p")})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return 0
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            for p in metadata.partitions
        )
    finally:
        consumer.close()
