"""The stream loop end to end over fakes: replayed frames in, a fake producer out.

What is confirmed to the slot, what a ``read_committed`` consumer sees, and what a
restart after a crash publishes: no change lost or repeated, in either mode.
"""

from __future__ import annotations

import threading
from collections import Counter

import orjson
import pytest
import structlog

from cdc.errors import FencedError, SinkError
from cdc.kafka.sink import POSITION_KEY, DeliveryMode, KafkaSink
from cdc.positions import COMPLETE, CommitPolicy, Position, StoredPosition
from cdc.protocol.messages import Begin, Commit, PgoutputMessage, Relation
from cdc.protocol.pgoutput import PgoutputDecoder
from cdc.stream import loop as loop_module
from cdc.stream.loop import StreamLoop, StreamTimings
from cdc.stream.router import ChangeRouter, RelationInfo
from cdc.stream.schema_changes import SCHEMA_STATE_KEY
from cdc.stream.schema_history import SchemaHistory

from .fakes import FakeProducer, FakeSource, abortable, frames, keepalive
from .test_router import ITEMS, _insert, info, make_router

STATE = "c.__cdc_state"


def transaction(lsn: int, *keys: int) -> list[tuple[int, PgoutputMessage]]:
    """Begin at ``lsn``, one insert per key, commit at ``lsn + 100`` ending at +150."""
    return [
        (lsn, Begin(lsn + 100, 0, 7)),
        *((lsn + 10 + i, _insert(key)) for i, key in enumerate(keys)),
        (lsn + 100, Commit(0, lsn + 100, lsn + 150, 0)),
    ]


def stream(*transactions: list[tuple[int, PgoutputMessage]]) -> list[tuple[int, PgoutputMessage]]:
    return [(1, ITEMS), *(m for tx in transactions for m in tx)]


class Run:
    """One pipeline run: frames through a loop into a sink over a fake producer."""

    def __init__(
        self,
        messages: list[tuple[int, PgoutputMessage]],
        *,
        producer: FakeProducer | None = None,
        mode: DeliveryMode = "exactly_once",
        router: ChangeRouter | None = None,
        max_records: int = 1000,
        stop_after: int | None = None,
        confirmed: int = 100,
    ) -> None:
        self.stop = threading.Event()
        self.producer = FakeProducer() if producer is None else producer
        self.sink = KafkaSink(
            self.producer,
            mode=mode,
            state_topic=STATE,
            max_in_flight=1000,
            policy=CommitPolicy(interval_s=60, max_records=max_records),
            transactional_id="cdc-c",
            connector="c",
            log=structlog.get_logger("test"),
        )
        self.sink.start(confirmed=confirmed, durable=None, system_id="sys", slot="s")
        self.source = FakeSource(frames(messages), on_empty=self.stop.set)
        self.router = router or make_router(schema_changes="topic")
        if stop_after is not None:
            read = self.source.read
            count = [0]

            def read_then_stop() -> bytes | None:
                count[0] += 1
                if count[0] == stop_after:
                    self.stop.set()
                return read()

            self.source.read = read_then_stop  # type: ignore[method-assign]
        self.loop = StreamLoop(
            source=self.source,
            decoder=PgoutputDecoder(4),
            router=self.router,
            sink=self.sink,
            stop=self.stop,
            relation_info=self.relation_info,
            handle=lambda _effect: None,
            periodic=lambda: None,
            durable=None,
            observe_latency=lambda _completed: None,
            log=structlog.get_logger("test"),
            timings=StreamTimings(drain_timeout_s=5.0, shutdown_timeout_s=1.0),
            start_lsn=confirmed,
        )

    @staticmethod
    def relation_info(relation: Relation) -> RelationInfo:
        return info(relation)

    def keys(self) -> list[int]:
        """Keys of the retention records a read_committed consumer sees."""
        return [
            orjson.loads(r.key or b"")["id"] for r in self.producer.visible_on("c.public.items")
        ]


def test_the_slot_is_confirmed_to_the_end_of_what_kafka_committed() -> None:
    run = Run(stream(transaction(1000, 1, 2), transaction(2000, 3)))
    run.loop.run()
    assert run.keys() == [1, 2, 3]
    assert run.source.confirmed()[-1] == 2150
    assert run.sink.durable == Position(2100, COMPLETE)


def test_a_keepalive_between_transactions_moves_an_idle_slot_forward() -> None:
    run = Run(stream(transaction(1000, 1)))
    run.source.frames += [None, keepalive(9000, reply=True)]  # idle: the commit, then it
    run.loop.run()
    assert run.source.confirmed()[-1] == 9000


def test_a_keepalive_asking_for_a_reply_is_answered_at_once() -> None:
    run = Run([(1, ITEMS)])
    run.source.frames.insert(0, keepalive(500, reply=True))
    run.loop.run()
    assert run.source.confirmed()[0] == 500


