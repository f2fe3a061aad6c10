"""Edge: the connector's Kafka topics, through the admin client.

Each table has a retention topic (``cleanup.policy=delete``, every change kept) and, when
it has a key, a compacted topic (``cleanup.policy=compact``); the connector also has its
state topic (compacted) and topics that keep every record beside the tables' (messages,
outbox, schema changes). ``KafkaAdmin`` makes and checks them; ``TableTopics`` knows which
of them this run has made or checked, and which it created: those are empty, so the
lost-slot guard need not look for data in them.

A topic is made once per run, before its first record: at set-up for the published
tables, and in the stream when a table appears or a routed record names a new topic. An
existing topic with the wrong cleanup policy stops the connector with the command that
fixes it. It must not produce records or decide anything about the slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ConfigResource,
    NewTopic,
    OffsetSpec,
    ResourcePatternType,
    ResourceType,
)

from cdc.config import TopicsConfig
from cdc.errors import SinkError, TopicConfigError
from cdc.kafka.client import MAX_RECORD_BYTES, ClientLog
from cdc.kafka.errors import kafka_error

__all__ = [
    "ADMIN_TIMEOUT_S",
    "KEEP_EVERY_RECORD",
    "STATE_TOPIC_CONFIGS",
    "KafkaAdmin",
    "TableTopics",
    "TopicSpec",
    "log_topic_spec",
    "state_topic_name",
    "state_topic_spec",
    "table_topic_specs",
]

ADMIN_TIMEOUT_S = 15.0

# The topic config of a topic that keeps every record (the log is the source of truth);
# retention topics start from it and users may override it through retention_configs.
KEEP_EVERY_RECORD = {"retention.ms": "-1"}

# The state topic gets a record per Kafka transaction (exactly_once): small segments let
# compaction keep it to a few records per key, so reading it at start stays quick.
STATE_TOPIC_CONFIGS = {
    "segment.bytes": str(16 * 1024 * 1024),
    "segment.ms": str(10 * 60 * 1000),
    "min.cleanable.dirty.ratio": "0.1",
}


def state_topic_name(connector: str) -> str:
    """The connector's own compacted topic: positions, snapshot state, schema history."""
    return f"{connector}.__cdc_state"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic cdc needs, with the cleanup policy its meaning depends on."""

    name: str
    partitions: int
    replication_factor: int  # -1: the broker's default.replication.factor
    cleanup_policy: str  # "delete" (retention topic) or "compact" (latest state)
    configs: Mapping[str, str] = field(default_factory=dict)


def state_topic_spec(connector: str, topics: TopicsConfig) -> TopicSpec:
    """The connector's state topic: compacted, one partition."""
    return TopicSpec(
        state_topic_name(connector), 1, topics.replication_factor, "compact", STATE_TOPIC_CONFIGS
    )


def table_topic_specs(
    topics: TopicsConfig, connector: str, database: str, tables: Iterable[tuple[str, str, bool]]
) -> list[TopicSpec]:
    """The topics of these (schema, table, has_key) tables: the retention topic always
    (``delete``, every record kept), the compacted one (``compact``) for a keyed table.

    Raises:
        ConfigError: a rendered topic name is longer than Kafka allows.
    """
    specs: list[TopicSpec] = []
    for schema, table, has_key in tables:
        specs.append(
            TopicSpec(
                topics.retention_topic(connector, database, schema, table),
                topics.partitions,
                topics.replication_factor,
                "delete",
                {**KEEP_EVERY_RECORD, **topics.retention_configs},
            )
        )
        if has_key:
            specs.append(
                TopicSpec(
                    topics.compacted_topic(connector, database, schema, table),
                    topics.partitions,
                    topics.replication_factor,
                    "compact",
                    dict(topics.compacted_configs),
                )
            )
    return specs


def log_topic_spec(name: str, topics: TopicsConfig, *, partitions: int | None = None) -> TopicSpec:
    """A topic beside the tables' that keeps every record (messages, outbox, schema
    changes, transaction metadata): ``delete``, ``retention.ms=-1``."""
    return TopicSpec(
        name,
        partitions or topics.partitions,
        topics.replication_factor,
        "delete",
        dict(KEEP_EVERY_RECORD),
    )


def _new_topic(spec: TopicSpec) -> NewTopic:
    return NewTopic(
        spec.name,
        num_partitions=spec.partitions,
        replication_factor=spec.replication_factor,
        config={
            "max.message.bytes": str(MAX_RECORD_BYTES),
            "cleanup.policy": spec.cleanup_policy,
            **spec.configs,
        },
    )


