"""Edge: reading a connector's topics back for a replay, ``read_committed``.

The one job: hand the replay the records of the partitions it asked for, from the offsets
it stored (no consumer-group offsets: the replay keeps its offsets in the target database,
in the same transaction as the rows, which is what makes it exactly-once), and say when a
partition has been read to its end. Two readers: ``PartitionReader`` for the retention
topics (large, read in batches, paused when the replay is full) and ``TopicTail`` for the
small control topics (state, schema, transaction), read to their end each time.

Reading is ``read_committed``: an aborted Kafka transaction's records never reach a
target, and a record is seen only with the state record committed with it. It must not
interpret records (``cdc.replay.records``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, NamedTuple, cast

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from cdc.errors import SinkError
from cdc.kafka.errors import kafka_error
from cdc.kafka.topics import ADMIN_TIMEOUT_S, KafkaAdmin

__all__ = ["ConsumedRecord", "PartitionReader", "PartitionScan", "TopicTail"]

Partition = tuple[str, int]

# A fetch returns once this much is there or this long has passed: a replay reads in bulk.
_FETCH_WAIT_MS: Final = 50
# How often a control topic that does not exist yet is looked for.
_LOOK_AGAIN_S: Final = 1.0
# Records handed over per consume() call (confluent-kafka builds them in C, in one go).
_BATCH: Final = 5_000


class ConsumedRecord(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] | None


def _settings() -> dict[str, Any]:
    return {
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": _FETCH_WAIT_MS,
        # Prefetched records per partition (librdkafka's default is 64 MB each): enough
        # to keep a replay busy, small enough to keep its memory bounded.
        "queued.max.messages.kbytes": 2_048,
        "fetch.max.bytes": 52_428_800,
        # Per partition and fetch (librdkafka's default: 1 MB): fewer round trips.
        "max.partition.fetch.bytes": 4_194_304,
    }


class PartitionReader:
    """The retention-topic partitions of one replay, from given offsets."""

    def __init__(self, admin: KafkaAdmin, *, group_id: str) -> None:
        self._admin = admin
        self._consumer = admin.consumer(group_id, **_settings())
        self._assigned: list[Partition] = []
        # Where each partition was assigned from (the fetch thread starts its view here).
        self.next: dict[Partition, int] = {}

    def close(self) -> None:
        self._consumer.close()

    def partitions(self, topic: str) -> list[int] | None:
        """The topic's partitions, or None when the topic does not exist. Asked through
        the admin client: the consumer's metadata request can wait behind its fetches."""
        return self._admin.partition_ids(topic)

    def assign(self, start: Mapping[Partition, int | None]) -> None:
        """Read these partitions from these offsets (None: from the beginning)."""
        tps = [
            TopicPartition(t, p, OFFSET_BEGINNING if offset is None else offset)
            for (t, p), offset in start.items()
        ]
        try:
            self._consumer.assign(tps)
        except KafkaException as exc:
            raise kafka_error(exc, "assigning the replayed partitions") from exc
        self._assigned = list(start)
        for tp, offset in start.items():
            if offset is not None:
                self.next[tp] = offset

    def add(self, start: Mapping[Partition, int | None]) -> None:
        """Also read these partitions (a table that appeared while following)."""
        todo = {tp: o for tp, o in start.items() if tp not in self._assigned}
        if not todo:
            return
        tps = [
            TopicPartition(t, p, OFFSET_BEGINNING if offset is None else offset)
            for (t, p), offset in todo.items()
        ]
        try:
            self._consumer.incremental_assign(tps)
        except KafkaException as exc:
            raise kafka_error(exc, "assigning a new table's partitions") from exc
        self._assigned.extend(todo)

    def end_offsets(self, partitions: Iterable[Partition] | None = None) -> dict[Partition, int]:
        """Each partition's end (the last stable offset: read_committed), asked now."""
        return self._admin.end_offsets(self._assigned if partitions is None else partitions)

    def read(self, timeout: float) -> tuple[list[ConsumedRecord], dict[Partition, int]]:
        """The records fetched so far (at most a batch), waiting up to ``timeout``, and
        the partitions that reached their end meanwhile (with the offset of that end)."""
        try:
            messages = self._consumer.consume(num_messages=_BATCH, timeout=timeout)
        except KafkaException as exc:
            raise kafka_error(exc, "reading the replayed topics") from exc
        out: list[ConsumedRecord] = []
        eof: dict[Partition, int] = {}
        append = out.append
        for m in cast(list[Any], messages):
            error = m.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    eof[(m.topic(), m.partition())] = m.offset()
                    continue
                raise kafka_error(error, f"reading topic {m.topic()!r}", topic=m.topic())
            append(
                ConsumedRecord(
                    m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.headers()
                )
            )
        return out, eof


