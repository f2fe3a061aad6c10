"""Edge: this instance's membership in the fleet's Kafka consumer group.

The group protocol assigns the partitions of small assignment topics (one per connector,
``__cdc_fleet.<group>.<connector>``, one partition each, never holding data); owning a
topic's partition means running its connector (``cdc.fleet``). The member subscribes to
the topics of its own connectors only, so a connector is only ever assigned to an
instance that has its file. It is a confluent-kafka ``Consumer`` with:

- ``group.instance.id`` = the instance id (static membership, KIP-345): a restart within
  ``session.timeout.ms`` gets the same partitions back, without a rebalance;
- ``partition.assignment.strategy=cooperative-sticky`` (KIP-429): a rebalance moves only
  the partitions that must move; the others keep running;
- ``max.poll.interval.ms`` = ``fleet.rebalance_timeout_ms`` (librdkafka sends it as the
  JoinGroup rebalance timeout).

It lives in its own thread calling ``poll(0.1)``: librdkafka heartbeats from its own
threads, and this loop keeps ``max.poll.interval.ms`` satisfied, so a busy connector
(Python's GIL) cannot get the instance evicted. The callbacks run in this thread:
``on_revoke`` blocks until the connectors are stopped (cooperative: the partitions go to
another instance only after it returns), ``on_lost`` abandons them.

On stop (SIGTERM), with ``leave_on_stop``, the member unsubscribes before closing:
librdkafka sends a static member's LeaveGroup on ``unsubscribe()`` but never on
``close()`` (KIP-345: a static member leaving on termination would defeat rolling
restarts), so the connectors move at once rather than after the session timeout.

It decides nothing about connectors and never produces.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from cdc import metrics
from cdc.config import FleetConfig
from cdc.errors import CdcError
from cdc.fleet import Roster, consumer_group_id
from cdc.kafka.errors import kafka_error
from cdc.kafka.topics import ADMIN_TIMEOUT_S, KafkaAdmin, TopicSpec

__all__ = ["FleetMember", "describe_fleet"]

# The member's poll: short, so a stop is seen quickly; it costs a wake-up per period.
POLL_S = 0.1
# The assignment topic holds no data: keep a day, in case something writes to it.
ASSIGNMENT_TOPIC_CONFIGS = {"retention.ms": str(24 * 3600 * 1000)}
# Joining retries a Kafka that does not answer (yet) with this backoff.
JOIN_BACKOFF_S = (1.0, 2.0, 5.0, 10.0)
# After unsubscribe, wait at most this long for the revocation and the LeaveGroup.
LEAVE_WAIT_S = 5.0

# Called with the assignment topics added, revoked or lost.
TopicsCallback = Callable[[list[str]], None]


class FleetMember(threading.Thread):
    """The instance's group member: joins, serves the callbacks, leaves on stop."""

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        properties: Mapping[str, Any],
        fleet: FleetConfig,
        roster: Roster,
        replication_factor: int,
        on_assign: TopicsCallback,
        on_revoke: TopicsCallback,
        on_lost: TopicsCallback,
        before_leave: Callable[[], None],
        stop: threading.Event,
        log: Any,
    ) -> None:
        """Args:
        before_leave: called once ``stop`` is set, before the member leaves the group:
            stops the connectors cleanly, so they are handed over committed.
        """
        super().__init__(name="fleet-member", daemon=True)
        self._servers = bootstrap_servers
        self._properties = properties
        self._fleet = fleet
        self._roster = roster
        self._replication_factor = replication_factor
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost = on_lost
        self._before_leave = before_leave
        self._halt = stop
        self._log = log
        self.group_id = consumer_group_id(fleet.group)
        self.failure: BaseException | None = None
        self.joined = threading.Event()

    # --- the thread ---------------------------------------------------------------------

    def run(self) -> None:
        try:
            consumer = self._join()
            if consumer is None:
                return  # stopped while joining
            try:
                self._serve(consumer)
            finally:
                self._leave(consumer)
        except BaseException as exc:  # noqa: BLE001 - reported to the daemon, which exits
            self.failure = exc
            self._log.error("fleet_member_failed", error=str(exc), error_type=type(exc).__name__)

    def _serve(self, consumer: Consumer) -> None:
        while not self._halt.is_set():
            # No record ever arrives; poll serves the group's callbacks and errors.
            message = consumer.poll(POLL_S)
            if message is not None and message.error() is not None:
                self._log.warning("fleet_consumer_error", error=str(message.error()))

    def _leave(self, consumer: Consumer) -> None:
        self._before_leave()
        try:
            if self._fleet.leave_on_stop:
                consumer.unsubscribe()
                deadline = time.monotonic() + LEAVE_WAIT_S
                while consumer.assignment() and time.monotonic() < deadline:
                    consumer.poll(POLL_S)
            consumer.close()
        except (KafkaException, RuntimeError) as exc:
            self._log.warning("fleet_leave_failed", error=str(exc))
        self._log.info(
            "fleet_left",
            group=self._fleet.group,
            instance_id=self._fleet.instance_id,
            handed_over=self._fleet.leave_on_stop,
        )

    # --- joining ------------------------------------------------------------------------

    def _join(self) -> Consumer | None:
        """Make sure the assignment topics exist (one per connector), then subscribe;
        a Kafka that does not answer is retried until ``stop``."""
        attempt = 0
        while not self._halt.is_set():
            try:
                return self._subscribe()
            except CdcError as exc:
                if not exc.retryable:
                    raise
                wait = JOIN_BACKOFF_S[min(attempt, len(JOIN_BACKOFF_S) - 1)]
                attempt += 1
                self._log.warning("fleet_join_retrying", error=str(exc), retry_in_s=wait)
                self._halt.wait(wait)
        return None

    def _subscribe(self) -> Consumer:
        fleet, roster = self._fleet, self._roster
        admin = KafkaAdmin(
            self._servers,
            self._properties,
            client_id=f"cdc-fleet-{fleet.instance_id}",
            log=self._log,
        )
        topics = roster.topics
        # One partition each: a connector is one unit of work. Created by whichever
        # instance comes first; an existing one is left as it is.
        admin.ensure_topics(
            [
                TopicSpec(topic, 1, self._replication_factor, "delete", ASSIGNMENT_TOPIC_CONFIGS)
                for topic in topics
            ]
        )
        self._log.info(
            "fleet_joining",
            group=fleet.group,
            consumer_group=self.group_id,
            instance_id=fleet.instance_id,
            topics=len(topics),
            roster=list(roster.connectors),
            roster_digest=roster.digest,
            session_timeout_ms=fleet.session_timeout_ms,
        )
        consumer = admin.consumer(
            self.group_id,
            **{
                "group.instance.id": fleet.instance_id,
                # The roster's digest in the client id: describe_fleet (cdc status) shows
                # members that read other connector files.
                "client.id": f"cdc-fleet-{fleet.instance_id}-{roster.digest}",
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": fleet.session_timeout_ms,
                "heartbeat.interval.ms": fleet.heartbeat_interval_ms,
                "max.poll.interval.ms": fleet.rebalance_timeout_ms,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "latest",
            },
        )
        consumer.subscribe(
            topics,
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._lost,
        )
        return consumer

    # --- the group's callbacks (in this thread, from poll) ---------------------------------

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.joined.set()
        metrics.FLEET_REBALANCES.labels(instance=self._fleet.instance_id, kind="assigned").inc()
        self._on_assign([tp.topic for tp in partitions])

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.FLEET_REBALANCES.labels(instance=self._fleet.instance_id, kind="revoked").inc()
        self._on_revoke([tp.topic for tp in partitions])

    def _lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.FLEET_REBALANCES.labels(instance=self._fleet.instance_id, kind="lost").inc()
        self._on_lost([tp.topic for tp in partitions])


