"""Edge: this instance's membership in the fleet's Kafka consumer group.

The group protocol assigns the partitions of a small assignment topic
(``__cdc_fleet.<group>``, one partition per connector, never holding data); owning
partition ``i`` means running the ``i``-th connector of the roster (``cdc.fleet``). The
member is a confluent-kafka ``Consumer`` with:

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
from confluent_kafka.admin import AdminClient, NewPartitions

from cdc import metrics
from cdc.config import FleetConfig
from cdc.errors import CdcError, ConfigError
from cdc.fleet import Roster, assignment_topic, consumer_group_id
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

PartitionsCallback = Callable[[list[int]], None]


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
        on_assign: PartitionsCallback,
        on_revoke: PartitionsCallback,
        on_lost: PartitionsCallback,
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
        self.topic = assignment_topic(fleet.group)
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
        """Make sure the assignment topic has a partition per connector, then subscribe;
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
        partitions = self._ensure_topic(admin)
        self._log.info(
            "fleet_joining",
            group=fleet.group,
            consumer_group=self.group_id,
            instance_id=fleet.instance_id,
            topic=self.topic,
            partitions=partitions,
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
            [self.topic],
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._lost,
        )
        return consumer

    def _ensure_topic(self, admin: KafkaAdmin) -> int:
        """The assignment topic with at least a partition per connector (created, or
        grown); refuses to join when it stays smaller.

        Raises:
            ConfigError: the topic has fewer partitions than connectors and cannot grow.
            SinkError: Kafka refused or did not answer.
        """
        wanted = len(self._roster)
        spec = TopicSpec(
            self.topic, wanted, self._replication_factor, "delete", ASSIGNMENT_TOPIC_CONFIGS
        )
        admin.ensure_topics([spec])
        have = len(admin.partition_ids(self.topic) or [])
        if have < wanted:
            self._log.info("fleet_topic_growing", topic=self.topic, partitions=have, wanted=wanted)
            client = AdminClient({**admin.common, "client.id": "cdc-fleet-admin"})
            try:
                futures = client.create_partitions(
                    [NewPartitions(self.topic, wanted)], request_timeout=ADMIN_TIMEOUT_S
                )
                for future in futures.values():
                    future.result()
            except KafkaException as exc:
                if "INVALID_PARTITIONS" not in str(exc):  # grown concurrently: checked below
                    raise kafka_error(
                        exc, f"growing topic {self.topic!r}", topic=self.topic
                    ) from exc
            have = len(admin.partition_ids(self.topic) or [])
        if have < wanted:
            raise ConfigError(
                f"the fleet's assignment topic {self.topic!r} has {have} partitions for"
                f" {wanted} connectors and could not be grown: run kafka-topics --alter"
                f" --topic {self.topic} --partitions {wanted}",
                key="fleet.group",
            )
        return have

    # --- the group's callbacks (in this thread, from poll) ---------------------------------

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.joined.set()
        metrics.FLEET_REBALANCES.labels(instance=self._fleet.instance_id, kind="assigned").inc()
        self._on_assign([tp.partition for tp in partitions])

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.FLEET_REBALANCES.labels(instance=self._fleet.instance_id, kind="revoked").inc()
        self._on_revoke([tp.partition for tp in partitions])

    def _lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.FLEET_REBALANCES.labels(instance=self._fleet.instance_id, kind="lost").inc()
        self._on_lost([tp.partition for tp in partitions])


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
        partitions = sorted(tp.partition for tp in member.assignment.topic_partitions)
        client_id = str(member.client_id)
        members.append(
            {
                "instance_id": member.group_instance_id,
                "host": member.host,
                "roster_digest": client_id.rsplit("-", 1)[-1],
                "connectors": [c for c in map(roster.connector_of, partitions) if c is not None],
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
