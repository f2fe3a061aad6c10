"""The confirmed LSN never passes an unacknowledged record."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cdc.positions import PositionTracker


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
