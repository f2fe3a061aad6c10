"""Where the stream stands, and which LSN is safe to confirm, in either delivery mode. No I/O.

The slot's confirmed position is the promise "everything before this is durable
downstream"; PostgreSQL frees WAL behind it and never sends it again. Confirming too early
loses changes on a crash (PAIN-POINTS.md #12), so each mode confirms only what Kafka
durably holds:

- ``at_least_once``: the end LSN of a transaction once Kafka has acknowledged every record
  of that transaction *and of every earlier one* (records of different partitions are
  acknowledged out of order): ``PositionTracker``.
- ``exactly_once``: the end LSN of the last source transaction whose records are in a
  *committed* Kafka transaction: ``TransactionLedger``.

When nothing is in flight, a keepalive's ``wal_end`` may be confirmed as well: the server
has sent us everything before it, and all of it is durable. This keeps the slot moving
while the published tables are idle and other tables are busy, so WAL does not pile up on
the legacy server without a heartbeat table (PAIN-POINTS.md #1).

``Position`` names a point of the stream precisely enough to resume there without
repeating anything (PAIN-POINTS.md #11): an event's own LSN is not enough, since several
messages can share one (transactional logical messages, multi-row commands).
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

import orjson

from cdc.state_records import load_versioned

__all__ = [
    "COMPLETE",
    "POSITION_VERSION",
    "CommitPolicy",
    "DeliveryFailure",
    "Position",
    "PositionTracker",
    "StoredPosition",
    "Transaction",
    "TransactionLedger",
]

#: ``Position.seq`` of a source transaction published to its end.
COMPLETE = 1 << 62


class Position(NamedTuple):
    """A point of the stream, ordered as the stream is.

    ``lsn`` orders the units the walsender sends: the commit LSN of a source transaction
    (``Begin.final_lsn``, the same for all its messages), or the LSN of a
    non-transactional logical message. ``seq`` counts the stream messages of that
    transaction published before this point (``COMPLETE``: all of them). The message
    numbered ``i`` has the identity ``(lsn, i)``, and is already published when
    ``(lsn, i) < reached``.
    """

    lsn: int
    seq: int


class DeliveryFailure:
    """A record Kafka refused for good; the sink turns it into a ``SinkError``."""

    __slots__ = ("error", "topic")

    def __init__(self, error: Any, topic: str | None) -> None:
        self.error = error
        self.topic = topic


class Transaction:
    """One group of records awaiting acknowledgement (a source transaction, or a batch
    of snapshot rows), and the state records to store once they are all acknowledged.

    ``on_delivery`` has confluent-kafka's delivery-callback signature so the producer can
    call it directly: one bound method per transaction, no closure per record.
    """

    __slots__ = ("_failures", "closed", "commit_ts_us", "end_lsn", "pending", "state")

    def __init__(self, failures: list[DeliveryFailure], commit_ts_us: int | None) -> None:
        self.pending = 0
        self.end_lsn = 0
        self.closed = False
        self.commit_ts_us = commit_ts_us
        self.state: list[tuple[bytes, bytes]] = []
        self._failures = failures

    def on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            self.pending -= 1
        else:
            self._failures.append(DeliveryFailure(err, msg.topic() if msg is not None else None))


class PositionTracker:
    """``at_least_once``: tracks groups in order and yields the highest confirmable LSN."""

    __slots__ = ("_confirmed", "_open", "_txs", "completed", "failures", "released_state")

    def __init__(self, start_lsn: int) -> None:
        self._confirmed = start_lsn
        self._txs: deque[Transaction] = deque()
        self._open: Transaction | None = None
        self.failures: list[DeliveryFailure] = []
        # Commit timestamps of transactions that became confirmable, oldest first, for
        # the commit-to-acknowledgement latency metric; the sink drains it.
        self.completed: list[int] = []
        # State records of groups that became confirmable, in order; the sink writes them.
        self.released_state: list[tuple[bytes, bytes]] = []

    @property
    def confirmed(self) -> int:
        """The highest LSN known safe; only grows."""
        return self._confirmed

    @property
    def open(self) -> Transaction | None:
        """The group records are being added to, if any."""
        return self._open

    @property
    def in_flight(self) -> int:
        """Records produced but not yet acknowledged, over all tracked groups."""
        return sum(tx.pending for tx in self._txs)

    @property
    def idle(self) -> bool:
        """No open group and nothing awaiting acknowledgement."""
        self._advance()
        return not self._txs

    def begin(self, commit_ts_us: int | None = None) -> Transaction:
        """Start tracking the next group, in commit order (pgoutput sends them so)."""
        tx = Transaction(self.failures, commit_ts_us)
        self._txs.append(tx)
        self._open = tx
        return tx

    def commit(self, tx: Transaction, end_lsn: int) -> None:
        """The group's last record has been produced; ``end_lsn`` may follow its acks."""
        tx.end_lsn = end_lsn
        tx.closed = True
        if self._open is tx:
            self._open = None

    def attach_state(self, key: bytes, value: bytes) -> bool:
        """Store ``key``/``value`` once every record produced so far is acknowledged.

        Returns False when nothing is awaited: the caller stores it at once.
        """
        if not self._txs:
            return False
        self._txs[-1].state.append((key, value))
        return True

    def on_keepalive(self, wal_end: int) -> None:
        """Confirm the server's position when every record sent before it is acknowledged."""
        self._advance()
        if not self._txs and wal_end > self._confirmed:
            self._confirmed = wal_end

    def confirmable(self) -> int:
        """Pop the acknowledged prefix of groups and return the LSN to confirm."""
        self._advance()
        return self._confirmed

    def _advance(self) -> None:
        txs = self._txs
        while txs:
            tx = txs[0]
            if not tx.closed or tx.pending:
                return
            txs.popleft()
            self._confirmed = max(self._confirmed, tx.end_lsn)
            if tx.commit_ts_us is not None:
                self.completed.append(tx.commit_ts_us)
            if tx.state:
                self.released_state.extend(tx.state)


