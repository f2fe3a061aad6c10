"""The sink: what is confirmed to the slot, when, in each delivery mode, under trouble."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import structlog
import structlog.testing
from confluent_kafka import KafkaError, KafkaException

from cdc.envelope import Record
from cdc.errors import FencedError, RecordTooLargeError, SinkError, Stopped
from cdc.kafka.sink import NATIVE_BATCH, POSITION_KEY, DeliveryMode, KafkaSink
from cdc.positions import COMPLETE, CommitPolicy, Position, StoredPosition

from .fakes import FakeProducer, abortable

STATE = "c.__cdc_state"
POLICY = CommitPolicy(interval_s=0.1, max_records=1000)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    producer: FakeProducer,
    mode: DeliveryMode = "exactly_once",
    *,
    policy: CommitPolicy = POLICY,
    max_in_flight: int = 100,
    clock: Clock | None = None,
    confirmed: int = 100,
    durable: StoredPosition | None = None,
    native_produce: Any = None,
    dead_letter_topic: str | None = None,
) -> KafkaSink:
    sink = KafkaSink(
        producer,
        mode=mode,
        state_topic=STATE,
        max_in_flight=max_in_flight,
        policy=policy,
        transactional_id="cdc-c",
        connector="c",
        log=structlog.get_logger("test"),
        clock=clock or Clock(),
        native_produce=native_produce,
        dead_letter_topic=dead_letter_topic,
    )
    sink.start(confirmed=confirmed, durable=durable, system_id="sys", slot="s")
    return sink


def records(n: int, topic: str = "t") -> list[Record]:
    return [Record(topic, f"k{i}".encode(), f"v{i}".encode()) for i in range(n)]


def one_transaction(sink: KafkaSink, lsn: int, end_lsn: int, n: int = 2) -> None:
    """A source transaction of ``n`` records in one unit, then its commit."""
    sink.publish(records(n), Position(lsn, 1))
    sink.end_group(end_lsn=end_lsn, commit_ts_us=1, reached=Position(lsn, COMPLETE))


# --- exactly_once ---------------------------------------------------------------------------


def test_exactly_once_records_are_visible_and_confirmed_only_after_the_commit() -> None:
    producer = FakeProducer()
    sink = make(producer)
    one_transaction(sink, 200, 250)
    sink.service()
    assert producer.visible == []
    assert sink.confirmed == 100
    sink.service(idle_boundary=True)
    assert [r.value for r in producer.visible_on("t")] == [b"v0", b"v1"]
    assert sink.confirmed == 250
    assert sink.durable == Position(200, COMPLETE)


def test_the_position_reached_is_stored_in_the_same_transaction() -> None:
    producer = FakeProducer()
    sink = make(producer)
    one_transaction(sink, 200, 250)
    sink.commit()
    (state,) = producer.visible_on(STATE)
    assert state.key == POSITION_KEY
    assert state.transaction == producer.visible_on("t")[0].transaction
    stored = StoredPosition.from_json(state.value or b"")
    assert stored == StoredPosition(Position(200, COMPLETE), 250, "sys", "s")


def test_state_records_go_with_the_records_they_describe() -> None:
    producer = FakeProducer()
    sink = make(producer)
    sink.publish(records(1), Position(200, 1))
    sink.save_state(b"schemas", b"old")
    sink.save_state(b"schemas", b"new")
    sink.commit()
    assert [(r.key, r.value) for r in producer.visible_on(STATE) if r.key == b"schemas"] == [
        (b"schemas", b"new")
    ]


def test_a_large_transaction_is_committed_in_parts_confirming_only_what_is_whole() -> None:
    producer = FakeProducer()
    sink = make(producer, policy=CommitPolicy(interval_s=60, max_records=3))
    for seq in range(1, 5):
        sink.publish(records(1), Position(200, seq))
        sink.service()
    assert sink.durable == Position(200, 3)
    assert sink.confirmed == 100  # the source transaction is not whole yet
    sink.end_group(end_lsn=250, commit_ts_us=1, reached=Position(200, COMPLETE))
    sink.commit()
    assert sink.confirmed == 250


def test_commits_come_after_the_interval_under_load() -> None:
    clock = Clock()
    producer = FakeProducer()
    sink = make(producer, clock=clock, policy=CommitPolicy(interval_s=0.1, max_records=10**6))
    one_transaction(sink, 200, 250)
    sink.service()
    assert producer.transactions == 1
    assert "commit" not in producer.calls
    clock.now += 0.2
    sink.service()
    assert "commit" in producer.calls


def test_a_transaction_skipped_on_resume_is_confirmed_at_once() -> None:
    sink = make(FakeProducer())
    sink.end_group(end_lsn=300, commit_ts_us=1, reached=Position(280, COMPLETE))
    assert sink.confirmed == 300


def test_an_abortable_commit_aborts_and_confirms_nothing() -> None:
    producer = FakeProducer(commit_error=abortable())
    sink = make(producer)
    one_transaction(sink, 200, 250)
    with pytest.raises(SinkError) as info:
        sink.commit()
    assert info.value.retryable
    assert "aborted" in str(info.value)
    assert producer.calls[-1] == "abort"
    assert producer.visible == []
    assert sink.confirmed == 100


def test_a_commit_that_times_out_is_retried_while_the_slot_hears_from_us() -> None:
    producer = FakeProducer(commit_timeouts=2)
    sink = make(producer)
    waits: list[int] = []
    sink.on_wait = lambda: waits.append(1)
    one_transaction(sink, 200, 250)
    sink.commit()
    assert len(waits) == 2
    assert sink.confirmed == 250


def test_a_fenced_producer_stops_the_connector_and_is_not_retried() -> None:
    producer = FakeProducer()
    sink = make(producer)
    one_transaction(sink, 200, 250)
    producer.fenced = True
    with pytest.raises(FencedError) as info:
        sink.commit()
    assert not info.value.retryable
    assert "another cdc instance" in str(info.value)
    assert sink.confirmed == 100


def test_init_transactions_when_fenced_is_a_fenced_error() -> None:
    producer = FakeProducer(fenced=True)
    with pytest.raises(FencedError):
        make(producer).init_transactions()


def test_keepalive_confirms_the_server_position_only_when_nothing_waits() -> None:
    sink = make(FakeProducer())
    sink.keepalive(500)
    assert sink.confirmed == 500
    one_transaction(sink, 600, 650)
    sink.keepalive(700)
    assert sink.confirmed == 500
    sink.commit()
    sink.keepalive(700)
    assert sink.confirmed == 700


def test_a_stop_in_the_middle_of_a_unit_aborts_instead_of_committing_half() -> None:
    producer = FakeProducer(auto_ack=False)
    sink = make(producer)
    sink.publish(records(1), Position(200, 1))

    def stop() -> None:
        raise Stopped

    sink.on_wait = stop
    producer.buffer_errors = 2  # the unit's second record finds the queue full
    with pytest.raises(Stopped):
        sink.publish(records(2), Position(200, 2))
    producer.auto_ack = True
    sink.finish(1.0)
    assert producer.calls[-1] == "abort"
    assert producer.visible == []


def test_a_clean_stop_commits_what_was_published() -> None:
    producer = FakeProducer()
    sink = make(producer)
    one_transaction(sink, 200, 250)
    sink.finish(1.0)
    assert sink.confirmed == 250
    assert len(producer.visible_on("t")) == 2


def test_store_state_is_durable_when_it_returns() -> None:
    producer = FakeProducer()
    make(producer).store_state(b"start", b"m1")
    assert [(r.key, r.value) for r in producer.visible_on(STATE)] == [(b"start", b"m1")]


# --- backpressure (both modes) --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["exactly_once", "at_least_once"])
def test_a_full_queue_waits_polls_keeps_the_slot_informed_and_loses_nothing(
    mode: DeliveryMode,
) -> None:
    """librdkafka refuses on bytes (BufferError) long before our record count: the sink
    polls (which frees the queue), calls back (status updates), then produces again."""
    producer = FakeProducer(buffer_errors=5)
    sink = make(producer, mode)
    waits: list[int] = []
    sink.on_wait = lambda: waits.append(1)
    one_transaction(sink, 200, 250, n=3)
    sink.finish(1.0)
    assert len(waits) >= 5  # at least once per refusal
    assert [r.value for r in producer.visible_on("t")] == [b"v0", b"v1", b"v2"]
    assert sink.confirmed == 250


@pytest.mark.parametrize("mode", ["exactly_once", "at_least_once"])
def test_more_records_in_flight_than_allowed_wait_for_acks(mode: DeliveryMode) -> None:
    producer = FakeProducer(auto_ack=False)
    sink = make(producer, mode, max_in_flight=4)
    acked: list[int] = []

    def broker_catches_up() -> None:
        acked.append(producer.ack(2))

    sink.on_wait = broker_catches_up
    sink.publish(records(5), Position(200, 1))
    assert len(producer) < 2
    assert acked


def test_a_stop_during_backpressure_leaves_the_wait() -> None:
    producer = FakeProducer(auto_ack=False, max_queued=1)
    sink = make(producer, "at_least_once")

    def stop() -> None:
        raise Stopped

    sink.on_wait = stop
    with pytest.raises(Stopped):
        sink.publish(records(2), Position(200, 1))


def test_a_record_too_large_is_a_clear_error_not_retried() -> None:
    producer = FakeProducer()

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"))

    producer.produce = refuse  # type: ignore[method-assign]
    sink = make(producer, "at_least_once")
    with pytest.raises(RecordTooLargeError) as info:
        sink.publish(records(1), Position(200, 1))
    assert not info.value.retryable
    assert "message.max.bytes" in str(info.value)
    assert "'t'" in str(info.value)


# --- at_least_once --------------------------------------------------------------------------


def test_at_least_once_confirms_a_transaction_once_all_its_records_are_acked() -> None:
    producer = FakeProducer(auto_ack=False)
    sink = make(producer, "at_least_once")
    one_transaction(sink, 200, 250)
    producer.ack(1)
    assert sink.confirmed == 100
    producer.ack(1)
    assert sink.confirmed == 250


def test_at_least_once_writes_state_only_after_what_it_describes_is_acked() -> None:
    producer = FakeProducer(auto_ack=False)
    sink = make(producer, "at_least_once")
    sink.publish(records(1), Position(200, 1))
    sink.save_state(b"schemas", b"v2")
    sink.end_group(end_lsn=250, commit_ts_us=1, reached=Position(200, COMPLETE))
    sink.service()
    assert [r.key for r in producer.produced if r.topic == STATE] == []
    producer.ack()
    sink.service()
    assert [r.key for r in producer.produced if r.topic == STATE] == [b"schemas"]


def test_a_failed_state_write_is_an_error_never_silence() -> None:
    producer = FakeProducer(auto_ack=False)
    sink = make(producer, "at_least_once")
    sink.save_state(b"snapshot", b"{}")  # nothing outstanding: written at once
    producer.delivery_error = KafkaError(KafkaError._MSG_TIMED_OUT, "timed out")
    producer.ack()
    with pytest.raises(SinkError) as info:
        sink.service()
    assert STATE in str(info.value)


def test_a_refused_record_stops_confirming_and_says_from_where_it_restarts() -> None:
    producer = FakeProducer(delivery_error=KafkaError(KafkaError._MSG_TIMED_OUT, "timed out"))
    sink = make(producer, "at_least_once")
    one_transaction(sink, 200, 250)
    with pytest.raises(SinkError) as info:
        sink.service()
    assert info.value.retryable
    assert "0/64" in str(info.value)
    assert sink.confirmed == 100


def test_a_transaction_with_nothing_published_is_confirmed_at_once() -> None:
    sink = make(FakeProducer(), "at_least_once")
    sink.end_group(end_lsn=300, commit_ts_us=1, reached=Position(280, COMPLETE))
    assert sink.confirmed == 300


def test_at_least_once_finish_fails_loudly_when_kafka_does_not_acknowledge() -> None:
    clock = Clock()
    producer = FakeProducer(auto_ack=False)
    sink = make(producer, "at_least_once", clock=clock)
    one_transaction(sink, 200, 250)

    def time_passes() -> None:
        clock.now += 1

    sink.on_wait = time_passes
    with pytest.raises(SinkError) as info:
        sink.finish(3.0)
    assert "did not acknowledge 2 records" in str(info.value)


# --- closing ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["exactly_once", "at_least_once"])
def test_close_lets_in_flight_requests_resolve_purges_the_rest_and_closes(
    mode: DeliveryMode,
) -> None:
    """After an error the old producer must not deliver late (after the new one)."""
    producer = FakeProducer(auto_ack=False)
    sink = make(producer, mode)
    sink.publish(records(2), Position(200, 1))
    sink.close()
    assert producer.closed
    assert "purge(in_queue=True, in_flight=False)" in producer.calls
    assert producer.in_flight == []
    if mode == "exactly_once":
        assert "abort" in producer.calls  # invisible to read_committed consumers
    else:
        assert "purge(in_queue=True, in_flight=True)" in producer.calls  # acks never came


def test_stored_position_round_trips_and_refuses_garbage() -> None:
    stored = StoredPosition(Position(1, 2), 3, "sys", "slot")
    assert StoredPosition.from_json(stored.to_json()) == stored
    for bad in (b"[", b"{}", orjson.dumps({"version": 9}), orjson.dumps({"version": 1})):
        with pytest.raises(ValueError, match="stream position"):
            StoredPosition.from_json(bad)
    wrong_type = orjson.dumps(
        {"version": 1, "lsn": "1", "seq": 0, "confirm_lsn": 0, "system_id": "", "slot": ""}
    )
    with pytest.raises(ValueError, match="integers"):
        StoredPosition.from_json(wrong_type)


@pytest.mark.parametrize("first", ["produce", "poll"])
def test_a_bare_fatal_error_is_reported_with_its_cause_fencing(first: str) -> None:
    """confluent-kafka raises a fatal error from the poll that serves it, once; produce
    fails with a bare "Local: Fatal error" (without the fatal flag). Either way the cause
    is reported: another instance fenced us. That must stop the connector, not restart
    it (a restart would fence the other back)."""
    producer = FakeProducer()
    sink = KafkaSink(
        producer, mode="exactly_once", state_topic=STATE, max_in_flight=100, policy=POLICY,
        transactional_id="cdc-c", log=structlog.get_logger("test"),
    )  # fmt: skip
    sink.start(confirmed=100, durable=None, system_id="sys", slot="s")
    producer.fatal_error = KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)

    def call() -> None:
        if first == "poll":
            sink.service()
        else:
            sink.publish(records(1), Position(200, 1))

    with pytest.raises(FencedError) as info:
        call()
    assert not info.value.retryable
    assert "fenced by a newer instance" in str(info.value)
    sink.close()
    assert not producer.closed  # an unusable producer is not asked to abort on close


# --- the compiled produce path ---------------------------------------------------------------


class FakeNativeProduce:
    """``cdc.kafka.native_produce``'s ``produce`` over a FakeProducer: hands records to it
    in order, but stops once at each index in ``refuse`` (librdkafka's queue full, or a
    record left to confluent-kafka), as the compiled one does."""

    def __init__(self, producer: FakeProducer, refuse: set[int] | None = None) -> None:
        self.producer = producer
        self.refuse = set(refuse or ())
        self.calls: list[int] = []

    def __call__(self, records: list[Record], start: int) -> tuple[int, int]:
        self.calls.append(start)
        for index in range(start, len(records)):
            if index in self.refuse:
                self.refuse.discard(index)
                return index, KafkaError._QUEUE_FULL
            record = records[index]
            # Queued directly: the fake broker's BufferErrors are for the reference path.
            held, self.producer.buffer_errors = self.producer.buffer_errors, 0
            self.producer.produce(record.topic, record.value, record.key, headers=record.headers)
            self.producer.buffer_errors = held
        return len(records), 0


def test_exactly_once_hands_a_unit_to_the_compiled_path_in_one_call() -> None:
    producer = FakeProducer()
    native = FakeNativeProduce(producer)
    sink = make(producer, native_produce=native)
    one_transaction(sink, 200, 250, n=5)
    sink.service(idle_boundary=True)
    assert native.calls == [0]
    assert [r.value for r in producer.visible_on("t")] == [b"v0", b"v1", b"v2", b"v3", b"v4"]
    assert sink.confirmed == 250


def test_a_record_the_compiled_path_refuses_takes_confluent_kafkas_and_order_holds() -> None:
    """The refused record is produced by the reference path (here through a full queue,
    waiting for room), then the compiled path goes on after it."""
    producer = FakeProducer(buffer_errors=2)
    native = FakeNativeProduce(producer, refuse={1, 3})
    sink = make(producer, native_produce=native)
    one_transaction(sink, 200, 250, n=5)
    sink.service(idle_boundary=True)
    assert native.calls == [0, 2, 4]
    assert [r.value for r in producer.visible_on("t")] == [b"v0", b"v1", b"v2", b"v3", b"v4"]
    assert sink.confirmed == 250


def test_a_dead_letter_topic_keeps_every_record_on_the_reference_path() -> None:
    """Refusals at delivery must be known by name: every record needs its own report."""
    producer = FakeProducer()
    native = FakeNativeProduce(producer)
    sink = make(producer, native_produce=native, dead_letter_topic="c.__cdc_dead_letters")
    one_transaction(sink, 200, 250, n=2)
    sink.service(idle_boundary=True)
    assert native.calls == []
    assert [r.value for r in producer.visible_on("t")] == [b"v0", b"v1"]


def test_at_least_once_never_takes_the_compiled_path() -> None:
    """Its acknowledgements are the per-record delivery reports the compiled path skips."""
    producer = FakeProducer()
    native = FakeNativeProduce(producer)
    sink = make(producer, "at_least_once", native_produce=native)
    one_transaction(sink, 200, 250, n=2)
    sink.service()
    assert native.calls == []
    assert sink.confirmed == 250


def test_a_unit_encoded_as_it_is_produced_reaches_the_compiled_path_in_bounded_lists() -> None:
    """An incremental snapshot chunk is an iterator: it is taken NATIVE_BATCH records at
    a time, never whole, and each record is produced once, in order."""
    producer = FakeProducer()
    native = FakeNativeProduce(producer)
    sink = make(producer, native_produce=native)
    count = NATIVE_BATCH * 2 + 3
    sink.publish(iter(records(count)), Position(200, 1))
    sink.end_group(end_lsn=250, commit_ts_us=1, reached=Position(200, COMPLETE))
    sink.service(idle_boundary=True)
    assert native.calls == [0, 0, 0]  # three lists: two full, one of 3
    assert [r.value for r in producer.visible_on("t")] == [b"v%d" % i for i in range(count)]
    assert sink.confirmed == 250


def test_a_short_backpressure_wait_is_counted_but_not_logged() -> None:
    """Waits of a stream at full speed are flow control, dozens a second: not news."""
    with structlog.testing.capture_logs() as logs:
        producer = FakeProducer(buffer_errors=2)
        sink = make(producer)
        one_transaction(sink, 200, 250, n=3)
    assert not [e for e in logs if e["event"].startswith("kafka_backpressure")]


def test_a_backpressure_wait_longer_than_a_second_is_logged_once() -> None:
    clock = Clock()
    with structlog.testing.capture_logs() as logs:
        producer = FakeProducer(buffer_errors=6)
        sink = make(producer, clock=clock)

        def later() -> None:
            clock.now += 0.5

        sink.on_wait = later
        one_transaction(sink, 200, 250, n=3)
    events = [e["event"] for e in logs if e["event"].startswith("kafka_backpressure")]
    assert events == ["kafka_backpressure_started", "kafka_backpressure_ended"]