class KafkaAdmin:
    """One connector's admin client: topics and their metadata."""

    def __init__(
        self, bootstrap_servers: str, properties: Mapping[str, Any], *, client_id: str, log: Any
    ) -> None:
        """Raises:
        SinkError: the client configuration is invalid (not retryable).
        """
        self.bootstrap_servers = bootstrap_servers
        client_log = ClientLog(log)
        # Producer-only properties (linger.ms, acks...) would make these clients warn.
        self.common: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            **{k: v for k, v in properties.items() if k not in _PRODUCER_ONLY},
            "logger": client_log,
            "error_cb": client_log.error,
        }
        self._client_id = client_id
        try:
            self._admin = AdminClient({**self.common, "client.id": f"{client_id}-admin"})
        except KafkaException as exc:
            raise SinkError(
                f"invalid Kafka client configuration: {exc}. Check kafka.properties in the"
                " daemon config",
                retryable=False,
            ) from exc

    def list_topics(self) -> set[str]:
        """Topic names; also the start-up check that Kafka answers at all."""
        try:
            return set(self._admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics)
        except KafkaException as exc:
            raise kafka_error(
                exc,
                f"cannot reach Kafka at {self.bootstrap_servers} within {ADMIN_TIMEOUT_S:.0f}s."
                " Check kafka.bootstrap_servers and kafka.properties (security.protocol,"
                " sasl.*) in the daemon config",
            ) from exc

    def partitions(self, topic: str) -> int:
        """How many partitions ``topic`` has (for records written to every partition)."""
        numbers = self.partition_ids(topic)
        if numbers is None:
            raise SinkError(f"topic {topic!r} has no partitions visible to cdc", topic=topic)
        return len(numbers)

    def partition_ids(self, topic: str) -> list[int] | None:
        """The topic's partition numbers, or None when it does not exist (yet)."""
        try:
            metadata = self._admin.list_topics(topic, timeout=ADMIN_TIMEOUT_S).topics.get(topic)
        except KafkaException as exc:
            raise kafka_error(exc, f"reading the metadata of topic {topic!r}", topic=topic) from exc
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return None
        return sorted(metadata.partitions)

    def records_written(self, topics: Iterable[str]) -> dict[str, int]:
        """How many records each existing topic has ever received (its high watermarks).

        High watermarks never decrease, even when retention deletes old records, so a
        non-zero count means "this topic has been written to".
        """
        names = list(topics)
        try:
            metadata = self._admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics
        except KafkaException as exc:
            raise kafka_error(exc, "listing topics") from exc
        consumer = self.consumer(f"{self._client_id}-probe")
        counts: dict[str, int] = {}
        try:
            for name in names:
                if name not in metadata:
                    continue
                counts[name] = sum(
                    consumer.get_watermark_offsets(
                        TopicPartition(name, partition), timeout=ADMIN_TIMEOUT_S, cached=False
                    )[1]
                    for partition in metadata[name].partitions
                )
        except KafkaException as exc:
            raise kafka_error(exc, "reading topic offsets from Kafka") from exc
        finally:
            consumer.close()
        return counts

    def end_offsets(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Each partition's last stable offset (the end a read_committed consumer reads
        to), in one request per broker. Asked through the admin client's own connection:
        a consumer's would queue the request behind its long-polling fetch."""
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        wanted = {TopicPartition(t, p): latest for t, p in partitions}
        if not wanted:
            return {}
        try:
            futures = self._admin.list_offsets(
                wanted,
                isolation_level=IsolationLevel.READ_COMMITTED,
                request_timeout=ADMIN_TIMEOUT_S,
            )
            return {
                (tp.topic, tp.partition): future.result().offset for tp, future in futures.items()
            }
        except KafkaException as exc:
            raise kafka_error(exc, "reading the end offsets of topics") from exc

    def consumer(self, group_id: str, **config: Any) -> Consumer:
        """A consumer with the daemon's connection settings (never commits offsets)."""
        try:
            return Consumer(
                {
                    **self.common,
                    "group.id": group_id,
                    "enable.auto.commit": False,
                    "client.id": f"{self._client_id}-reader",
                    **config,
                }
            )
        except KafkaException as exc:
            raise SinkError(
                f"invalid Kafka consumer configuration: {exc}. Check kafka.properties",
                retryable=False,
            ) from exc

    def ensure_topics(self, specs: Iterable[TopicSpec]) -> list[str]:
        """Create missing topics; refuse existing ones whose cleanup policy is wrong.

        Returns the names of the topics created.

        Raises:
            TopicConfigError: an existing topic has the wrong cleanup policy.
            SinkError: creation was refused (not retryable when a setting or an ACL is
                the cause, e.g. a replication factor above the number of brokers).
        """
        wanted = {spec.name: spec for spec in specs}
        if not wanted:
            return []
        existing = self.list_topics()
        missing = [spec for name, spec in wanted.items() if name not in existing]
        created: list[str] = []
        if missing:
            new_topics = [_new_topic(spec) for spec in missing]
            try:
                futures = self._admin.create_topics(new_topics, request_timeout=ADMIN_TIMEOUT_S)
            except KafkaException as exc:
                raise kafka_error(exc, "creating topics") from exc
            for name, future in futures.items():
                try:
                    future.result()
                    created.append(name)
                except KafkaException as exc:
                    if exc.args and exc.args[0].name() == "TOPIC_ALREADY_EXISTS":
                        continue  # created concurrently: checked below like any other
                    raise kafka_error(exc, f"cannot create topic {name!r}", topic=name) from exc
        self._check_cleanup_policies([wanted[n] for n in wanted if n not in created])
        return created

    def _check_cleanup_policies(self, specs: list[TopicSpec]) -> None:
        if not specs:
            return
        resources = [ConfigResource(ConfigResource.Type.TOPIC, spec.name) for spec in specs]
        try:
            futures = self._admin.describe_configs(resources, request_timeout=ADMIN_TIMEOUT_S)
        except KafkaException as exc:
            raise kafka_error(exc, "reading topic configurations") from exc
        by_name = {spec.name: spec for spec in specs}
        for resource, future in futures.items():
            spec = by_name[resource.name]
            try:
                configs = future.result()
            except KafkaException as exc:
                raise kafka_error(
                    exc, f"cannot read the configuration of topic {spec.name!r}", topic=spec.name
                ) from exc
            policy = configs["cleanup.policy"].value
            if policy != spec.cleanup_policy:
                role = "compacted" if spec.cleanup_policy == "compact" else "retention"
                raise TopicConfigError(
                    f"topic {spec.name!r} exists with cleanup.policy={policy}, but as the"
                    f" {role} topic it needs cleanup.policy={spec.cleanup_policy}: fix it"
                    f" (kafka-configs --alter --entity-type topics --entity-name {spec.name}"
                    f" --add-config cleanup.policy={spec.cleanup_policy}) or change the topic"
                    " name template",
                    topic=spec.name,
                )

    def validate_new_topics(self, specs: Iterable[TopicSpec]) -> dict[str, SinkError]:
        """Ask the brokers whether these missing topics could be created, creating none
        (``validate_only``: ACLs, replication factor, settings and policies are checked).

        Returns the refusals by topic name, mapped with their fix; empty when all pass.
        """
        new_topics = [_new_topic(spec) for spec in specs]
        if not new_topics:
            return {}
        try:
            futures = self._admin.create_topics(
                new_topics, validate_only=True, request_timeout=ADMIN_TIMEOUT_S
            )
        except KafkaException as exc:
            raise kafka_error(exc, "validating topic creation") from exc
        refused: dict[str, SinkError] = {}
        for name, future in futures.items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args and exc.args[0].name() == "TOPIC_ALREADY_EXISTS":
                    continue  # created meanwhile: nothing to refuse
                refused[name] = kafka_error(exc, f"creating topic {name!r}", topic=name)
        return refused

    def broker_config(self) -> tuple[int, dict[str, str] | None]:
        """How many brokers the cluster has, and one broker's configuration (None when
        the principal may not describe it)."""
        try:
            metadata = self._admin.list_topics(timeout=ADMIN_TIMEOUT_S)
        except KafkaException as exc:
            raise kafka_error(exc, "reading the cluster's metadata") from exc
        if not metadata.brokers:
            return 0, None
        resource = ConfigResource(ConfigResource.Type.BROKER, str(min(metadata.brokers)))
        try:
            future = self._admin.describe_configs([resource], request_timeout=ADMIN_TIMEOUT_S)
            configs = future[resource].result()
        except KafkaException:
            return len(metadata.brokers), None  # no DescribeConfigs on the cluster
        return len(metadata.brokers), {key: entry.value for key, entry in configs.items()}

    def transactional_id_acls(self) -> list[tuple[str, ...]] | None:
        """The ACL bindings on TransactionalId resources as (principal, host, operation,
        permission, pattern, resource); None when they may not be read. (A cluster
        without an authorizer answers with none: ``authorizer.class.name`` tells.)"""
        # None matches any name, principal and host (confluent-kafka's AclBindingFilter;
        # its stubs say str).
        wanted = AclBindingFilter(
            ResourceType.TRANSACTIONAL_ID,
            None,  # type: ignore[arg-type]
            ResourcePatternType.ANY,
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        try:
            bindings = self._admin.describe_acls(wanted, request_timeout=ADMIN_TIMEOUT_S).result()
        except KafkaException:
            return None  # no Describe on the cluster, or no authorizer (SECURITY_DISABLED)
        return [
            (
                str(b.principal),
                str(b.host),
                b.operation.name,
                b.permission_type.name,
                b.resource_pattern_type.name,
                str(b.name),
            )
            for b in bindings
        ]

    def topic_configs(self, name: str) -> dict[str, str]:
        """The broker's view of a topic's configuration (for status output and tests)."""
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        try:
            future = self._admin.describe_configs([resource], request_timeout=ADMIN_TIMEOUT_S)
            configs = future[resource].result()
        except KafkaException as exc:
            raise kafka_error(exc, f"reading the configuration of topic {name!r}") from exc
        return {key: entry.value for key, entry in configs.items()}


# Producer properties an admin client or consumer would only warn about.
_PRODUCER_ONLY = frozenset(
    {
        "compression.type",
        "linger.ms",
        "batch.num.messages",
        "batch.size",
        "queue.buffering.max.kbytes",
        "queue.buffering.max.messages",
        "transaction.timeout.ms",
        "enable.idempotence",
        "acks",
        "partitioner",
        "message.timeout.ms",
        "delivery.timeout.ms",
    }
)


class TableTopics:
    """Which topics exist (made or checked by this run), and which it created."""

    __slots__ = (
        "_admin",
        "_connector",
        "_database",
        "_log",
        "_log_topics",
        "_topics",
        "created",
        "ensured",
    )

    def __init__(
        self, *, connector: str, database: str, topics: TopicsConfig, admin: KafkaAdmin, log: Any
    ) -> None:
        """Args:
        connector: the connector's name, as it appears in topic names.
        database: the source database's name, as it appears in topic names.
        topics: the effective topic settings (names, partitions, configs).
        admin: the connector's admin client.
        log: the connector's bound logger (``connector`` and ``slot`` already bound).
        """
        self._connector = connector
        self._database = database
        self._topics = topics
        self._admin = admin
        self._log = log
        # (schema, table) whose topics exist: the stream checks it at Relation messages.
        self.ensured: set[tuple[str, str]] = set()
        # Topics this start created: empty, so the lost-slot guard skips them.
        self.created: set[str] = set()
        # The other topics that keep every record, made (or checked) by this run.
        self._log_topics: set[str] = set()

    def ensure_state_topic(self) -> str:
        """Make the connector's state topic (compacted, one partition); returns its name."""
        spec = state_topic_spec(self._connector, self._topics)
        self._create([spec])
        return spec.name

    def ensure(self, tables: list[tuple[str, str, bool]]) -> None:
        """Make the topics of these (schema, table, has_key) tables unless done already:
        the retention topic always, the compacted one for a table with a key.

        Raises:
            TopicConfigError: an existing topic has the wrong cleanup policy.
        """
        specs = table_topic_specs(
            self._topics,
            self._connector,
            self._database,
            [t for t in tables if (t[0], t[1]) not in self.ensured],
        )
        if specs:
            self._create(specs)
        self.ensured.update((schema, table) for schema, table, _ in tables)

    def ensure_log_topics(self, names: Iterable[str], *, partitions: int | None = None) -> None:
        """Make topics beside the tables' that keep every record (messages, outbox,
        schema changes): cleanup.policy=delete, retention.ms=-1; once each per run.

        Raises:
            TopicConfigError: an existing topic has the wrong cleanup policy.
        """
        wanted = sorted(set(names) - self._log_topics)
        if not wanted:
            return
        self._create([log_topic_spec(name, self._topics, partitions=partitions) for name in wanted])
        self._log_topics.update(wanted)

    def _create(self, specs: list[TopicSpec]) -> None:
        created = self._admin.ensure_topics(specs)
        self.created.update(created)
        for name in created:
            self._log.info("topic_created", topic=name)
