"""Which connectors this instance of a fleet runs, given what the Kafka group assigns it.

The one job: map the assignment topic's partitions to connectors (partition ``i`` is the
``i``-th enabled connector by sorted name, the *roster*) and turn the group's three
callbacks into decisions: ``assigned`` -> start, ``revoked`` -> stop cleanly (the
partition moves on only once we return), ``lost`` -> abandon (our session expired: another
instance may already run the connector, so nothing more may be committed or confirmed).

No I/O, no clock, no Kafka: ``cdc.kafka.fleet`` is the edge, ``cdc.daemon`` acts on the
decisions. Every instance of a group must read the same connector files, or partition
``i`` would name different connectors on different instances: the roster's digest is
logged at start and carried in the member's ``client.id`` so a mismatch shows.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "ASSIGNMENT_TOPIC_PREFIX",
    "Action",
    "Decision",
    "Ownership",
    "Roster",
    "assignment_topic",
    "consumer_group_id",
]

# Double underscore: Kafka's own convention for internal topics (__consumer_offsets), so
# topic listings and mirrors tell it apart from data.
ASSIGNMENT_TOPIC_PREFIX = "__cdc_fleet."


def assignment_topic(group: str) -> str:
    """The topic whose partitions stand for the group's connectors (it holds no data)."""
    return f"{ASSIGNMENT_TOPIC_PREFIX}{group}"


def consumer_group_id(group: str) -> str:
    """The Kafka consumer group of the fleet ``group``."""
    return f"cdc-fleet-{group}"


@dataclass(frozen=True, slots=True)
class Roster:
    """The enabled connectors, sorted: their index is their partition."""

    connectors: tuple[str, ...]

    @classmethod
    def of(cls, names: Iterable[str]) -> Roster:
        """The roster of these connector names (any order).

        Raises:
            ValueError: a name appears twice.
        """
        ordered = tuple(sorted(names))
        if len(set(ordered)) != len(ordered):
            raise ValueError(f"connector names must be unique: {list(ordered)}")
        return cls(ordered)

    @property
    def digest(self) -> str:
        """A short fingerprint: equal on every instance that reads the same connectors."""
        return hashlib.sha256("\n".join(self.connectors).encode()).hexdigest()[:12]

    def __len__(self) -> int:
        return len(self.connectors)

    def connector_of(self, partition: int) -> str | None:
        """The connector partition ``partition`` stands for; None beyond the roster (a
        topic grown for a larger roster elsewhere: such a partition runs nothing here)."""
        if 0 <= partition < len(self.connectors):
            return self.connectors[partition]
        return None

    def partition_of(self, connector: str) -> int:
        """The partition standing for ``connector``.

        Raises:
            KeyError: not on the roster.
        """
        try:
            return self.connectors.index(connector)
        except ValueError:
            raise KeyError(connector) from None


class Action(enum.Enum):
    """What to do with one connector."""

    START = "start"
    STOP = "stop"  # cleanly: commit, confirm, then hand over
    ABANDON = "abandon"  # at once: commit and confirm nothing more


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    connector: str


class Ownership:
    """The connectors this instance owns, kept in step with the group's callbacks.

    Cooperative rebalancing gives increments: ``assigned`` lists only partitions added,
    ``revoked``/``lost`` only those taken away. A callback naming a partition twice, or
    one we do not own, decides nothing (librdkafka may repeat a revocation on close).
    """

    def __init__(self, roster: Roster) -> None:
        self.roster = roster
        self._owned: set[str] = set()

    @property
    def owned(self) -> frozenset[str]:
        return frozenset(self._owned)

    def assigned(self, partitions: Iterable[int]) -> list[Decision]:
        """Partitions added to our assignment: start their connectors."""
        decisions = []
        for connector in self._connectors(partitions):
            if connector not in self._owned:
                self._owned.add(connector)
                decisions.append(Decision(Action.START, connector))
        return decisions

    def revoked(self, partitions: Iterable[int]) -> list[Decision]:
        """Partitions the group moves elsewhere after we return: stop cleanly."""
        return self._release(partitions, Action.STOP)

    def lost(self, partitions: Iterable[int]) -> list[Decision]:
        """Partitions we lost (session expired, fenced): abandon at once."""
        return self._release(partitions, Action.ABANDON)

    def _release(self, partitions: Iterable[int], action: Action) -> list[Decision]:
        decisions = []
        for connector in self._connectors(partitions):
            if connector in self._owned:
                self._owned.discard(connector)
                decisions.append(Decision(action, connector))
        return decisions

    def _connectors(self, partitions: Iterable[int]) -> list[str]:
        found = (self.roster.connector_of(p) for p in sorted(set(partitions)))
        return [c for c in found if c is not None]
