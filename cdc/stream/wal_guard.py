"""Guard of the legacy server's disk: how much WAL the connector's slot holds back.

PostgreSQL keeps every WAL segment from a logical slot's ``restart_lsn`` on. While Kafka
is down or slow the connector confirms nothing, the slot stands still and WAL piles up
on the legacy database's disk until it fills (or, with ``max_slot_wal_keep_size``, until
PostgreSQL invalidates the slot and the stream is lost). This module decides, from what
the server says about the slot (``pg_replication_slots``), what to publish and log and
whether to stop: facts in, a verdict out. The edge reads the facts
(``ReplicationSource.slot_wal``); the pipeline carries the verdict out.

No I/O, no logging, no clock: time is passed in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cdc.errors import SlotError

__all__ = [
    "REWARN_INTERVAL_S",
    "SlotWal",
    "WalGuard",
    "WalLevel",
    "WalVerdict",
    "format_bytes",
    "retained_wal_advice",
    "stop_error",
]

# While the slot stays above the warning size, the warning is repeated this often: loud
# enough to be noticed in a log, rare enough not to drown it.
REWARN_INTERVAL_S = 600.0

# pg_replication_slots.wal_status (PostgreSQL 13+): "unreserved" means the slot already
# holds more than max_wal_size and PostgreSQL will invalidate it at the next checkpoint
# when max_slot_wal_keep_size is exceeded; "lost" means it did.
_AT_RISK = frozenset({"unreserved", "lost"})


@dataclass(frozen=True, slots=True)
class SlotWal:
    """What the server says about the slot's WAL, as read by one query."""

    # pg_current_wal_lsn() - restart_lsn: the WAL the server keeps for this slot; None
    # when the slot has no restart_lsn (invalidated).
    retained_bytes: int | None
    # reserved, extended, unreserved or lost; None before PostgreSQL 13.
    wal_status: str | None = None
    # Bytes that can still be written before the slot is invalidated
    # (max_slot_wal_keep_size); None when unlimited or before PostgreSQL 13.
    safe_wal_size: int | None = None


class WalLevel(enum.Enum):
    """Where the slot's retained WAL stands against the configured sizes."""

    OK = "ok"
    WARN = "warn"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class WalVerdict:
    """What to do after one reading."""

    level: WalLevel
    # Log the warning now (crossing, or repeated while above).
    warn: bool = False
    # Log that the slot fell back below the warning size.
    recovered: bool = False


class WalGuard:
    """Decides, reading after reading, when to warn, when to say it is over, when to stop.

    ``due(now)`` says whether a reading is wanted (at most one per interval, whether the
    reading then succeeds or not: a failing query is tried again next interval);
    ``assess(wal, now)`` turns a reading into a ``WalVerdict``.
    """

    __slots__ = ("_above", "_interval_s", "_last_warned", "_next_check", "stop_bytes", "warn_bytes")

    def __init__(
        self,
        *,
        warn_bytes: int | None,
        stop_bytes: int | None,
        interval_s: float,
        now: float,
    ) -> None:
        """Args:
        warn_bytes: retained WAL from which a warning is logged; None: never.
        stop_bytes: retained WAL from which the connector stops; None: never.
        interval_s: seconds between two readings.
        now: the current monotonic time; the first reading is due at once.
        """
        self.warn_bytes = warn_bytes
        self.stop_bytes = stop_bytes
        self._interval_s = interval_s
        self._next_check = now
        self._above = False
        self._last_warned = 0.0

    def due(self, now: float) -> bool:
        """Whether a reading is wanted now; if so, the next one is an interval away."""
        if now < self._next_check:
            return False
        self._next_check = now + self._interval_s
        return True

    def assess(self, wal: SlotWal, now: float) -> WalVerdict:
        """The verdict on one reading taken at ``now``."""
        retained = wal.retained_bytes
        stop = self.stop_bytes is not None and retained is not None and retained >= self.stop_bytes
        above = (
            stop
            or wal.wal_status in _AT_RISK
            or (
                self.warn_bytes is not None and retained is not None and retained >= self.warn_bytes
            )
        )
        if not above:
            recovered = self._above
            self._above = False
            return WalVerdict(WalLevel.OK, recovered=recovered)
        warn = not self._above or now - self._last_warned >= REWARN_INTERVAL_S
        self._above = True
        if warn:
            self._last_warned = now
        return WalVerdict(WalLevel.STOP if stop else WalLevel.WARN, warn=warn)


def format_bytes(size: int) -> str:
    """``size`` in binary units for a human: ``"1.5 GiB"``, ``"512 B"``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def retained_wal_advice(slot: str) -> str:
    """What an operator does about a slot that holds back WAL."""
    return (
        f"replication slot {slot!r} holds back WAL on the legacy server until the connector"
        " confirms more of the stream: check that Kafka is reachable and keeps up"
        " (kafka_client_error, kafka_backpressure_started, cdc_backpressure_seconds_total)"
        " and that the connector is running; the slot advances by itself once Kafka"
        " takes the backlog"
    )


def stop_error(slot: str, wal: SlotWal, stop_bytes: int) -> SlotError:
    """The fatal error of a slot above ``wal_retention.stop_bytes``, with the DBA's options."""
    retained = wal.retained_bytes or 0
    return SlotError(
        f"replication slot {slot!r} retains {retained} bytes ({format_bytes(retained)}) of"
        f" WAL, at or above wal_retention.stop_bytes ({stop_bytes} bytes,"
        f" {format_bytes(stop_bytes)}): the connector stops so the legacy server's disk does"
        " not fill. Either fix what holds the slot back (Kafka unreachable or slow, or the"
        " downstream it feeds) and start the connector again, or raise"
        " wal_retention.stop_bytes; or give the WAL back by dropping the slot, SELECT"
        f" pg_drop_replication_slot('{slot}'), and re-snapshot: start the connector with"
        " snapshot.mode: when_needed (a new slot, every row published again; changes"
        " since the slot's position are otherwise lost)"
    )
