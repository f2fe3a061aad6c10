"""Edge: read one whole topic, ``read_committed``, to its end; and that end, per partition.

The one job, for readers that need a topic's content as of now (``cdc verify`` loads a
compacted topic into memory with it): every partition is read from its beginning, a later
read continues where the last one stopped, and "the end" is an offset per partition that
the caller chooses, usually :meth:`TopicReader.settled_end_offsets`.

It must not commit offsets (no consumer group position is used or stored), decide what
records mean, or keep records: each one goes to the caller's callback.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Final

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from cdc.errors import SinkError
from cdc.kafka.errors import kafka_error
from cdc.kafka.topics import ADMIN_TIMEOUT_S, KafkaAdmin

__all__ = ["OnRecord", "TopicReader"]

#: Receives each record: its key and value (``None``: a tombstone).
OnRecord = Callable[[bytes | None, bytes | None], None]

# consume() returns after this long when fewer records than asked for arrived: short, so
# that a read whose end is near does not wait for a full batch.
_CONSUME_WAIT_S: Final = 0.05
_CONSUME_BATCH: Final = 10_000
# How often the end offsets are asked again while a transaction is still open.
_SETTLE_POLL_S: Final = 0.05


class TopicReader:
    """Reads one topic from the beginning of each partition; not thread-safe.

    The partitions are those the topic has when the reader is made.
    """

    def __init__(self, admin: KafkaAdmin, topic: str, *, client_name: str) -> None:
        """Check the topic exists and make the consumers (nothing is fetched yet).

        Args:
            admin: the connection settings (``kafka.properties`` included).
            client_name: names the reader's consumer groups (never joined or committed).

        Raises:
            SinkError: the topic does not exist, or Kafka cannot be reached.
        """
        self.topic = topic
        group = f"{client_name}-{uuid.uuid4().hex[:8]}"
        # read_committed: what consumers of cdc's topics see (aborted transactions never).
        self._reader = admin.consumer(
            group,
            **{
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            },
        )
        # Its watermarks are the high watermarks: every record written, decided or not.
        self._probe = admin.consumer(f"{group}-probe", **{"isolation.level": "read_uncommitted"})
        try:
            metadata = self._reader.list_topics(topic, timeout=ADMIN_TIMEOUT_S).topics.get(topic)
        except KafkaException as exc:
            self.close()
            raise kafka_error(exc, f"reading the metadata of topic {topic!r}", topic=topic) from exc
        if metadata is None or metadata.error is not None or not metadata.partitions:
            self.close()
            raise SinkError(
                f"topic {topic!r} does not exist (or has no partitions visible to cdc): check"
                " the topic name templates (topics.retention, topics.compacted) and that the"
                " connector has run",
                topic=topic,
                retryable=False,
            )
        self.partitions: tuple[int, ...] = tuple(sorted(metadata.partitions))
        #: Per partition, the offset after the last record (or control record) read.
        self.positions: dict[int, int] = dict.fromkeys(self.partitions, 0)
        self._assigned = False

    def end_offsets(self, *, committed: bool = True) -> dict[int, int]:
        """Per partition, the offset a ``read_committed`` reader stops at (the last stable
        offset: before the first record of a transaction still open), or with
        ``committed=False`` the high watermark (after every record written).

        Raises:
            SinkError: Kafka did not answer.
        """
        consumer = self._reader if committed else self._probe
        try:
            return {
                p: consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=ADMIN_TIMEOUT_S, cached=False
                )[1]
                for p in self.partitions
            }
        except KafkaException as exc:
            raise kafka_error(
                exc, f"reading the end offsets of topic {self.topic!r}", topic=self.topic
            ) from exc

    def settled_end_offsets(self, timeout: float) -> dict[int, int] | None:
        """The ``read_committed`` end offsets once every record written before this call is
        decided (its transaction committed or aborted); ``None`` if that takes longer
        than ``timeout`` seconds.

        A transaction's records can be written, and its commit acknowledged to the
        producer, before the commit markers reach each partition; until then they sit
        above the last stable offset. Waiting for the last stable offset to pass the high
        watermark seen first means every transaction committed before this call is
        inside the returned end (an open transaction delays it by at most one commit).

        Raises:
            SinkError: Kafka did not answer.
        """
        written = self.end_offsets(committed=False)
        deadline = time.monotonic() + timeout
        while True:
            stable = self.end_offsets(committed=True)
            if all(stable[p] >= written[p] for p in self.partitions):
                return stable
            if time.monotonic() >= deadline:
                return None
            time.sleep(_SETTLE_POLL_S)

    def read_to(self, ends: Mapping[int, int], *, timeout: float, on_record: OnRecord) -> bool:
        """Read on until every partition's position reaches its offset in ``ends``,
        handing each record to ``on_record`` in offset order per partition (records past
        an end may come too). Returns ``False`` if nothing arrived (no record, no end of
        a partition) for ``timeout`` seconds before the ends were reached: a large topic
        that keeps coming is read to the end however long it takes. A later call
        continues from where this one stopped.

        Raises:
            SinkError: the consumer failed (an ACL, a deleted topic, a broker error).
        """
        positions = self.positions
        todo = {p for p in self.partitions if positions[p] < ends.get(p, 0)}
        if not todo:
            return True
        consumer = self._assign()
        deadline = time.monotonic() + timeout
        eof = KafkaError._PARTITION_EOF
        try:
            while todo:
                if time.monotonic() > deadline:
                    return False
                messages = consumer.consume(num_messages=_CONSUME_BATCH, timeout=_CONSUME_WAIT_S)
                if messages:
                    deadline = time.monotonic() + timeout
                for message in messages:
                    partition = message.partition()
                    offset = message.offset()
                    assert partition is not None
                    assert offset is not None
                    error = message.error()
                    if error is not None:
                        if error.code() != eof:
                            raise kafka_error(
                                error, f"reading topic {self.topic!r}", topic=self.topic
                            )
                        # At the end: the offset is the last stable offset, past the
                        # control records of committed and aborted transactions.
                        positions[partition] = max(positions[partition], offset)
                    else:
                        positions[partition] = offset + 1
                        on_record(message.key(), message.value())
                    if partition in todo and positions[partition] >= ends.get(partition, 0):
                        todo.discard(partition)
        except KafkaException as exc:
            raise kafka_error(exc, f"reading topic {self.topic!r}", topic=self.topic) from exc
        return True

    def close(self) -> None:
        """Leave Kafka (idempotent)."""
        for consumer in (getattr(self, "_reader", None), getattr(self, "_probe", None)):
            if consumer is not None:
                with contextlib.suppress(RuntimeError):  # already closed
                    consumer.close()

    def _assign(self) -> Consumer:
        if not self._assigned:
            try:
                self._reader.assign(
                    [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in self.partitions]
                )
            except KafkaException as exc:
                raise kafka_error(exc, f"reading topic {self.topic!r}", topic=self.topic) from exc
            self._assigned = True
        return self._reader
