"""Edge: the one path by which every record of a connector reaches Kafka.

Row changes, snapshot rows, schema changes, messages, outbox records and the connector's
own state records all go through ``KafkaSink``: one produce loop, one backpressure wait,
one error mapping (``cdc.kafka.errors``). Two delivery modes share it:

- ``exactly_once``: one transactional producer per connector, its ``transactional.id``
  derived from the connector's name, so a restarted or second instance fences the old
  one. Records go into Kafka transactions that also carry the connector's state (the
  position reached, snapshot progress, schema history); the slot is confirmed only after
  ``commit_transaction()`` returned (``positions.TransactionLedger``). No per-record
  delivery callback is needed: a failed record fails the commit.
- ``at_least_once``: the idempotent producer; the slot is confirmed once every record of a
  source transaction and of all before it is acknowledged (``positions.PositionTracker``);
  state records are written once what they describe is acknowledged.

Records for one key land in one partition in commit order (the Java client's murmur2
partitioner, so Java/Kafka Streams consumers agree on the partition of a key) and never
twice out of order (idempotence, ``acks=all``).

Backpressure holds on records (``max_in_flight_events``) and on bytes (librdkafka's
``queue.buffering.max.kbytes``, seen as ``BufferError``): the sink then polls Kafka, which
frees the queue, and calls ``on_wait`` about every 100 ms, which keeps the slot informed
and raises ``Stopped`` when a stop was requested. This module knows nothing of PostgreSQL
or of our envelopes: records in, durable positions out.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from typing import Any, Literal

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from cdc import metrics
from cdc.dead_letters import Refusal, RefusedRecords
from cdc.envelope import Record
from cdc.errors import SinkError, Stopped
from cdc.kafka.client import (
    PRODUCER_DEFAULTS,
    PRODUCER_REQUIRED,
    ClientLog,
    ProducerClient,
    transactional_id_for,
)
from cdc.kafka.errors import (
    error_of,
    is_abortable,
    is_record_refused,
    is_retriable,
    is_too_large,
    kafka_error,
)
from cdc.kafka.native_produce import RecordProduce, record_producer
from cdc.lsn import format_lsn
from cdc.positions import (
    CommitPolicy,
    Position,
    PositionTracker,
    StoredPosition,
    TransactionLedger,
)

__all__ = ["POSITION_KEY", "DeliveryMode", "KafkaSink"]

DeliveryMode = Literal["exactly_once", "at_least_once"]

# The state topic's key for the stream position (exactly_once).
POSITION_KEY = b"position"

# Admin-like waits (init_transactions, a synchronous state write) give up after this.
KAFKA_CALL_TIMEOUT_S = 30.0
# A wait polls Kafka and calls on_wait this often: the slot hears from us while we wait.
WAIT_STEP_S = 0.1
# commit_transaction is retried after a timeout (librdkafka allows it) up to this long.
COMMIT_TIMEOUT_S = 60.0
# A backpressure wait is logged once it lasts this long (shorter ones are flow control).
BACKPRESSURE_LOG_AFTER_S = 1.0
# On close, in-flight requests get this long to resolve before they are purged.
CLOSE_FLUSH_S = 10.0
# Records of a unit that is not a list (an incremental snapshot chunk, encoded as it is
# produced) reach the compiled produce in lists of this many: few calls, little memory.
NATIVE_BATCH = 1000


def _nothing() -> None:
    """The default ``on_wait``: nothing to keep alive."""


def _takes_native_produce(mode: DeliveryMode, dead_letter_topic: str | None) -> bool:
    """Whether records may go through the compiled produce, which gives them no delivery
    report: in ``exactly_once`` (a failed record fails the commit), and without a
    dead-letter topic (a refusal at delivery must be known by record)."""
    return mode == "exactly_once" and dead_letter_topic is None


def _batches(records: Iterable[Record]) -> Iterator[list[Record]]:
    """``records`` in lists of at most ``NATIVE_BATCH``, taken as they come."""
    iterator = iter(records)
    while batch := list(islice(iterator, NATIVE_BATCH)):
        yield batch


class KafkaSink:
    """One connector's producer, in one delivery mode; lives as long as its pipeline run.

    Call ``start`` once, then ``publish`` records as units of the stream, ``end_group``
    at the end of each source transaction (or batch of snapshot rows), ``save_state`` for
    state records that describe what was published, and ``service`` regularly (acks, and
    commits when due). ``confirmed`` is what the slot may be confirmed to. ``finish`` on a
    clean stop; ``close`` always.
    """

    def __init__(
        self,
        producer: ProducerClient,
        *,
        mode: DeliveryMode,
        state_topic: str,
        max_in_flight: int,
        policy: CommitPolicy,
        transactional_id: str = "",
        connector: str = "",
        log: Any,
        clock: Callable[[], float] = time.monotonic,
        dead_letter_topic: str | None = None,
        refusals: RefusedRecords | None = None,
        native_produce: RecordProduce | None = None,
    ) -> None:
        """Args:
        producer: the producer (transactional for ``exactly_once``).
        mode: the delivery mode.
        state_topic: the connector's state topic (its state records go there).
        max_in_flight: records awaiting acknowledgement above which producing waits.
        policy: when an ``exactly_once`` transaction is committed.
        transactional_id: the producer's, for error messages.
        connector: the connector's name (metric labels).
        log: the connector's bound logger.
        clock: monotonic seconds (tests pass their own).
        dead_letter_topic: where a record Kafka refuses for good goes instead of
            stopping the connector (``dead_letter.enabled``); None: stop.
        refusals: the records refused at delivery by an earlier run of the connector
            (``cdc.dead_letters``), which this one sends to ``dead_letter_topic``; it
            adds the ones it meets.
        native_produce: the compiled produce on ``producer``'s own handle
            (``cdc.kafka.native_produce``); used in ``exactly_once`` without a dead-letter
            topic, where no record needs a delivery report.
        """
        self._producer = producer
        self._mode = mode
        self._exactly_once = mode == "exactly_once"
        self._state_topic = state_topic
        self._max_in_flight = max_in_flight
        self._policy = policy
        self._transactional_id = transactional_id
        self._log = log
        self._clock = clock
        self._dead_letter_topic = dead_letter_topic
        self._refusals = (
            None
            if dead_letter_topic is None
            else refusals
            if refusals is not None
            else RefusedRecords()
        )
        # Refusals at delivery met since the last restart: the run must end (see
        # _refusals_met), so the next one publishes them to the dead-letter topic.
        self._fresh_refusals: list[tuple[str, Refusal]] = []
        self._fatal = False  # the producer is unusable: nothing more may be asked of it
        self._abandoned = False  # abandon(): commit nothing more, close without waiting
        # Why it is: the fatal error itself, which later calls only report as a bare
        # "Local: Fatal error" (e.g. fenced by another instance).
        self._fatal_cause: Any = None
        self._labels = {"connector": connector}
        self._commit_seconds = metrics.KAFKA_COMMIT_SECONDS.labels(connector=connector)
        self._native_produce = (
            native_produce if _takes_native_produce(mode, dead_letter_topic) else None
        )
        self._tracker = PositionTracker(0)
        self._ledger = TransactionLedger(0, None)
        self._in_transaction = False
        # A unit is being produced (publish did not return): half of it may be in Kafka.
        self._unit_open = False
        self._state_failures: list[Any] = []
        self._identity: tuple[str, str] = ("", "")
        # Commit timestamps (Unix us) of source transactions that became durable; the
        # pipeline drains it into the commit-to-durable histogram.
        self.completed: list[int] = []
        #: Called about every WAIT_STEP_S while waiting for Kafka; may raise ``Stopped``.
        self.on_wait: Callable[[], None] = _nothing

    @classmethod
    def create(
        cls,
        *,
        bootstrap_servers: str,
        properties: Mapping[str, Any],
        client_id: str,
        mode: DeliveryMode,
        connector: str,
        state_topic: str,
        max_in_flight: int,
        policy: CommitPolicy,
        log: Any,
        dead_letter_topic: str | None = None,
        refusals: RefusedRecords | None = None,
    ) -> KafkaSink:
        """The sink with a real producer.

        Raises:
            SinkError: the producer configuration is invalid (not retryable).
        """
        client_log = ClientLog(log)
        config: dict[str, Any] = {
            **PRODUCER_DEFAULTS,
            "bootstrap.servers": bootstrap_servers,
            **properties,
            **PRODUCER_REQUIRED,
            "logger": client_log,
            "error_cb": client_log.error,
            "client.id": client_id,
            # Records awaiting acks are bounded by max_in_flight; librdkafka's own count
            # limit sits above it so the byte limit is the one it enforces.
            "queue.buffering.max.messages": max_in_flight + 10_000,
        }
        transactional_id = ""
        if mode == "exactly_once":
            transactional_id = transactional_id_for(connector)
            config["transactional.id"] = transactional_id
        try:
            producer = Producer(config)
        except KafkaException as exc:
            raise SinkError(
                f"invalid Kafka producer configuration: {exc}. Check kafka.properties in"
                " the daemon config",
                retryable=False,
            ) from exc
        native_produce = None
        if _takes_native_produce(mode, dead_letter_topic):
            native_produce, path = record_producer(producer, client_id)
            log.info("kafka_produce_path", path=path)
        return cls(
            producer,
            mode=mode,
            state_topic=state_topic,
            max_in_flight=max_in_flight,
            policy=policy,
            transactional_id=transactional_id,
            connector=connector,
            log=log,
            dead_letter_topic=dead_letter_topic,
            refusals=refusals,
            native_produce=native_produce,
        )

    # --- state of the sink --------------------------------------------------------------

    @property
    def exactly_once(self) -> bool:
        return self._exactly_once

    @property
    def confirmed(self) -> int:
        """The LSN the slot may be confirmed to: everything before it is durable."""
        if self._exactly_once:
            return self._ledger.confirmed
        return self._tracker.confirmable()

    @property
    def durable(self) -> Position | None:
        """``exactly_once``: the last position a committed Kafka transaction holds."""
        return self._ledger.durable

    @property
    def pending(self) -> bool:
        """Something published is not durable yet."""
        if self._exactly_once:
            return self._ledger.pending
        return not self._tracker.idle

    def __len__(self) -> int:
        """Records produced and not yet acknowledged by Kafka."""
        return len(self._producer)

    def _error(self, exc: BaseException, action: str, *, topic: str | None = None) -> SinkError:
        """Our error for a failed call; a bare "Local: Fatal error" is replaced by the
        fatal error that caused it.

        confluent-kafka does not pass a fatal error to ``error_cb``: the ``poll()`` that
        serves it raises it, once. Calls after that (``produce()``, without even the
        fatal flag) fail with the bare ``_FATAL`` code, so the code decides, not only the
        flag, and the cause is the one a poll raised, or raises now.
        """
        error = error_of(exc)
        cause: Any = exc
        if error is not None and (error.fatal() or error.code() == KafkaError._FATAL):
            self._fatal = True
            if error.code() != KafkaError._FATAL:
                self._fatal_cause = self._fatal_cause or error
            elif self._fatal_cause is None:
                try:
                    self._producer.poll(0)
                except KafkaException as raised:
                    self._fatal_cause = error_of(raised)
            cause = self._fatal_cause or exc
        return kafka_error(cause, action, topic=topic, transactional_id=self._transactional_id)

    def _poll(self, timeout: float) -> None:
        """Serve the producer's callbacks (acknowledgements, logs); a fatal error is
        raised from here (see ``_error``)."""
        try:
            self._producer.poll(timeout)
        except KafkaException as exc:
            raise self._error(exc, "serving Kafka's callbacks") from exc
        if self._fresh_refusals:
            raise self._refusals_met()

    # --- life cycle ---------------------------------------------------------------------

    def start(
        self, *, confirmed: int, durable: StoredPosition | None, system_id: str, slot: str
    ) -> None:
        """Begin at the slot's ``confirmed`` LSN; ``exactly_once``: the producer is
        already initialised (``init_transactions``), ``durable`` is the stored position."""
        self._identity = (system_id, slot)
        self._tracker = PositionTracker(confirmed)
        reached = durable.reached if durable is not None else None
        self._ledger = TransactionLedger(confirmed, reached)

    def init_transactions(self) -> None:
        """``exactly_once``: register the transactional id, fencing any older producer
        of it and completing (aborting) the transaction it left open.

        Raises:
            SinkError: Kafka did not answer in time (retryable), refused the id
                (authorization), or ...
            Stopped: a stop was requested while waiting.
        """
        deadline = self._clock() + KAFKA_CALL_TIMEOUT_S
        while True:
            try:
                self._producer.init_transactions(WAIT_STEP_S * 10)
            except KafkaException as exc:
                if not is_retriable(exc) or self._clock() > deadline:
                    raise self._error(
                        exc,
                        f"initialising Kafka transactions (transactional.id"
                        f" {self._transactional_id!r})",
                    ) from exc
            else:
                return
            self.on_wait()

    # --- producing ----------------------------------------------------------------------

    def publish(self, records: Iterable[Record], reached: Position | None) -> None:
        """Produce one unit's records, in order; ``reached`` is where the stream stands
        once they are durable (None for snapshot rows, which are not stream positions).

        Raises:
            SinkError: Kafka refused a record (``RecordTooLargeError`` for its size).
            Stopped: a stop was requested while waiting for room (the unit is then only
                partly produced: ``finish`` aborts rather than commits).
        """
        if self._native_produce is not None:
            self._publish_native(records, reached)
            return
        exactly_once = self._exactly_once
        refusals = self._refusals
        if exactly_once:
            if not self._in_transaction:
                self._begin()
            on_delivery = None  # a failure shows at the commit (or, named, below)
        else:
            tx = self._tracker.open or self._tracker.begin()
            on_delivery = tx.on_delivery
        base_delivery = on_delivery
        divert = refusals if refusals else None  # refused at delivery by an earlier run
        self._unit_open = True
        produce = self._producer.produce
        count = 0
        for record in records:
            count += 1
            if refusals is not None:
                # With a dead-letter topic a record the broker refuses must be known by
                # name: librdkafka's delivery report has no headers to find it by.
                on_delivery = _NamedDelivery(self, record, base_delivery)
            try:
                if divert is not None and (refusal := divert.take(record)) is not None:
                    if refusal.alone:
                        # Refused by the broker for its topic even on its own: cdc's
                        # dead-letter topic (16 MB records) may well take the original.
                        self._dead_letter(record, reached, refusal, on_delivery, send_original=True)
                    else:
                        self._produce_alone(record, on_delivery, divert)
                elif record.partition < 0:  # the hot path: the partition follows the key
                    headers = record.headers
                    if headers is None:
                        produce(record.topic, record.value, record.key, on_delivery=on_delivery)
                    else:
                        # confluent-kafka takes headers as a list (or a dict), not a tuple;
                        # the router builds a data event's as a list, shared by its records.
                        produce(
                            record.topic,
                            record.value,
                            record.key,
                            headers=headers if headers.__class__ is list else list(headers),
                            on_delivery=on_delivery,
                        )
                else:
                    self._produce(record, on_delivery)
            except BufferError:
                # librdkafka's byte (or count) limit: wait for room, then the same record.
                self._produce_when_room(record, on_delivery, reached)
            except KafkaException as exc:
                if self._fresh_refusals:  # the transaction is spoilt by one refused before
                    raise self._refusals_met() from exc
                self._refused(exc, record, reached, on_delivery)
        # Accounted once the whole unit is produced: a commit never holds half of one.
        if exactly_once:
            self._ledger.added(count, reached, self._clock())
        else:
            tx.pending += count
        self._unit_produced()

    def _publish_native(self, records: Iterable[Record], reached: Position | None) -> None:
        """``publish`` in ``exactly_once`` through the compiled core: librdkafka takes a
        list of records in one call (an incremental snapshot chunk, which is encoded as it
        is produced, in lists of ``NATIVE_BATCH``). One it refuses (its queue full, too
        large, ...) or leaves to confluent-kafka is produced by ``_produce_one``, which
        raises the exact exception the error handling expects, and the call goes on after
        it."""
        produce = self._native_produce
        assert produce is not None
        if not self._in_transaction:
            self._begin()
        self._unit_open = True
        total = 0
        batches = (records,) if records.__class__ is list else _batches(records)
        for batch in batches:
            size = len(batch)
            index, _ = produce(batch, 0)
            while index < size:
                self._produce_one(batch[index], reached)
                index, _ = produce(batch, index + 1)
            total += size
        self._ledger.added(total, reached, self._clock())
        self._unit_produced()

    def _unit_produced(self) -> None:
        """A unit is whole in librdkafka (and accounted): above the in-flight bound, wait
        until half of it is acknowledged."""
        self._unit_open = False
        if len(self._producer) >= self._max_in_flight:
            self._wait(lambda: len(self._producer) < self._max_in_flight // 2)

    def _produce_one(self, record: Record, reached: Position | None) -> None:
        """One record through confluent-kafka, no delivery report (``exactly_once``)."""
        try:
            self._produce(record, None)
        except BufferError:
            self._produce_when_room(record, None, reached)
        except KafkaException as exc:
            self._refused(exc, record, reached, None)

    def _produce(self, record: Record, on_delivery: Any) -> None:
        """One record with its partition and headers, as given."""
        self._producer.produce(
            record.topic,
            record.value,
            record.key,
            partition=record.partition,
            headers=None if record.headers is None else list(record.headers),
            on_delivery=on_delivery,
        )

    def _produce_when_room(
        self, record: Record, on_delivery: Any, reached: Position | None
    ) -> None:
        """The slow path of ``publish``: librdkafka's queue is full (bytes or records) and
        frees room only when polled. Poll, keep the slot informed, try again."""
        started = self._clock()
        logged = False
        while True:
            self._poll(WAIT_STEP_S)
            if not self._exactly_once:
                self._raise_failures()
            self.on_wait()
            if not logged:
                logged = self._log_backpressure(started, bytes_limit=True)
            try:
                self._produce(record, on_delivery)
                break
            except BufferError:
                continue
            except KafkaException as exc:
                self._refused(exc, record, reached, on_delivery)
                break
        self._waited(started, logged=logged)

    def end_group(
        self, *, end_lsn: int, commit_ts_us: int | None = None, reached: Position | None = None
    ) -> None:
        """The records of a source transaction (or a batch of snapshot rows) are all
        produced: ``end_lsn`` may be confirmed once they are durable."""
        if self._exactly_once:
            self._ledger.source_ended(reached, end_lsn, commit_ts_us)
            return
        tracker = self._tracker
        tx = tracker.open
        if tx is None:
            if tracker.idle:
                # Nothing of it was produced (filtered, empty): confirmable at once.
                tracker.on_keepalive(end_lsn)
                return
            tx = tracker.begin()
        tx.commit_ts_us = commit_ts_us
        tracker.commit(tx, end_lsn)

    def save_state(self, key: bytes, value: bytes) -> None:
        """Store a state record describing what was published so far: in the same Kafka
        transaction (``exactly_once``), or once all of it is acknowledged."""
        if self._exactly_once:
            self._ledger.state_added(key, value, self._clock())
            return
        if not self._tracker.attach_state(key, value):
            self._produce_state(key, value)

    def store_state(self, key: bytes, value: bytes) -> None:
        """Write a state record now and return once Kafka holds it (decisions that must
        be durable before the next step, e.g. "an initial snapshot is due").

        Raises:
            SinkError: Kafka refused it or did not acknowledge it in time.
            Stopped: a stop was requested while waiting.
        """
        if self._exactly_once:
            self.save_state(key, value)
            self.commit()
            return
        self._produce_state(key, value)
        self._wait(lambda: not len(self._producer), timeout=KAFKA_CALL_TIMEOUT_S, report=False)
        self._raise_state_failures()

    def service(self, *, idle_boundary: bool = False) -> None:
        """Serve Kafka's callbacks; commit an ``exactly_once`` transaction when due
        (``idle_boundary``: the stream caught up between two source transactions).

        Raises:
            SinkError: a record or a commit failed.
            Stopped: a stop was requested while a commit waited.
        """
        self._poll(0)
        if self._exactly_once:
            if self._policy.due(self._ledger, self._clock(), idle_boundary=idle_boundary):
                self.commit()
            return
        self._raise_failures()
        self._release_state()

    def keepalive(self, wal_end: int) -> None:
        """The server has sent everything before ``wal_end`` (called between source
        transactions only): confirmable once nothing published is waiting."""
        if self._exactly_once:
            self._ledger.keepalive(wal_end)
        else:
            self._tracker.on_keepalive(wal_end)

    # --- exactly_once transactions -------------------------------------------------------

    def _begin(self) -> None:
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:
            raise self._error(exc, "beginning a Kafka transaction") from exc
        self._in_transaction = True

    def commit(self) -> None:
        """``exactly_once``: write the position reached and the pending state records
        into the open transaction and commit it; the slot may then be confirmed past it.

        Raises:
            SinkError: the commit failed; an abortable failure aborts the transaction
                first, so a restart rewinds to the last committed position.
            Stopped: a stop was requested while the commit waited for Kafka.
        """
        ledger = self._ledger
        if not ledger.pending:
            return
        if self._abandoned:
            raise Stopped
        if not self._in_transaction:
            self._begin()
        produce = self._producer.produce
        try:
            if ledger.reached is not None:
                confirm = max(ledger.confirmed, ledger.end_lsn or 0)
                stored = StoredPosition(ledger.reached, confirm, *self._identity)
                produce(self._state_topic, stored.to_json(), POSITION_KEY)
            for key, value in ledger.state.items():
                produce(self._state_topic, value, key)
        except BufferError:
            self._wait(lambda: len(self._producer) < self._max_in_flight // 2)
            self.commit()  # the ledger is unchanged: write the state records again
            return
        except KafkaException as exc:
            self._abort_quietly()
            raise self._error(exc, f"writing state to {self._state_topic!r}") from exc
        started = self._clock()
        deadline = started + COMMIT_TIMEOUT_S
        while True:
            try:
                self._producer.commit_transaction(WAIT_STEP_S * 10)
                break
            except KafkaException as exc:
                if is_retriable(exc) and self._clock() < deadline:
                    self.on_wait()
                    continue
                if is_abortable(exc):
                    self._serve_refusals()
                    if self._fresh_refusals:
                        raise self._refusals_met() from exc
                    self._abort_quietly()
                    raise SinkError(
                        f"a Kafka transaction failed and was aborted ({exc}); nothing after"
                        f" LSN {format_lsn(ledger.confirmed)} was confirmed and the"
                        " connector restarts from the last committed position"
                    ) from exc
                raise self._error(exc, "committing a Kafka transaction") from exc
        self._commit_seconds.observe(self._clock() - started)
        self._in_transaction = False
        self.completed.extend(ledger.committed())

    def _abort_quietly(self) -> None:
        """Abort the open transaction on the way out of an error (which the caller
        raises): its records become invisible to read_committed consumers."""
        ledger = self._ledger
        ledger.aborted()
        if not self._in_transaction or self._fatal:
            return  # an unusable producer aborts nothing; the next instance's init does
        self._in_transaction = False
        try:
            self._producer.abort_transaction(KAFKA_CALL_TIMEOUT_S)
        except KafkaException as exc:
            # The error being raised is the one to act on; the next instance's
            # init_transactions aborts this transaction anyway.
            self._log.warning("kafka_abort_failed", error=str(exc))

    # --- at_least_once bookkeeping ---------------------------------------------------------

    def _produce_state(self, key: bytes, value: bytes) -> None:
        try:
            self._producer.produce(self._state_topic, value, key, on_delivery=self._state_delivered)
        except BufferError:
            self._wait(lambda: len(self._producer) < self._max_in_flight // 2)
            self._produce_state(key, value)
        except KafkaException as exc:
            raise self._error(exc, f"writing state to {self._state_topic!r}") from exc

    def _state_delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._state_failures.append(err)

    def _raise_state_failures(self) -> None:
        if self._state_failures:
            raise kafka_error(
                self._state_failures[0],
                f"Kafka refused a state record in {self._state_topic!r}",
                topic=self._state_topic,
            )

    def _release_state(self) -> None:
        tracker = self._tracker
        tracker.confirmable()
        if tracker.completed:
            self.completed.extend(tracker.completed)
            tracker.completed.clear()
        released = tracker.released_state
        if released:
            # Only the latest value per key matters (the topic is compacted).
            latest = dict(released)
            released.clear()
            for key, value in latest.items():
                self._produce_state(key, value)
        self._raise_state_failures()

    def _raise_failures(self) -> None:
        failures = self._tracker.failures
        if failures and len(failures) == len(self._fresh_refusals):
            # Every failure is a refusal remembered for the next run (_NamedDelivery).
            failures.clear()
            raise self._refusals_met()
        if failures:
            first = failures[0]
            raise kafka_error(
                first.error,
                f"Kafka did not accept a record for topic {first.topic!r}; nothing after LSN"
                f" {format_lsn(self._tracker.confirmed)} was confirmed",
                topic=first.topic,
            )

    # --- waiting ------------------------------------------------------------------------

    def _wait(
        self, ready: Callable[[], bool], *, timeout: float | None = None, report: bool = True
    ) -> None:
        """Backpressure: poll Kafka (which frees its queue and serves acks) until
        ``ready``; call ``on_wait`` meanwhile, so the slot keeps hearing from us.
        ``report``: log and count it as backpressure (not for a synchronous write)."""
        if ready():
            return
        started = self._clock()
        logged = False
        while not ready():
            self._poll(WAIT_STEP_S)
            if not self._exactly_once:
                self._raise_failures()
            self.on_wait()
            if report and not logged:
                logged = self._log_backpressure(started, bytes_limit=False)
            if timeout is not None and self._clock() - started > timeout:
                raise SinkError(
                    f"Kafka did not acknowledge {len(self._producer)} records within"
                    f" {timeout:.0f}s; nothing after LSN {format_lsn(self.confirmed)} was"
                    " confirmed"
                )
        if report:
            self._waited(started, logged=logged)

    def _log_backpressure(self, started: float, *, bytes_limit: bool) -> bool:
        """Log a wait once it lasted ``BACKPRESSURE_LOG_AFTER_S``: shorter ones are the
        flow control of a stream at full speed (dozens a second while a backlog drains),
        counted in ``cdc_backpressure_seconds_total`` but not news."""
        if self._clock() - started < BACKPRESSURE_LOG_AFTER_S:
            return False
        extra = {"bytes": True} if bytes_limit else {}
        self._log.info("kafka_backpressure_started", in_flight=len(self._producer), **extra)
        return True

    def _waited(self, started: float, *, logged: bool) -> None:
        waited = self._clock() - started
        metrics.BACKPRESSURE_SECONDS.labels(**self._labels).inc(waited)
        if logged:
            self._log.info("kafka_backpressure_ended", waited_s=round(waited, 3))

    def _refused(
        self, exc: KafkaException, record: Record, reached: Position | None, on_delivery: Any
    ) -> None:
        """Kafka refused ``record`` at produce time: stop ("stop, never drop"), or, with a
        dead-letter topic, put it there instead and go on.

        The dead-letter record takes the original's place in the unit (the same Kafka
        transaction, or the same source transaction's acknowledgements), so it is
        published exactly as the records around it are. Its value is the original's,
        unless the original is too large (then it could not go either): a small JSON
        document describing it.

        Raises:
            SinkError: no dead-letter topic, a refusal that is not the record's fault, or
                the dead-letter record refused too.
        """
        if self._dead_letter_topic is None or not is_record_refused(exc):
            raise self._rejected(exc, record, reached) from exc
        refusal = _refusal_of(error_of(exc))
        self._dead_letter(
            record,
            reached,
            refusal,
            on_delivery,
            send_original=not refusal.too_large,  # over message.max.bytes: it fits nowhere
        )

    def _dead_letter(
        self,
        record: Record,
        reached: Position | None,
        refusal: Refusal,
        on_delivery: Any,
        *,
        send_original: bool,
    ) -> None:
        """Produce the dead-letter record of ``record``, refused as ``refusal`` says: its
        original value when ``send_original`` (and the dead-letter topic takes it), else a
        description."""
        topic = self._dead_letter_topic
        assert topic is not None
        code, message, too_large = refusal.code, refusal.message, refusal.too_large
        reason = "too_large" if too_large else "refused"
        size = len(record.value or b"")
        headers: list[tuple[str, bytes]] = [
            *(record.headers or ()),
            ("cdc.dead_letter.topic", record.topic.encode()),
            ("cdc.dead_letter.reason", reason.encode()),
            ("cdc.dead_letter.error_code", code.encode()),
            ("cdc.dead_letter.error", message.encode()),
            ("cdc.dead_letter.value_bytes", str(size).encode()),
        ]
        if record.key is not None:
            headers.append(("cdc.dead_letter.key", record.key))
        lsn = None if reached is None else format_lsn(reached.lsn)
        description = orjson.dumps(
            {
                "dead_letter": reason,
                "topic": record.topic,
                "key": None if record.key is None else record.key.decode(errors="replace"),
                "key_bytes": len(record.key or b""),
                "value_bytes": size,
                "tombstone": record.value is None,
                "lsn": lsn,
                "error": {"code": code, "message": message},
            }
        )
        original = send_original
        value = record.value if original else description
        headers.append(("cdc.dead_letter.value", b"original" if original else b"description"))
        while True:
            try:
                self._producer.produce(
                    topic, value, record.key, headers=headers, on_delivery=on_delivery
                )
                break
            except BufferError:
                self._poll(WAIT_STEP_S)
                self.on_wait()
            except KafkaException as again:
                if original and is_record_refused(again):
                    original = False
                    value = description
                    headers[-1] = ("cdc.dead_letter.value", b"description")
                    continue
                where = (
                    f"the dead-letter record in {topic!r} for a refused record of {record.topic!r}"
                )
                if lsn is not None:
                    where += f" (transaction at LSN {lsn})"
                raise self._error(again, f"Kafka refuses {where}", topic=topic) from again
        metrics.DEAD_LETTER_RECORDS.labels(reason=reason, **self._labels).inc()
        self._log.warning(
            "record_dead_lettered",
            topic=record.topic,
            dead_letter_topic=topic,
            reason=reason,
            value_bytes=size,
            lsn=lsn,
            error=f"{code}: {message}",
            value="original" if original else "description",
        )

    def _produce_alone(self, record: Record, on_delivery: Any, refusals: RefusedRecords) -> None:
        """A record refused at delivery before, perhaps only for the batch it was in:
        produced in a batch of its own (everything before it acknowledged, then it). A
        refusal now is its own and restarts the run, which dead-letters it."""
        self._wait(lambda: not len(self._producer), report=False)
        refusals.trying(record)
        self._produce(record, on_delivery)
        self._wait(lambda: not len(self._producer), report=False)
        if self._fresh_refusals:
            raise self._refusals_met()
        refusals.delivered(record)

    def remember_refusal(self, err: Any, record: Record) -> None:
        """A record's delivery failed (``_NamedDelivery``): keep a refusal that is the
        record's own fault for the next run. Anything else (not the record's fault, no
        position to find it by, the dead-letter topic refusing too) stays what it was: an
        error that stops the connector."""
        refusals = self._refusals
        if refusals is None or not is_record_refused(err):
            return
        if record.topic == self._dead_letter_topic:
            return  # the dead-letter topic refuses too: stop, never drop
        refusal = _refusal_of(err)
        if refusals.add(record.topic, record.key, record.headers, refusal):
            self._fresh_refusals.append((record.topic, refusal))

    def _serve_refusals(self) -> None:
        """Serve callbacks still queued (the acknowledgements of a failed commit)."""
        if self._refusals is not None:
            # A poll error here is the commit's, which the caller raises either way.
            with contextlib.suppress(KafkaException):
                self._producer.poll(0)

    def _refusals_met(self) -> SinkError:
        """The error that restarts the connector after refusals at delivery: everything
        after the last commit is published again, those records to the dead letters."""
        fresh, self._fresh_refusals = self._fresh_refusals, []
        if self._exactly_once:
            self._abort_quietly()
        topic, refusal = fresh[0]
        self._log.warning(
            "records_refused_at_delivery",
            records=len(fresh),
            topic=topic,
            error=f"{refusal.code}: {refusal.message}",
            dead_letter_topic=self._dead_letter_topic,
        )
        return SinkError(
            f"Kafka refused {len(fresh)} record(s) at delivery ({refusal.code} for topic"
            f" {topic!r}): the connector restarts from the last committed position and"
            f" sends them to the dead-letter topic {self._dead_letter_topic!r}; nothing"
            f" after LSN {format_lsn(self.confirmed)} was confirmed",
            topic=topic,
            retryable=True,
        )

    def _rejected(self, exc: BaseException, record: Record, reached: Position | None) -> SinkError:
        size = len(record.value or b"") + len(record.key or b"")
        where = f"the record for topic {record.topic!r} ({size} bytes"
        if reached is not None:
            where += f", transaction at LSN {format_lsn(reached.lsn)}"
        return self._error(exc, f"Kafka refuses {where})", topic=record.topic)

    # --- the end ------------------------------------------------------------------------

    def finish(self, timeout: float) -> None:
        """A clean stop: make everything published durable (commit, or wait for every
        acknowledgement), so a restart repeats nothing.

        Raises:
            SinkError: Kafka did not take it all within ``timeout``.
        """
        if self._exactly_once:
            if self._unit_open:
                # Stopped halfway through a unit: committing would publish half of it,
                # and the restart would publish it whole again.
                self._abort_quietly()
                return
            self.commit()
            return
        self._wait(lambda: not len(self._producer), timeout=timeout, report=False)
        self._raise_failures()
        self._release_state()
        self._wait(lambda: not len(self._producer), timeout=timeout, report=False)
        self._raise_state_failures()

    def abandon(self) -> None:
        """Another instance may own the connector now (a fleet lost it): commit nothing
        more, and let ``close`` drop what is in flight rather than wait for it."""
        self._abandoned = True

    def close(self) -> None:
        """Leave nothing behind: abort an open transaction, let in-flight requests
        resolve (bounded; not when abandoned), purge the rest and close the producer, so
        no late delivery of this run lands after the next run's records."""
        producer = self._producer
        # Its handle dies with the producer: nothing may be produced through it after.
        self._native_produce = None
        try:
            if self._in_transaction:
                self._abort_quietly()
            producer.purge(in_queue=True, in_flight=False)
            if producer.flush(0 if self._abandoned else CLOSE_FLUSH_S):
                producer.purge(in_queue=True, in_flight=True)
                producer.flush(0)
            if not self._fatal:  # close() would try to abort, which a fatal error forbids
                producer.close()
        except KafkaException as exc:
            self._log.warning("kafka_producer_close_failed", error=str(exc))


def _refusal_of(error: Any) -> Refusal:
    """What a dead-letter record says of the ``KafkaError`` that refused its original."""
    return Refusal(str(error.name()), str(error.str()), is_too_large(error))


class _NamedDelivery:
    """A record's delivery callback when a dead-letter topic is set: it knows which
    record it is for (librdkafka's delivery report carries no headers), so a refusal at
    delivery is remembered by name; then the sink's own callback, if any, runs."""

    __slots__ = ("_base", "_record", "_sink")

    def __init__(self, sink: KafkaSink, record: Record, base: Any) -> None:
        self._sink = sink
        self._record = record
        self._base = base

    def __call__(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._sink.remember_refusal(err, self._record)
        if self._base is not None:
            self._base(err, msg)