def test_sigterm_mid_transaction_at_least_once_finishes_the_transaction() -> None:
    """Regression: a stop mid-transaction repeated the transaction on restart."""
    messages = stream(transaction(1000, 1, 2, 3))
    run = Run(messages, mode="at_least_once", stop_after=3)  # after BEGIN and one insert
    run.loop.run()
    assert run.keys() == [1, 2, 3]
    assert run.source.confirmed()[-1] == 1150  # whole: a restart sends none of it again


def test_sigterm_mid_transaction_exactly_once_commits_the_whole_units_read() -> None:
    messages = stream(transaction(1000, 1, 2, 3))
    run = Run(messages, stop_after=3)  # after BEGIN and one insert
    run.loop.run()
    assert run.keys() == [1]
    assert run.source.confirmed()[-1] == 100  # the transaction is not whole yet
    stored = [r for r in run.producer.visible_on(STATE) if r.key == POSITION_KEY]
    position = StoredPosition.from_json(stored[-1].value or b"").reached
    resumed = Run(messages, router=make_router(schema_changes="topic", resume=position))
    resumed.loop.run()
    assert run.keys() + resumed.keys() == [1, 2, 3]


@pytest.mark.parametrize("crash_after", range(3, 12))
def test_a_crash_at_any_moment_loses_and_repeats_nothing_exactly_once(crash_after: int) -> None:
    """Kafka transactions of 3 records; the process dies after ``crash_after`` frames:
    what its committed transactions hold plus what the restart publishes is every row,
    once."""
    messages = stream(transaction(1000, 1, 2, 3, 4), transaction(2000, 5, 6), transaction(3000, 7))
    first = Run(messages, max_records=3)
    first.source.frames = first.source.frames[:crash_after]
    first.source.on_empty = None
    read = first.source.read

    def crash() -> bytes | None:
        data = read()
        if data is None:
            raise SystemExit  # the process is gone: nothing after this runs
        return data

    first.source.read = crash  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        first.loop.run()
    committed_state = [r for r in first.producer.visible_on(STATE) if r.key == POSITION_KEY]
    resume = (
        StoredPosition.from_json(committed_state[-1].value or b"").reached
        if committed_state
        else None
    )
    second = Run(messages, router=make_router(schema_changes="topic", resume=resume))
    second.loop.run()
    keys = first.keys() + second.keys()
    assert Counter(keys) == Counter(range(1, 8))


def test_a_crash_at_least_once_repeats_but_never_loses() -> None:
    messages = stream(transaction(1000, 1, 2), transaction(2000, 3))
    first = Run(messages, mode="at_least_once")
    first.source.frames = first.source.frames[:5]  # dies inside the second transaction
    first.source.on_empty = None
    read = first.source.read

    def crash() -> bytes | None:
        data = read()
        if data is None:
            raise SystemExit
        return data

    first.source.read = crash  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        first.loop.run()
    second = Run(messages, mode="at_least_once")  # from the slot's position: all again
    second.loop.run()
    assert set(first.keys() + second.keys()) == {1, 2, 3}


def test_a_schema_change_whose_transaction_aborted_is_announced_again() -> None:
    """Regression: the history was stored before its event was acknowledged, so an
    event lost in between was never published again."""
    messages = stream(transaction(1000, 1))
    first = Run(messages, producer=FakeProducer(commit_error=abortable()))
    with pytest.raises(SinkError):
        first.loop.run()
    assert first.producer.visible == []
    stored = {r.key: r.value for r in first.producer.visible_on(STATE)}
    assert SCHEMA_STATE_KEY not in stored
    second = Run(messages, router=make_router(schema_changes="topic", history=SchemaHistory()))
    second.loop.run()
    assert [r.topic for r in second.producer.visible][:1] == ["c.__schema"]
    assert SCHEMA_STATE_KEY in {r.key for r in second.producer.visible_on(STATE)}


def test_an_abortable_commit_stops_the_run_without_confirming_it() -> None:
    run = Run(stream(transaction(1000, 1)), producer=FakeProducer(commit_error=abortable()))
    with pytest.raises(SinkError) as info_:
        run.loop.run()
    assert info_.value.retryable
    assert all(lsn == 100 for lsn in run.source.confirmed())


def test_a_fenced_producer_stops_the_connector_for_good() -> None:
    producer = FakeProducer()
    run = Run(stream(transaction(1000, 1)), producer=producer)
    producer.fenced = True
    with pytest.raises(FencedError):
        run.loop.run()
    assert all(lsn == 100 for lsn in run.source.confirmed())


def test_while_kafka_is_slow_the_slot_still_hears_from_us(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: backpressure answered PostgreSQL only on records, never on bytes."""
    monkeypatch.setattr(loop_module, "CONFIRM_INTERVAL_S", 0.0)
    producer = FakeProducer(buffer_errors=3)
    run = Run(stream(transaction(1000, 1)), producer=producer)
    run.loop.run()
    assert len(run.source.sent) >= 3 + 1
    assert run.keys() == [1]