def describe_fleet(
    bootstrap_servers: str, properties: Mapping[str, Any], fleet: FleetConfig, roster: Roster
) -> dict[str, Any]:
    """The group as the broker sees it: each member's instance id, host, roster digest
    and connectors (``cdc status``).

    Raises:
        SinkError: Kafka did not answer.
    """
    group = consumer_group_id(fleet.group)
    admin = KafkaAdmin(bootstrap_servers, properties, client_id="cdc-status", log=_Quiet())
    client = AdminClient({**admin.common, "client.id": "cdc-status-admin"})
    try:
        [future] = client.describe_consumer_groups(
            [group], request_timeout=ADMIN_TIMEOUT_S
        ).values()
        described = future.result()
    except KafkaException as exc:
        raise kafka_error(exc, f"describing consumer group {group!r}") from exc
    members = []
    for member in described.members:
        owned = (
            Roster.connector_in(fleet.group, tp.topic) for tp in member.assignment.topic_partitions
        )
        client_id = str(member.client_id)
        members.append(
            {
                "instance_id": member.group_instance_id,
                "host": member.host,
                "roster_digest": client_id.rsplit("-", 1)[-1],
                "connectors": sorted(c for c in owned if c is not None),
            }
        )
    return {
        "group": fleet.group,
        "consumer_group": group,
        "state": str(described.state.name).lower() if described.state is not None else None,
        "roster_digest": roster.digest,
        "members": members,
    }


class _Quiet:
    """A logger that drops librdkafka's lines (``cdc status`` prints its own)."""

    def __getattr__(self, _name: str) -> Callable[..., None]:
        return lambda *_args, **_kwargs: None
