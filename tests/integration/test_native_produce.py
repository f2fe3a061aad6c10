"""The compiled produce path (``cdc.kafka.native_produce``) on a real broker: librdkafka
gets from it exactly the records ``Producer.produce()`` would give it, and the sink's
``exactly_once`` publishing through it loses and repeats nothing, also when librdkafka's
queue is full and records fall back to confluent-kafka."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import structlog
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cdc import native
from cdc.envelope import Record
from cdc.kafka.native_produce import PYTHON_PATH, record_producer
from cdc.kafka.sink import KafkaSink
from cdc.positions import CommitPolicy
from cdc.testing import KafkaService

pytestmark = pytest.mark.skipif(not native.ACTIVE, reason="the compiled core is not built")

PARTITIONS = 3
QUEUE_FULL = KafkaError._QUEUE_FULL


def _topics(kafka: KafkaService, *names: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    futures = admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    for future in futures.values():
        future.result(timeout=30)


def _read(kafka: KafkaService, topic: str, count: int) -> list[tuple[Any, ...]]:
    """``count`` records of ``topic`` (read_committed) as (partition, offset, key, value,
    headers), in offset order per partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"native-{uuid.uuid4().hex[:10]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        got: list[tuple[Any, ...]] = []
        deadline = time.monotonic() + 60
        while len(got) < count and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                assert msg.error() is None, msg.error()
                got.append((msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers()))
        # Nothing beyond what was expected: a repeat would show here.
        got.extend(
            (msg.partition(), msg.offset(), msg.key(), msg.value(), None)
            for msg in consumer.consume(num_messages=1000, timeout=1.0)
            if msg.error() is None
        )
    finally:
        consumer.close()
    return sorted(got, key=lambda r: (r[0], r[1]))


def _producer(kafka: KafkaService, client_id: str, **settings: Any) -> Producer:
    return Producer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "client.id": client_id,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            **settings,
        }
    )


def test_the_compiled_path_is_found_on_a_real_producer(kafka_server: KafkaService) -> None:
    producer = _producer(kafka_server, "cdc-found")
    produce, path = record_producer(producer, "cdc-found")
    assert path == "native"
    assert produce is not None


def test_a_handle_named_for_another_client_id_keeps_the_python_path(
    kafka_server: KafkaService,
) -> None:
    producer = _producer(kafka_server, "cdc-one")
    produce, path = record_producer(producer, "cdc-other")
    assert produce is None
    assert "handle" in path


def test_kafka_gets_the_records_produce_would_give_it(kafka_server: KafkaService) -> None:
    native_topic, python_topic = (f"native-{uuid.uuid4().hex[:8]}-{s}" for s in ("n", "p"))
    _topics(kafka_server, native_topic, python_topic)
    headers = [("cdc.lsn", b"23456"), ("cdc.seq", b"0")]
    shapes: list[tuple[bytes | None, bytes | None, Any]] = [
        (b'{"id":1}', b'{"after":{"id":1}}', headers),
        (b'{"id":2}', None, headers),  # a tombstone
        (None, b'{"heartbeat":1}', None),  # no key, no headers
        (b'{"id":3}', b"", (("cdc.lsn", b"1"),)),  # an empty value, tuple headers
        (b'{"id":4}', b"x" * 5000, [("empty", b""), ("none", None)]),
        ("é".encode(), bytes(range(256)), [("ünïcode", b"\x00\xff")]),
    ]
    producer = _producer(kafka_server, "cdc-same")
    produce, _ = record_producer(producer, "cdc-same")
    assert produce is not None
    records = [Record(native_topic, k, v, h) for _ in range(20) for k, v, h in shapes]
    assert produce(records, 0) == (len(records), 0)
    for k, v, h in shapes * 20:
        producer.produce(python_topic, v, k, headers=None if h is None else list(h))
    assert producer.flush(30) == 0
    count = len(records)
    assert _placed(_read(kafka_server, native_topic, count)) == _placed(
        _read(kafka_server, python_topic, count)
    )


