"""Which connectors this instance of a fleet runs, given what the Kafka group assigns it.

The one job: map the group's assignment to connectors and turn the group's three
callbacks into decisions: ``assigned`` -> start, ``revoked`` -> stop cleanly (the
assignment moves on only once we return), ``lost`` -> abandon (our session expired:
another instance may already run the connector, so nothing more may be committed or
confirmed).

Each connector has an assignment topic of its own, ``__cdc_fleet.<group>.<connector>``,
with one partition and no data; an instance subscribes to the topics of the connectors
*it* has files for, and owning a topic's partition means running that connector. The
connector is named by the topic, never by a position in a list, so instances that read
different connector files can share a group safely: a connector runs only on an instance
that has it, and never on two (the group gives each partition to one member). That is
what a rolling change of the connector files goes through. The roster's digest (of the
names) is still logged and carried in the member's ``client.id``, so ``cdc status`` shows
which instances read other files.

No I/O, no clock, no Kafka: ``cdc.kafka.fleet`` is the edge, ``cdc.daemon`` acts on the
decisions.
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


def assignment_topic(group: str, connector: str) -> str:
    """The topic whose one partition stands for ``connector`` in ``group`` (no data)."""
    return f"{ASSIGNMENT_TOPIC_PREFIX}{group}.{connector}"


def consumer_group_id(group: str) -> str:
    """The Kafka consumer group of the fleet ``group``."""
    return f"cdc-fleet-{group}"


@dataclass(frozen=True, slots=True)
class Roster:
    """The enabled connectors of this instance, sorted, and their assignment topics."""

    group: str
    connectors: tuple[str, ...]

    @classmethod
    def of(cls, group: str, names: Iterable[str]) -> Roster:
        """The roster of these connector names (any order) in ``group``.

        Raises:
            ValueError: a name appears twice.
        """
        ordered = tuple(sorted(names))
        if len(set(ordered)) != len(ordered):
            raise ValueError(f"connector names must be unique: {list(ordered)}")
        return cls(group, ordered)

    @property
    def digest(self) -> str:
        """A short fingerprint: equal on every instance that reads the same connectors."""
        return hashlib.sha256("\n".join(self.connectors).encode()).hexdigest()[:12]

    def __len__(self) -> int:
        return len(self.connectors)

    @property
    def topics(self) -> list[str]:
        """The assignment topics this instance subscribes to, one per connector."""
        return [assignment_topic(self.group, c) for c in self.connectors]

    def connector_of(self, topic: str) -> str | None:
        """The connector ``topic`` stands for, if this instance has it (None: another
        instance's connector, or not an assignment topic of this group)."""
        prefix = assignment_topic(self.group, "")
        if not topic.startswith(prefix):
            return None
        name = topic[len(prefix) :]
        return name if name in self.connectors else None

    @staticmethod
    def connector_in(group: str, topic: str) -> str | None:
        """The connector any instance's assignment ``topic`` of ``group`` stands for."""
        prefix = assignment_topic(group, "")
        return topic[len(prefix) :] if topic.startswith(prefix) and topic != prefix else None


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

    Cooperative rebalancing gives increments: ``assigned`` lists only the assignment
    topics added, ``revoked``/``lost`` only those taken away. A callback naming a topic
    twice, or one we do not own, decides nothing (librdkafka may repeat a revocation on
    close).
    """

    def __init__(self, roster: Roster) -> None:
        self.roster = roster
        self._owned: set[str] = set()

    @property
    def owned(self) -> frozenset[str]:
        return frozenset(self._owned)

    def assigned(self, topics: Iterable[str]) -> list[Decision]:
        """Assignment topics added to ours: start their connectors."""
        decisions = []
        for connector in self._connectors(topics):
            if connector not in self._owned:
                self._owned.add(connector)
                decisions.append(Decision(Action.START, connector))
        return decisions

    def revoked(self, topics: Iterable[str]) -> list[Decision]:
        """Connectors the group moves elsewhere after we return: stop cleanly."""
        return self._release(topics, Action.STOP)

    def lost(self, topics: Iterable[str]) -> list[Decision]:
        """Connectors we lost (session expired, fenced): abandon at once."""
        return self._release(topics, Action.ABANDON)

    def _release(self, topics: Iterable[str], action: Action) -> list[Decision]:
        decisions = []
        for connector in self._connectors(topics):
            if connector in self._owned:
                self._owned.discard(connector)
                decisions.append(Decision(action, connector))
        return decisions

    def _connectors(self, topics: Iterable[str]) -> list[str]:
        found = (self.roster.connector_of(t) for t in sorted(set(topics)))
        return [c for c in found if c is not None]
