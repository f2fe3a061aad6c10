"""The dead-letter topic on a real PostgreSQL and Kafka: a row larger than the producer's
message.max.bytes lands there with headers naming it, the rows after it are published;
without the setting the connector stops, as it always did."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.helpers import (
    Daemon,
    consume,
    scratch_database,
    unique_name,
    write_config,
)

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL);"
# Small enough for a test row to pass it easily; librdkafka checks it in produce().
PRODUCER_LIMIT = 100_000
KAFKA_PROPERTIES = {"message.max.bytes": PRODUCER_LIMIT, "batch.size": PRODUCER_LIMIT // 2}


def _dead_letters(bootstrap: str, topic: str, count: int) -> list[Any]:
    """The first ``count`` records of the (one-partition) dead-letter topic, read_committed."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("dlq"),
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        found: list[Any] = []
        deadline = time.monotonic() + 60
        while len(found) < count and time.monotonic() < deadline:
            batch = consumer.consume(num_messages=10, timeout=0.5)
            found.extend(msg for msg in batch if msg.error() is None)
        assert len(found) >= count, f"{len(found)} dead letters in {topic}"
        return found
    finally:
        consumer.close()


def _connector(name: str, dsn: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "postgres": {"dsn": dsn},
        "slot": name,
        "publication": name,
        "tables": ["public.customers"],
        "snapshot": {"mode": "never"},
        **extra,
    }