def _placed(read: list[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Keyed records in their partitions' order (the partitioner follows the key), and
    unkeyed ones as a sorted list (a random partition each)."""
    keyed = [(p, k, v, h) for p, _, k, v, h in read if k is not None]
    unkeyed = sorted(((v, h) for _, _, k, v, h in read if k is None), key=repr)
    return keyed, unkeyed


def test_records_it_cannot_produce_exactly_are_left_to_confluent_kafka(
    kafka_server: KafkaService,
) -> None:
    producer = _producer(kafka_server, "cdc-left")
    produce, _ = record_producer(producer, "cdc-left")
    assert produce is not None
    fine = Record("t", b"k", b"v")
    left = [
        Record("t", b"k", b"v", None, 2),  # an explicit partition
        Record("t", "k", b"v"),  # type: ignore[arg-type]  # a str key
        Record("t", b"k", b"v", [("h", "text")]),  # type: ignore[list-item]  # str value
        Record("t", b"k", b"v", {"h": b"v"}),  # type: ignore[arg-type]  # dict headers
        Record("t\x00x", b"k", b"v"),  # a NUL in the topic name
    ]
    for record in left:
        assert produce([fine, record, fine], 0) == (1, PYTHON_PATH), record
    assert produce([fine, fine], 1) == (2, 0)
    producer.purge()


def test_a_full_queue_stops_at_the_first_record_librdkafka_refused(
    kafka_server: KafkaService,
) -> None:
    producer = _producer(kafka_server, "cdc-full", **{"queue.buffering.max.messages": 5})
    produce, _ = record_producer(producer, "cdc-full")
    assert produce is not None
    records = [Record("t", b"%d" % i, b"v") for i in range(8)]
    assert produce(records, 0) == (5, QUEUE_FULL)
    producer.purge()


def test_exactly_once_through_a_full_queue_loses_and_repeats_nothing(
    kafka_server: KafkaService,
) -> None:
    """A 1 KB librdkafka queue: nearly every unit meets a full queue, whose record then
    takes confluent-kafka's path and waits for room; every record is there once, in order
    per key, after the commits."""
    topic, state = f"native-eos-{uuid.uuid4().hex[:8]}", f"native-state-{uuid.uuid4().hex[:8]}"
    _topics(kafka_server, topic, state)
    log = structlog.get_logger("test")
    sink = KafkaSink.create(
        bootstrap_servers=kafka_server.bootstrap_servers,
        properties={"queue.buffering.max.kbytes": 1, "linger.ms": 1},
        client_id="cdc-native-eos",
        mode="exactly_once",
        connector="native-eos",
        state_topic=state,
        max_in_flight=10_000,
        policy=CommitPolicy(interval_s=0.0, max_records=500),
        log=log,
    )
    try:
        assert sink._native_produce is not None
        fallbacks: list[Record] = []
        reference = sink._produce_one

        def counted(record: Record, reached: Any) -> None:
            fallbacks.append(record)
            reference(record, reached)

        sink._produce_one = counted  # type: ignore[method-assign]
        sink.init_transactions()
        sink.start(confirmed=0, durable=None, system_id="sys", slot="s")
        units, per_unit = 40, 25
        for u in range(units):
            unit = [
                Record(topic, b"%d" % (i % 10), b"%d:%d" % (u, i) + b"." * 300, [("u", b"%d" % u)])
                for i in range(per_unit)
            ]
            sink.publish(unit, None)
            sink.end_group(end_lsn=u + 1)
            sink.service()
        sink.finish(30)
    finally:
        sink.close()
    assert fallbacks  # the queue was full: records took confluent-kafka's path
    got = _read(kafka_server, topic, units * per_unit)
    values = [r[3].split(b".")[0] for r in got]
    assert sorted(values) == sorted(
        b"%d:%d" % (u, i) for u in range(units) for i in range(per_unit)
    )
    per_key: dict[bytes, list[tuple[int, int]]] = {}
    for _, _, key, value, _ in got:
        u, i = value.split(b".")[0].split(b":")
        per_key.setdefault(key, []).append((int(u), int(i)))
    assert all(seq == sorted(seq) for seq in per_key.values())
