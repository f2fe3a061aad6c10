"""The confirmed LSN never passes an unacknowledged record."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc.positions import COMPLETE, CommitPolicy, Position, PositionTracker, TransactionLedger


def _produce(tx: object, n: int) -> None:
    tx.pending += n  # type: ignore[attr-defined]


def test_nothing_confirmed_before_acks() -> None:
    tracker = PositionTracker(10)
    tx = tracker.begin()
    _produce(tx, 2)
    tracker.commit(tx, 100)
    assert tracker.confirmable() == 10
    tx.on_delivery(None, None)
    assert tracker.confirmable() == 10
    tx.on_delivery(None, None)
    assert tracker.confirmable() == 100


def test_later_transaction_acked_first_waits_for_earlier() -> None:
    tracker = PositionTracker(0)
    first, second = tracker.begin(), None
    _produce(first, 1)
    tracker.commit(first, 100)
    second = tracker.begin()
    _produce(second, 1)
    tracker.commit(second, 200)
    second.on_delivery(None, None)
    assert tracker.confirmable() == 0
    first.on_delivery(None, None)
    assert tracker.confirmable() == 200


def test_open_transaction_is_not_confirmed_even_when_acked() -> None:
    tracker = PositionTracker(0)
    tx = tracker.begin()
    _produce(tx, 1)
    tx.on_delivery(None, None)
    assert tracker.confirmable() == 0
    assert not tracker.idle


def test_keepalive_advances_only_when_idle() -> None:
    tracker = PositionTracker(5)
    tracker.on_keepalive(50)
    assert tracker.confirmable() == 50
    tx = tracker.begin()
    _produce(tx, 1)
    tracker.commit(tx, 60)
    tracker.on_keepalive(70)
    assert tracker.confirmable() == 50
    tx.on_delivery(None, None)
    tracker.on_keepalive(70)
    assert tracker.confirmable() == 70


def test_keepalive_never_moves_backwards() -> None:
    tracker = PositionTracker(500)
    tracker.on_keepalive(400)
    assert tracker.confirmed == 500


def test_failure_is_recorded_and_blocks_confirmation() -> None:
    class _Msg:
        def topic(self) -> str:
            return "t"

    tracker = PositionTracker(0)
    tx = tracker.begin()
    _produce(tx, 1)
    tracker.commit(tx, 100)
    tx.on_delivery("boom", _Msg())
    assert tracker.confirmable() == 0
    assert [f.topic for f in tracker.failures] == ["t"]


def test_in_flight_counts_pending_records() -> None:
    tracker = PositionTracker(0)
    tx = tracker.begin()
    _produce(tx, 3)
    tx.on_delivery(None, None)
    assert tracker.in_flight == 2


@given(
    st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=20),
    st.randoms(use_true_random=False),
)
def test_confirmed_is_end_of_longest_fully_acked_prefix(sizes: list[int], rnd: object) -> None:
    tracker = PositionTracker(0)
    deliveries = []
    txs = []
    for i, n in enumerate(sizes):
        tx = tracker.begin()
        _produce(tx, n)
        tracker.commit(tx, (i + 1) * 10)
        txs.append(tx)
        deliveries.extend([i] * n)
    rnd.shuffle(deliveries)  # type: ignore[attr-defined]
    acked = [0] * len(sizes)
    for i in deliveries:
        txs[i].on_delivery(None, None)
        acked[i] += 1
        prefix = 0
        while prefix < len(sizes) and acked[prefix] == sizes[prefix]:
            prefix += 1
        assert tracker.confirmable() == prefix * 10
    assert tracker.confirmable() == len(sizes) * 10


def test_fresh_tracker_confirms_its_start() -> None:
    assert PositionTracker(5).confirmable() == 5
    assert PositionTracker(5).idle


# --- exactly_once: the Kafka transaction ledger -------------------------------------------------


def test_a_position_orders_as_the_stream_does() -> None:
    assert Position(10, 3) < Position(10, COMPLETE) < Position(11, 0)


def test_the_ledger_confirms_only_whole_source_transactions_after_the_commit() -> None:
    ledger = TransactionLedger(100, None)
    ledger.added(2, Position(200, 1), now=0.0)
    ledger.source_ended(Position(200, COMPLETE), 250, commit_ts_us=7)
    ledger.added(1, Position(300, 1), now=0.0)  # the next one, not whole
    assert ledger.confirmed == 100
    assert ledger.committed() == [7]
    assert (ledger.confirmed, ledger.durable) == (250, Position(300, 1))
    assert not ledger.pending


def test_a_batch_of_snapshot_rows_moves_no_stream_position() -> None:
    ledger = TransactionLedger(100, Position(90, COMPLETE))
    ledger.added(5, None, now=0.0)
    ledger.source_ended(None, 0, None)
    ledger.committed()
    assert (ledger.confirmed, ledger.durable) == (100, Position(90, COMPLETE))


def test_an_aborted_transaction_leaves_nothing_durable() -> None:
    ledger = TransactionLedger(100, None)
    ledger.added(2, Position(200, 1), now=0.0)
    ledger.state_added(b"k", b"v", now=0.0)
    ledger.aborted()
    assert not ledger.pending
    assert ledger.committed() == []
    assert (ledger.confirmed, ledger.durable) == (100, None)


def test_state_alone_keeps_a_transaction_open_and_is_written_at_commit() -> None:
    ledger = TransactionLedger(100, None)
    ledger.state_added(b"snapshot", b"1", now=5.0)
    ledger.state_added(b"snapshot", b"2", now=6.0)
    ledger.source_ended(Position(200, COMPLETE), 250, None)  # a chunk of no rows
    assert ledger.pending
    assert ledger.state == {b"snapshot": b"2"}
    assert ledger.opened_at == 5.0
    ledger.committed()
    assert ledger.confirmed == 250


def test_the_ledger_follows_keepalives_only_when_nothing_waits() -> None:
    ledger = TransactionLedger(100, None)
    ledger.keepalive(50)
    assert ledger.confirmed == 100
    ledger.added(1, Position(200, 1), now=0.0)
    ledger.keepalive(300)
    assert ledger.confirmed == 100
    ledger.committed()
    ledger.keepalive(300)
    assert ledger.confirmed == 300


@pytest.mark.parametrize(
    ("records", "age", "idle", "due"),
    [(0, 9.0, True, False), (1, 0.0, True, True), (5, 0.0, False, True), (1, 1.0, False, True),
     (1, 0.0, False, False)],
)  # fmt: skip
def test_commit_policy(records: int, age: float, idle: bool, due: bool) -> None:
    ledger = TransactionLedger(0, None)
    if records:
        ledger.added(records, Position(1, 1), now=10.0)
    policy = CommitPolicy(interval_s=1.0, max_records=5)
    assert policy.due(ledger, 10.0 + age, idle_boundary=idle) is due


def test_the_tracker_releases_state_once_what_it_describes_is_acknowledged() -> None:
    tracker = PositionTracker(0)
    assert not tracker.attach_state(b"k", b"now")  # nothing awaited: written at once
    tx = tracker.begin()
    _produce(tx, 1)
    assert tracker.attach_state(b"k", b"later")
    other = tracker.begin()
    tracker.commit(tx, 10)  # not the open one any more: the open one stays open
    assert tracker.open is other
    tx.on_delivery(None, None)
    tracker.confirmable()
    assert tracker.released_state == [(b"k", b"later")]