class TopicTail:
    """Small topics read from the start, then followed: every call returns what is new."""

    def __init__(self, admin: KafkaAdmin, topics: Iterable[str], *, group_id: str) -> None:
        self._admin = admin
        self._consumer = admin.consumer(group_id, **{**_settings(), "fetch.wait.max.ms": 10})
        self._tps: list[Partition] = []
        self._reached: dict[Partition, int] = {}
        # Topics not created yet (a connector that has not started): looked for again.
        self._missing = list(topics)
        self._next_look = 0.0
        self._assign_new()

    def _assign_new(self) -> None:
        """Start reading the topics of ``_missing`` that exist now."""
        now = time.monotonic()
        if not self._missing or now < self._next_look:
            return
        self._next_look = now + _LOOK_AGAIN_S
        tps: list[TopicPartition] = []
        try:
            for topic in list(self._missing):
                numbers = self._admin.partition_ids(topic)
                if numbers is None:
                    continue
                self._missing.remove(topic)
                tps.extend(TopicPartition(topic, p, OFFSET_BEGINNING) for p in numbers)
            if tps:
                self._consumer.incremental_assign(tps)
                self._tps.extend((tp.topic, tp.partition) for tp in tps)
        except KafkaException as exc:
            raise kafka_error(exc, "reading the connector's state and schema topics") from exc

    def close(self) -> None:
        self._consumer.close()

    def drain(self, *, deadline_s: float = 4 * ADMIN_TIMEOUT_S) -> list[ConsumedRecord]:
        """Every record committed since the last call, up to the ends as of now."""
        self._assign_new()
        if not self._tps:
            return []
        ends = self._admin.end_offsets(self._tps)
        out: list[ConsumedRecord] = []
        stop = time.monotonic() + deadline_s
        while any(self._reached.get(tp, 0) < end for tp, end in ends.items()):
            if time.monotonic() > stop:
                raise SinkError(
                    "timed out reading the connector's state/schema topics to their end",
                    retryable=True,
                )
            try:
                messages = self._consumer.consume(num_messages=_BATCH, timeout=0.05)
            except KafkaException as exc:
                raise kafka_error(exc, "reading the connector's control topics") from exc
            for m in cast(list[Any], messages):
                tp = (m.topic(), m.partition())
                error = m.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        self._reached[tp] = max(self._reached.get(tp, 0), m.offset())
                        continue
                    raise kafka_error(error, f"reading topic {m.topic()!r}", topic=m.topic())
                self._reached[tp] = max(self._reached.get(tp, 0), m.offset() + 1)
                out.append(
                    ConsumedRecord(
                        m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.headers()
                    )
                )
        return out


class PartitionScan:
    """One partition at a time, for a replay's bootstrap from a compacted topic: read a
    partition to its end in chunks, or find the first record after a source position."""

    def __init__(self, admin: KafkaAdmin, *, group_id: str) -> None:
        self._admin = admin
        self._consumer = admin.consumer(group_id, **_settings())

    def close(self) -> None:
        self._consumer.close()

    def read(self, topic: str, partition: int, end: int) -> Iterable[list[ConsumedRecord]]:
        """Chunks of the partition's records, from its start up to ``end``."""
        if end <= 0:
            return
        try:
            self._consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
            reached = 0
            while reached < end:
                chunk: list[ConsumedRecord] = []
                for m in cast(list[Any], self._consumer.consume(num_messages=_BATCH, timeout=1)):
                    error = m.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            reached = max(reached, m.offset())
                            continue
                        raise kafka_error(error, f"reading topic {topic!r}", topic=topic)
                    reached = max(reached, m.offset() + 1)
                    if m.offset() < end:
                        chunk.append(
                            ConsumedRecord(
                                topic, partition, m.offset(), m.key(), m.value(), m.headers()
                            )
                        )
                if chunk:
                    yield chunk
        except KafkaException as exc:
            raise kafka_error(exc, f"reading topic {topic!r}", topic=topic) from exc
        finally:
            self._consumer.unassign()

    def first_after(
        self,
        topic: str,
        partition: int,
        end: int,
        position_of: Callable[[ConsumedRecord], tuple[int, int]],
        position: tuple[int, int],
    ) -> int:
        """The offset of the partition's first record after ``position`` (``end`` if
        none): a binary search, each probe one fetch, since a partition's records are
        in source order."""
        low, high, found = 0, end, end
        try:
            while low < high:
                middle = (low + high) // 2
                record = self._first_from(topic, partition, middle, end)
                if record is None:
                    high = middle  # nothing readable in [middle, end)
                elif position_of(record) <= position:
                    low = record.offset + 1
                else:
                    found = record.offset
                    high = middle
        finally:
            self._consumer.unassign()
        return found

    def _first_from(
        self, topic: str, partition: int, offset: int, end: int
    ) -> ConsumedRecord | None:
        """The first committed record at or after ``offset`` and before ``end``."""
        try:
            self._consumer.assign([TopicPartition(topic, partition, offset)])
            deadline = time.monotonic() + 4 * ADMIN_TIMEOUT_S
            while time.monotonic() < deadline:
                for m in cast(list[Any], self._consumer.consume(num_messages=1, timeout=1)):
                    error = m.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            return None
                        raise kafka_error(error, f"reading topic {topic!r}", topic=topic)
                    if m.offset() >= end:
                        return None
                    return ConsumedRecord(
                        topic, partition, m.offset(), m.key(), m.value(), m.headers()
                    )
        except KafkaException as exc:
            raise kafka_error(exc, f"reading topic {topic!r}", topic=topic) from exc
        raise SinkError(f"timed out reading topic {topic!r} at offset {offset}", topic=topic)
