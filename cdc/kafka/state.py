"""Edge: reads the connector's state topic (``<connector>.__cdc_state``) back at start.

The state topic is compacted; each key's latest record is one part of the connector's
state: ``position`` (where the last committed Kafka transaction left the stream),
``snapshot`` (snapshot progress), ``schemas`` (the known table shapes). Records are
written by the sink, in the same Kafka transactions as the records they describe
(``exactly_once``), or once those are acknowledged (``at_least_once``).

Reading is ``read_committed``, so an aborted transaction's state is never seen. A read
right after ``init_transactions`` could still miss the last committed transaction (its
commit markers are written after the commit returns), so at start the sink commits a
fresh marker first and this reads until the marker appears: everything committed before
it is then visible.
"""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from cdc.errors import SinkError
from cdc.kafka.errors import kafka_error
from cdc.kafka.topics import ADMIN_TIMEOUT_S, KafkaAdmin

__all__ = ["MARKER_KEY", "read_state"]

# The key of the marker a starting connector commits before it reads its state.
MARKER_KEY = b"start"

# Reading a state topic of a few thousand records takes a fraction of a second; waiting
# for a marker's commit to become visible, a few seconds at most on a loaded broker.
READ_TIMEOUT_S = 2 * ADMIN_TIMEOUT_S


def read_state(
    admin: KafkaAdmin, topic: str, *, marker: bytes | None, group_id: str
) -> dict[bytes, bytes]:
    """Every key's latest value in ``topic`` (tombstoned keys absent), read_committed.

    Args:
        admin: the connector's admin client (connection settings, metadata).
        topic: the state topic.
        marker: the value of the ``MARKER_KEY`` record committed just before: read until
            it was seen. None: read to the current end.
        group_id: the reader's consumer group (it never commits offsets).

    Raises:
        SinkError: the topic cannot be read, or the marker did not appear in time.
    """
    consumer = admin.consumer(
        group_id,
        **{
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            # A few small records, read once at start: do not let the broker hold the
            # fetch back for more (its default wait is 500 ms, paid at every start).
            "fetch.wait.max.ms": 10,
        },
    )
    latest: dict[bytes, bytes] = {}
    deadline = time.monotonic() + READ_TIMEOUT_S
    try:
        while True:
            try:
                metadata = consumer.list_topics(topic, timeout=ADMIN_TIMEOUT_S).topics.get(topic)
            except KafkaException as exc:
                raise kafka_error(exc, f"reading state topic {topic!r}", topic=topic) from exc
            if metadata is not None and metadata.error is None and metadata.partitions:
                break
            if marker is None:
                return latest  # no state topic yet: nothing stored
            if time.monotonic() > deadline:
                raise SinkError(f"state topic {topic!r} is not visible to cdc", topic=topic)
            time.sleep(0.1)  # just created: its metadata reaches this client shortly
        at_end: set[int | None] = set()
        partitions = list(metadata.partitions)
        if marker is None and not any(
            consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=ADMIN_TIMEOUT_S, cached=False
            )[1]
            for p in partitions
        ):
            return latest  # never written to: nothing to read
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        seen_marker = marker is None
        while not (seen_marker and len(at_end) == len(partitions)):
            if time.monotonic() > deadline:
                raise SinkError(
                    f"timed out reading state topic {topic!r}"
                    + ("" if seen_marker else " (the start marker did not appear)"),
                    topic=topic,
                )
            # consume() waits its whole timeout unless num_messages arrive: keep it short.
            for message in consumer.consume(num_messages=1000, timeout=0.02):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        at_end.add(message.partition())
                        continue
                    raise kafka_error(error, f"reading state topic {topic!r}", topic=topic)
                at_end.discard(message.partition())
                key, value = message.key(), message.value()
                if key is None:
                    continue
                if value is None:
                    latest.pop(key, None)
                else:
                    latest[key] = value
                    if key == MARKER_KEY and value == marker:
                        seen_marker = True
    except KafkaException as exc:
        raise kafka_error(exc, f"reading state topic {topic!r}", topic=topic) from exc
    finally:
        consumer.close()
    return latest
