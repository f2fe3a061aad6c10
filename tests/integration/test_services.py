"""The test services are real and configured as the integration tests assume."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from psycopg.rows import TupleRow

from cdc.testing import KafkaService, ServiceError
from cdc.testing.postgres import start_postgres

# Seconds to wait for a consumer to join its group and fetch: seconds on a busy machine.
CONSUME_TIMEOUT = 30.0


def test_postgres_has_logical_wal_level(pg_conn: psycopg.Connection[TupleRow]) -> None:
    assert pg_conn.execute("SHOW wal_level").fetchone() == ("logical",)


def test_postgres_keeps_fsync_on(pg_conn: psycopg.Connection[TupleRow]) -> None:
    """Crash tests rely on committed transactions surviving a SIGKILL."""
    assert pg_conn.execute("SHOW fsync").fetchone() == ("on",)


def test_postgres_keeps_committed_rows_across_kill_and_restart(tmp_path: Path) -> None:
    with start_postgres(tmp_path) as server:
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (42)")
        server.kill()
        server.restart()
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]


def test_postgres_start_failure_quotes_the_log(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match=r"(?s)postgres exited.*no_such_level"):
        start_postgres(tmp_path, settings={"wal_level": "no_such_level"})


def test_kafka_returns_a_produced_message(kafka_server: KafkaService) -> None:
    topic = f"test-services-{uuid.uuid4().hex}"
    admin = AdminClient({"bootstrap.servers": kafka_server.bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(
        timeout=30
    )

    producer = Producer({"bootstrap.servers": kafka_server.bootstrap_servers, "acks": "all"})
    producer.produce(topic, key=b"k", value=b"hello")
    assert producer.flush(timeout=30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_server.bootstrap_servers,
            "group.id": f"test-services-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + CONSUME_TIMEOUT
        message = None
        while message is None and time.monotonic() < deadline:
            polled = consumer.poll(1.0)
            if polled is None:
                continue
            error = polled.error()
            if error is None:
                message = polled
            elif error.code() != KafkaError._PARTITION_EOF:
                pytest.fail(f"consumer error: {error}")
    finally:
        consumer.close()
    assert message is not None, f"no message on {topic} within {CONSUME_TIMEOUT}s"
    assert (message.key(), message.value()) == (b"k", b"hello")


def test_kafka_does_not_create_topics_on_produce(kafka_server: KafkaService) -> None:
    """cdc must create its topics itself; the broker must not hide a missing create."""
    topic = f"test-services-missing-{uuid.uuid4().hex}"
    producer = Producer(
        {"bootstrap.servers": kafka_server.bootstrap_servers, "message.timeout.ms": 1000}
    )
    errors: list[KafkaError | None] = []
    producer.produce(topic, value=b"x", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(timeout=10)
    assert len(errors) == 1
    error = errors[0]
    assert error is not None
    assert error.code() in (KafkaError._MSG_TIMED_OUT, KafkaError.UNKNOWN_TOPIC_OR_PART), error
