"""Stand-ins for the edges, for unit tests of the sink and the stream loop.

``FakeProducer`` has the shape of confluent-kafka's ``Producer`` (``ProducerClient``) and
lets a test decide what Kafka does: acknowledge or fail records, refuse them with
``BufferError`` (a full queue), fail a commit (abortable) or fence the producer. What a
``read_committed`` consumer would see is in ``visible``. ``FakeSource`` replays CopyData
frames and records the standby status updates the loop sends. Neither is used to test
replication or delivery themselves: those tests run on the real servers.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from cdc.protocol.messages import PgoutputMessage, PrimaryKeepalive, XLogData

from .pgoutput_encoder import encode, encode_copy_data


@dataclass
class Produced:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int
    headers: Any
    callback: Any
    transaction: int | None  # which transaction it belongs to (exactly_once)


class _Msg:
    """What a delivery callback gets as its message."""

    def __init__(self, produced: Produced) -> None:
        self._produced = produced

    def topic(self) -> str:
        return self._produced.topic

    def key(self) -> bytes | None:
        return self._produced.key

    def headers(self) -> None:
        return None  # librdkafka's delivery reports carry no headers


@dataclass
class FakeProducer:
    """A producer whose broker the test controls."""

    auto_ack: bool = True  # poll() acknowledges everything in flight
    buffer_errors: int = 0  # the next produce() calls raise BufferError this many times
    max_queued: int | None = None  # BufferError while this many records are in flight
    delivery_error: KafkaError | None = None  # acks carry this error instead
    commit_error: KafkaError | None = None  # the next commit raises this (then clears)
    commit_timeouts: int = 0  # the next commits time out (retriable) this many times
    fenced: bool = False  # every transactional call raises _FENCED
    # A fatal error, as confluent-kafka reports one: the next poll() raises it (once),
    # and produce() fails with the bare _FATAL code, without the fatal flag.
    fatal_error: KafkaError | None = None
    fatal_raised: bool = False
    # produce() refuses a value above this many bytes, as librdkafka checks
    # message.max.bytes (MSG_SIZE_TOO_LARGE), before anything is queued.
    max_value_bytes: int | None = None
    # produce() refuses every record of these topics with the given error.
    refused_topics: dict[str, KafkaError] = field(default_factory=dict)
    # The broker refuses a record with this value at delivery (its ack carries the error;
    # in a transaction, the commit then fails, abortable), as for a topic's own
    # max.message.bytes or a broker-side policy.
    refused_at_delivery: dict[bytes, KafkaError] = field(default_factory=dict)
    produced: list[Produced] = field(default_factory=list)
    in_flight: list[Produced] = field(default_factory=list)
    visible: list[Produced] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    transaction: int | None = None
    spoiled: bool = False  # a record of the open transaction failed at delivery
    transactions: int = 0
    closed: bool = False
    polls: int = 0

    # --- producing ----------------------------------------------------------------------

    def produce(
        self,
        topic: str,
        value: str | bytes | None = None,
        key: str | bytes | None = None,
        partition: int = -1,
        callback: Any = None,
        on_delivery: Any = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None:
        if self.fatal_error is not None:
            raise KafkaException(
                KafkaError(KafkaError._FATAL, "Unable to produce message: Local: Fatal error")
            )
        if self.buffer_errors:
            self.buffer_errors -= 1
            raise BufferError("Local: Queue full")
        if self.max_queued is not None and len(self.in_flight) >= self.max_queued:
            raise BufferError("Local: Queue full")
        assert not isinstance(value, str)
        assert not isinstance(key, str)
        if self.max_value_bytes is not None and len(value or b"") > self.max_value_bytes:
            raise KafkaException(
                KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
            )
        if topic in self.refused_topics:
            raise KafkaException(self.refused_topics[topic])
        record = Produced(
            topic, key, value, partition, headers, on_delivery or callback, self.transaction
        )
        self.produced.append(record)
        self.in_flight.append(record)

    def ack(self, count: int | None = None) -> int:
        """Acknowledge the oldest ``count`` records in flight (all when None)."""
        done = self.in_flight[: len(self.in_flight) if count is None else count]
        del self.in_flight[: len(done)]
        for record in done:
            error = self.refused_at_delivery.get(record.value or b"", self.delivery_error)
            if error is None and record.transaction is None:
                self.visible.append(record)
            if error is not None and record.transaction is not None:
                self.spoiled = True  # librdkafka: the transaction must be aborted
            if record.callback is not None:
                record.callback(error, _Msg(record))
        return len(done)

    def poll(self, timeout: float = -1) -> int:
        self.polls += 1
        if self.fatal_error is not None and not self.fatal_raised:
            self.fatal_raised = True
            raise KafkaException(self.fatal_error)
        return self.ack() if self.auto_ack else 0

    def flush(self, timeout: float = -1) -> int:
        if self.auto_ack:
            self.ack()
        return len(self.in_flight)

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        self.calls.append(f"purge(in_queue={in_queue}, in_flight={in_flight})")
        if in_flight:
            self.in_flight.clear()

    def close(self) -> bool:
        self.calls.append("close")
        self.closed = True
        return True

    def __len__(self) -> int:
        return len(self.in_flight)

    # --- transactions -------------------------------------------------------------------

    def _check_fenced(self) -> None:
        if self.fenced:
            raise KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))

    def init_transactions(self, timeout: float = -1) -> None:
        self.calls.append("init_transactions")
        self._check_fenced()

    def begin_transaction(self) -> None:
        self._check_fenced()
        assert self.transaction is None, "a transaction is already open"
        self.transactions += 1
        self.transaction = self.transactions
        self.calls.append("begin")

    def commit_transaction(self, timeout: float = -1) -> None:
        self._check_fenced()
        assert self.transaction is not None, "no transaction to commit"
        if self.commit_timeouts:
            self.commit_timeouts -= 1
            raise KafkaException(
                KafkaError(KafkaError._TIMED_OUT, "commit timed out", retriable=True)
            )
        if self.commit_error is not None:
            error, self.commit_error = self.commit_error, None
            raise KafkaException(error)
        self.ack()
        if self.spoiled:
            raise KafkaException(abortable("Failed to produce a message"))
        txn = self.transaction
        self.visible.extend(r for r in self.produced if r.transaction == txn)
        self.transaction = None
        self.calls.append("commit")

    def abort_transaction(self, timeout: float = -1) -> None:
        self.calls.append("abort")
        self.spoiled = False
        self.in_flight = [r for r in self.in_flight if r.transaction != self.transaction]
        self.transaction = None

    # --- what a consumer sees -----------------------------------------------------------

    def visible_on(self, topic: str) -> list[Produced]:
        return [r for r in self.visible if r.topic == topic]


def abortable(reason: str = "a record failed") -> KafkaError:
    return KafkaError(KafkaError._INCONSISTENT, reason, txn_requires_abort=True)


@dataclass
class FakeSource:
    """Replays CopyData frames; records what the loop sends back."""

    frames: list[bytes | None]  # None: nothing buffered at that moment (the loop idles)
    sent: list[bytes] = field(default_factory=list)
    waits: int = 0
    on_empty: Any = None  # called when the frames run out (e.g. to request a stop)

    def read(self) -> bytes | None:
        if self.frames:
            return self.frames.pop(0)  # None here: a moment with nothing to read
        if self.on_empty is not None:
            self.on_empty()
        return None

    def wait(self, timeout: float) -> None:
        self.waits += 1

    def send(self, payload: bytes) -> None:
        self.sent.append(payload)

    def confirmed(self) -> list[int]:
        """The flush LSN of every standby status update sent, in order."""
        return [struct.unpack_from(">Q", payload, 9)[0] for payload in self.sent]


def frames(messages: Iterable[tuple[int, PgoutputMessage | bytes]]) -> list[bytes | None]:
    """XLogData frames of ``(lsn, message or pgoutput bytes)`` pairs."""
    out: list[bytes | None] = []
    for lsn, message in messages:
        data = message if isinstance(message, bytes) else encode(message)
        out.append(encode_copy_data(XLogData(lsn, lsn, 0, data)))
    return out


def keepalive(wal_end: int, *, reply: bool = False) -> bytes:
    return encode_copy_data(PrimaryKeepalive(wal_end, 0, reply))