def _insert(dsn: str, *rows: tuple[int, str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for row in rows:
            conn.execute("INSERT INTO customers VALUES (%s, %s)", row)


@pytest.mark.parametrize("delivery", ["exactly_once", "at_least_once"])
def test_a_row_kafka_refuses_goes_to_the_dead_letter_topic_and_the_stream_goes_on(
    postgres_server: Any, kafka_server: Any, tmp_path: Path, delivery: str
) -> None:
    bootstrap = kafka_server.bootstrap_servers
    with scratch_database(postgres_server, "dlq", SCHEMA) as (name, dsn):
        connector = _connector(name, dsn, delivery=delivery, dead_letter={"enabled": True})
        config, connectors = write_config(
            tmp_path, bootstrap, [connector], kafka_properties=KAFKA_PROPERTIES
        )
        daemon = Daemon.start(config, connectors, tmp_path / "daemon.log")
        try:
            daemon.wait_for_log("streaming_started")
            _insert(dsn, (1, "small"), (2, "x" * (2 * PRODUCER_LIMIT)), (3, "after"))
            topic = f"{name}.public.customers"
            seen = consume(bootstrap, topic, until=lambda m: {x.key["id"] for x in m} >= {1, 3})
            assert sorted(m.key["id"] for m in seen) == [1, 3]

            # Both of the row's records (retention and compacted topic) were too large.
            dead = _dead_letters(bootstrap, f"{name}.__cdc_dead_letter", 2)
            assert {m.headers_dict["cdc.dead_letter.topic"] for m in map(_Dead, dead)} == {
                topic.encode(),
                f"{topic}.latest".encode(),
            }
            first = _Dead(dead[0])
            assert orjson.loads(first.key) == {"id": 2}
            assert first.headers_dict["cdc.dead_letter.reason"] == b"too_large"
            assert first.headers_dict["cdc.dead_letter.error_code"] == b"MSG_SIZE_TOO_LARGE"
            assert first.headers_dict["cdc.dead_letter.value"] == b"description"
            assert int(first.headers_dict["cdc.dead_letter.value_bytes"]) > PRODUCER_LIMIT
            assert "cdc.lsn" in first.headers_dict
            assert "cdc.seq" in first.headers_dict
            description = orjson.loads(first.value)
            assert description["dead_letter"] == "too_large"
            assert description["value_bytes"] > PRODUCER_LIMIT
            assert orjson.loads(description["key"]) == {"id": 2}

            warned = daemon.wait_for_log("record_dead_lettered")
            assert warned["level"] == "warning"
            assert daemon.terminate() == 0
        finally:
            daemon.stop_quietly()


def test_without_the_setting_a_row_kafka_refuses_stops_the_connector(
    postgres_server: Any, kafka_server: Any, tmp_path: Path
) -> None:
    bootstrap = kafka_server.bootstrap_servers
    with scratch_database(postgres_server, "dlq", SCHEMA) as (name, dsn):
        config, connectors = write_config(
            tmp_path, bootstrap, [_connector(name, dsn)], kafka_properties=KAFKA_PROPERTIES
        )
        daemon = Daemon.start(config, connectors, tmp_path / "daemon.log")
        try:
            daemon.wait_for_log("streaming_started")
            _insert(dsn, (1, "x" * (2 * PRODUCER_LIMIT)))
            assert daemon.process.wait(60) == 1
            failed = daemon.wait_for_log("connector_failed")
            assert failed["error_type"] == "RecordTooLargeError"
            assert "message.max.bytes" in failed["error"]
        finally:
            daemon.stop_quietly()


TOPIC_LIMIT = 4_000  # the tables' topics' own max.message.bytes: the broker checks it


def _small_topics(bootstrap: str, name: str) -> None:
    """The connector's table topics made beforehand with a small max.message.bytes, as a
    cluster's policy might have them: a larger row passes librdkafka, not the broker."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = f"{name}.public.customers"
    configs = {"max.message.bytes": str(TOPIC_LIMIT)}
    futures = admin.create_topics(
        [
            NewTopic(topic, 3, 1, config={**configs, "cleanup.policy": "delete"}),
            NewTopic(f"{topic}.latest", 3, 1, config={**configs, "cleanup.policy": "compact"}),
        ]
    )
    for future in futures.values():
        future.result()


@pytest.mark.parametrize("delivery", ["exactly_once", "at_least_once"])
def test_a_row_the_broker_refuses_at_delivery_goes_to_the_dead_letters_and_nothing_else_does(
    postgres_server: Any, kafka_server: Any, tmp_path: Path, delivery: str
) -> None:
    """The broker refuses the whole batch the row is in: the run restarts, produces each
    refused record alone, and only the one refused alone goes to the dead-letter topic
    (the original value: cdc's own dead-letter topic takes 16 MB); every other row is on
    both topics, once in exactly_once."""
    bootstrap = kafka_server.bootstrap_servers
    with scratch_database(postgres_server, "dlqb", SCHEMA) as (name, dsn):
        _small_topics(bootstrap, name)
        connector = _connector(name, dsn, delivery=delivery, dead_letter={"enabled": True})
        config, connectors = write_config(tmp_path, bootstrap, [connector])
        daemon = Daemon.start(config, connectors, tmp_path / "daemon.log")
        try:
            daemon.wait_for_log("streaming_started")
            big = base64.b64encode(os.urandom(3 * TOPIC_LIMIT)).decode()  # incompressible
            with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
                for row in [(1, "small"), (2, big), (3, "after")]:
                    conn.execute("INSERT INTO customers VALUES (%s, %s)", row)
            _insert(dsn, (4, "later"))
            topic = f"{name}.public.customers"
            wanted = {1, 3, 4}
            seen = consume(bootstrap, topic, until=lambda m: {x.key["id"] for x in m} >= wanted)
            latest = consume(
                bootstrap, f"{topic}.latest", until=lambda m: {x.key["id"] for x in m} >= wanted
            )
            dead = _dead_letters(bootstrap, f"{name}.__cdc_dead_letter", 2)
            refused = daemon.wait_for_log("records_refused_at_delivery")
            assert daemon.terminate() == 0
        finally:
            daemon.stop_quietly()
    ids = [m.key["id"] for m in seen]
    assert set(ids) == wanted
    if delivery == "exactly_once":
        assert sorted(ids) == [1, 3, 4]  # once each, though the first try was aborted
    assert {m.key["id"] for m in latest} == wanted
    records = [_Dead(m) for m in dead]
    assert {r.headers_dict["cdc.dead_letter.topic"] for r in records} == {
        topic.encode(),
        f"{topic}.latest".encode(),
    }
    assert all(orjson.loads(r.key) == {"id": 2} for r in records)
    assert all(r.headers_dict["cdc.dead_letter.reason"] == b"too_large" for r in records)
    assert all(r.headers_dict["cdc.dead_letter.value"] == b"original" for r in records)
    assert big.encode() in records[0].value
    assert refused["level"] == "warning"


class _Dead:
    """A consumed dead-letter record: key, value, headers as a dict."""

    def __init__(self, msg: Any) -> None:
        self.key: bytes = msg.key()
        self.value: bytes = msg.value()
        self.headers_dict: dict[str, bytes] = dict(msg.headers() or [])