class CommitPolicy(NamedTuple):
    """``exactly_once``: when the open Kafka transaction is committed.

    At once when the stream has caught up at a source-transaction boundary (the latency
    a consumer sees is then one commit), otherwise once it holds ``max_records`` records
    or has been open ``interval_s``: the cost of a commit is spread over many records,
    and no Kafka transaction comes near ``transaction.timeout.ms``.
    """

    interval_s: float
    max_records: int

    def due(self, ledger: TransactionLedger, now: float, *, idle_boundary: bool) -> bool:
        if not ledger.pending:
            return False
        if idle_boundary:
            return True
        return ledger.records >= self.max_records or now - ledger.opened_at >= self.interval_s


class TransactionLedger:
    """``exactly_once``: what the open Kafka transaction holds, and what is committed.

    The sink adds records and source-transaction ends as it produces them; at commit the
    ledger says which position record to write and, once ``committed()`` was called,
    which LSN the slot may be confirmed to.
    """

    __slots__ = (
        "_confirmed",
        "commit_ts",
        "durable",
        "end_lsn",
        "opened_at",
        "reached",
        "records",
        "state",
    )

    def __init__(self, confirmed: int, durable: Position | None) -> None:
        self._confirmed = confirmed
        # The last position a committed Kafka transaction holds (what a restart skips).
        self.durable = durable
        self._reset()

    def _reset(self) -> None:
        self.records = 0
        self.opened_at = 0.0
        self.reached: Position | None = None
        self.end_lsn: int | None = None
        self.commit_ts: list[int] = []
        self.state: dict[bytes, bytes] = {}

    @property
    def confirmed(self) -> int:
        """The highest LSN the slot may be confirmed to; only grows."""
        return self._confirmed

    @property
    def pending(self) -> bool:
        """Something is in the open Kafka transaction that is not committed yet."""
        return bool(self.records or self.state or self.end_lsn is not None)

    def added(self, records: int, reached: Position | None, now: float) -> None:
        """``records`` more were produced into the open transaction, reaching ``reached``."""
        if not self.pending:
            self.opened_at = now
        self.records += records
        if reached is not None:
            self.reached = reached

    def source_ended(
        self, reached: Position | None, end_lsn: int, commit_ts_us: int | None
    ) -> None:
        """A source transaction was published to its end (``reached``; None for a batch
        of snapshot rows, which is no stream position): its ``end_lsn`` may be confirmed
        with the open Kafka transaction, or at once when that holds nothing."""
        if not self.pending:
            # Nothing of it is waiting: it was skipped (already committed) or filtered.
            self._confirmed = max(self._confirmed, end_lsn)
            return
        if reached is not None:
            self.reached = reached
        self.end_lsn = max(end_lsn, self.end_lsn or 0)
        if commit_ts_us is not None:
            self.commit_ts.append(commit_ts_us)

    def state_added(self, key: bytes, value: bytes, now: float) -> None:
        """A state record to write with the open transaction (the latest per key wins)."""
        if not self.pending:
            self.opened_at = now
        self.state[key] = value

    def keepalive(self, wal_end: int) -> None:
        """Confirm the server's position when nothing read is waiting for a commit (the
        caller passes keepalives only between source transactions)."""
        if not self.pending and wal_end > self._confirmed:
            self._confirmed = wal_end

    def committed(self) -> list[int]:
        """The open transaction was committed; returns the commit timestamps it closed."""
        if self.reached is not None:
            self.durable = self.reached
        if self.end_lsn is not None:
            self._confirmed = max(self._confirmed, self.end_lsn)
        closed = self.commit_ts
        self._reset()
        return closed

    def aborted(self) -> None:
        """The open transaction was aborted: nothing of it is durable."""
        self._reset()


#: Version of the stored stream position; bumped on any incompatible change.
POSITION_VERSION = 1
_REFUSE_HINT = "run a cdc release that writes it"


class StoredPosition(NamedTuple):
    """``exactly_once``: the position the last committed Kafka transaction reached, kept
    in the state topic in that same transaction. A restart skips what is before it.

    ``system_id`` and ``slot`` say which server and slot the LSNs belong to: a position
    of another cluster (a restored dump, a new slot) means nothing for this one.
    """

    reached: Position
    confirm_lsn: int
    system_id: str
    slot: str

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": POSITION_VERSION,
                "lsn": self.reached.lsn,
                "seq": self.reached.seq,
                "confirm_lsn": self.confirm_lsn,
                "system_id": self.system_id,
                "slot": self.slot,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> StoredPosition:
        """Raises ValueError for a record this version cannot read."""
        obj = load_versioned(
            data, version=POSITION_VERSION, what="stream position", hint=_REFUSE_HINT
        )
        try:
            values = (obj["lsn"], obj["seq"], obj["confirm_lsn"])
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise ValueError("lsn, seq and confirm_lsn must be integers")
            return cls(
                Position(obj["lsn"], obj["seq"]),
                obj["confirm_lsn"],
                str(obj["system_id"]),
                str(obj["slot"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"unreadable stream position: {exc}") from exc
