"""Which LSN is safe to confirm to PostgreSQL, given what Kafka has acknowledged. No I/O.

The slot's confirmed position is the promise "everything before this is durable
downstream"; PostgreSQL frees WAL behind it and never sends it again. So we confirm the
end LSN of a transaction only when Kafka has acknowledged every record of that
transaction *and of every earlier one* (records of different partitions are acknowledged
out of order). Confirming earlier loses changes on a crash (see PAIN-POINTS.md #12).

When nothing is in flight, a keepalive's ``wal_end`` may be confirmed as well: the server
has sent us everything before it, and all of it is acknowledged. This keeps the slot moving
while the published tables are idle and other tables are busy, so WAL does not pile up on
the legacy server without a heartbeat table (PAIN-POINTS.md #1).
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["DeliveryFailure", "PositionTracker", "Transaction"]


class DeliveryFailure:
    """A record Kafka refused for good; the pipeline turns it into a ``SinkError``."""

    __slots__ = ("error", "topic")

    def __init__(self, error: Any, topic: str | None) -> None:
        self.error = error
        self.topic = topic


class Transaction:
    """One source transaction's outstanding records.

    ``on_delivery`` has confluent-kafka's delivery-callback signature so the producer can
    call it directly: one bound method per transaction, no closure per record.
    """

    __slots__ = ("_failures", "closed", "commit_ts_us", "end_lsn", "pending")

    def __init__(self, failures: list[DeliveryFailure], commit_ts_us: int) -> None:
        self.pending = 0
        self.end_lsn = 0
        self.closed = False
        self.commit_ts_us = commit_ts_us
        self._failures = failures

    def on_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            self.pending -= 1
        else:
            self._failures.append(DeliveryFailure(err, msg.topic() if msg is not None else None))


class PositionTracker:
    """Tracks transactions in commit order and yields the highest confirmable LSN."""

    __slots__ = ("_confirmed", "_open", "_txs", "completed", "failures")

    def __init__(self, start_lsn: int) -> None:
        self._confirmed = start_lsn
        self._txs: deque[Transaction] = deque()
        self._open: Transaction | None = None
        self.failures: list[DeliveryFailure] = []
        # Commit timestamps of transactions that became confirmable, oldest first, for
        # the commit-to-acknowledgement latency metric; the pipeline drains it.
        self.completed: list[int] = []

    @property
    def confirmed(self) -> int:
        """The highest LSN known safe; only grows."""
        return self._confirmed

    @property
    def in_flight(self) -> int:
        """Records produced but not yet acknowledged, over all tracked transactions."""
        return sum(tx.pending for tx in self._txs)

    @property
    def idle(self) -> bool:
        """No open transaction and nothing awaiting acknowledgement."""
        self._advance()
        return not self._txs

    def begin(self, commit_ts_us: int = 0) -> Transaction:
        """Start tracking the next transaction, in commit order (pgoutput sends them so)."""
        tx = Transaction(self.failures, commit_ts_us)
        self._txs.append(tx)
        self._open = tx
        return tx

    def commit(self, tx: Transaction, end_lsn: int) -> None:
        """The transaction's last record has been produced; ``end_lsn`` may follow its acks."""
        tx.end_lsn = end_lsn
        tx.closed = True
        if self._open is tx:
            self._open = None

    def on_keepalive(self, wal_end: int) -> None:
        """Confirm the server's position when every record sent before it is acknowledged."""
        self._advance()
        if not self._txs and wal_end > self._confirmed:
            self._confirmed = wal_end

    def confirmable(self) -> int:
        """Pop the acknowledged prefix of transactions and return the LSN to confirm."""
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
            self.completed.append(tx.commit_ts_us)
