"""Edge: the Kafka side. Creates and checks topics, produces records, reports acks.

Records for one key must land in one partition in commit order and never twice out of
order: hence the idempotent producer with ``acks=all`` and the Java client's murmur2
partitioner (so Java/Kafka Streams consumers agree on the partition of a key). This
module knows nothing of PostgreSQL or of our envelopes: topic, key and value bytes in,
delivery callbacks out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from cdc.errors import SinkError, TopicConfigError

__all__ = [
    "MAX_RECORD_BYTES",
    "PRODUCER_DEFAULTS",
    "PRODUCER_REQUIRED",
    "ClientLog",
    "KafkaSink",
    "ProduceRejected",
    "TopicSpec",
    "is_too_large",
]

# Legacy rows can be wide (TOASTed text, jsonb, bytea): Kafka's 1 MB defaults would stop
# a connector on the first big row. Both the producer's limit and the topics' we create
# are raised to this; users may change either through the config.
MAX_RECORD_BYTES = 16 * 1024 * 1024

# What produce() raises when librdkafka refuses a record outright (e.g. too large).
ProduceRejected = KafkaException

# Properties correctness depends on; config.py refuses user overrides of these.
PRODUCER_REQUIRED: Mapping[str, Any] = {
    "enable.idempotence": True,  # no duplicate or reordered record on producer retries
    "acks": "all",  # an ack means every in-sync replica has the record
    "partitioner": "murmur2_random",  # Java-compatible key -> partition mapping
    "max.in.flight.requests.per.connection": 5,  # the idempotent producer's ordering limit
}

# Tunable defaults; users may override them through kafka.properties.
PRODUCER_DEFAULTS: Mapping[str, Any] = {
    "compression.type": "lz4",  # cheap on CPU, good on JSON
    "linger.ms": 5,  # batches fill in a few ms at load and add little latency when idle
    "batch.num.messages": 10000,
    "batch.size": 1_000_000,
    # librdkafka's own buffer: a second bound behind the pipeline's in-flight limit
    # (its default, 1 GiB, is more than a daemon beside a database should hold).
    "queue.buffering.max.kbytes": 262_144,
    "message.max.bytes": MAX_RECORD_BYTES,
}

ADMIN_TIMEOUT_S = 15.0

# librdkafka repeats a broker-down line every few hundred ms; say each thing once a while.
CLIENT_LOG_REPEAT_S = 30.0


def is_too_large(exc: BaseException) -> bool:
    """Whether librdkafka refused a record for its size."""
    return bool(exc.args) and getattr(exc.args[0], "name", lambda: "")() == "MSG_SIZE_TOO_LARGE"


class ClientLog:
    """Routes librdkafka's log lines and errors into structlog, without the repeats.

    confluent-kafka calls ``log(level, fmt, *args)`` (the ``logging.Logger`` shape) from
    ``poll()``; without a logger, librdkafka writes raw lines to stderr, which breaks
    JSON-lines logging and floods it while a broker is down.
    """

    def __init__(self, log: Any) -> None:
        self._log = log
        self._last: dict[str, float] = {}

    def _due(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -CLIENT_LOG_REPEAT_S) < CLIENT_LOG_REPEAT_S:
            return False
        self._last[key] = now
        return True

    def log(self, level: int, fmt: str, *args: Any) -> None:
        message = fmt % args if args else fmt
        facility = str(args[0]) if args else ""
        if not self._due(f"log:{facility}"):
            return
        if level >= logging.ERROR:
            self._log.error("kafka_client_log", message=message)
        elif level >= logging.WARNING:
            self._log.warning("kafka_client_log", message=message)
        else:
            self._log.info("kafka_client_log", message=message)

    def error(self, error: Any) -> None:
        """The producer's ``error_cb``: transient trouble that librdkafka retries itself."""
        if self._due(f"error:{error.code() if hasattr(error, 'code') else error}"):
            self._log.warning("kafka_client_error", error=str(error))


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic cdc needs, with the cleanup policy its meaning depends on."""

    name: str
    partitions: int
    replication_factor: int  # -1: the broker's default.replication.factor
    cleanup_policy: str  # "delete" (retention topic) or "compact" (latest state)
    configs: Mapping[str, str] = field(default_factory=dict)


class KafkaSink:
    """One connector's producer and admin client."""

    def __init__(
        self,
        bootstrap_servers: str,
        properties: Mapping[str, Any],
        *,
        client_id: str,
        max_queued_records: int,
        log: Any,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        client_log = ClientLog(log)
        common: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            **properties,
            "logger": client_log,
            "error_cb": client_log.error,
        }
        producer_config = {
            **PRODUCER_DEFAULTS,
            **common,
            **PRODUCER_REQUIRED,
            "client.id": client_id,
            "queue.buffering.max.messages": max_queued_records,
        }
        self._common = common
        self._client_id = client_id
        try:
            self._producer = Producer(producer_config)
            self._admin = AdminClient({**common, "client.id": f"{client_id}-admin"})
        except KafkaException as exc:
            raise SinkError(f"invalid Kafka client configuration: {exc}") from exc
        self.produce = self._producer.produce
        self.poll = self._producer.poll

    def list_topics(self) -> set[str]:
        """Topic names; also the start-up check that Kafka answers at all."""
        try:
            return set(self._admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics)
        except KafkaException as exc:
            raise SinkError(
                f"cannot reach Kafka at {self.bootstrap_servers} within {ADMIN_TIMEOUT_S:.0f}s:"
                f" {exc}. Check kafka.bootstrap_servers and kafka.properties (security.protocol,"
                " sasl.*) in the daemon config"
            ) from exc

    def partitions(self, topic: str) -> int:
        """How many partitions ``topic`` has (for records written to every partition)."""
        metadata = self._admin.list_topics(topic, timeout=ADMIN_TIMEOUT_S).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise SinkError(f"topic {topic!r} has no partitions visible to cdc", topic=topic)
        return len(metadata.partitions)

    def records_written(self, topics: Iterable[str]) -> dict[str, int]:
        """How many records each existing topic has ever received (its high watermarks).

        High watermarks never decrease, even when retention deletes old records, so a
        non-zero count means "this topic has been written to".
        """
        names = list(topics)
        metadata = self._admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics
        consumer = Consumer(
            {**self._common, "group.id": f"{self._client_id}-probe", "enable.auto.commit": False}
        )
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
            raise SinkError(f"cannot read topic offsets from Kafka: {exc}") from exc
        finally:
            consumer.close()
        return counts

    def read_latest(self, topic: str) -> dict[bytes, bytes]:
        """The latest value of every key of a small compacted topic, read to its end.

        For the connector's state topic: a handful of records, read once at start.
        Keys whose latest record is a tombstone are absent.
        """
        metadata = self._admin.list_topics(topic, timeout=ADMIN_TIMEOUT_S).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return {}
        consumer = Consumer(
            {
                **self._common,
                "group.id": f"{self._client_id}-state",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        latest: dict[bytes, bytes] = {}
        try:
            partitions = list(metadata.partitions)
            ends = {
                p: consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=ADMIN_TIMEOUT_S, cached=False
                )[1]
                for p in partitions
            }
            pending = {p for p, end in ends.items() if end > 0}
            consumer.assign([TopicPartition(topic, p, 0) for p in pending])
            deadline = time.monotonic() + ADMIN_TIMEOUT_S
            while pending:
                if time.monotonic() > deadline:
                    raise SinkError(f"timed out reading state topic {topic!r}", topic=topic)
                for message in consumer.consume(num_messages=1000, timeout=0.5):
                    partition = message.partition()
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            pending.discard(partition)
                            continue
                        raise SinkError(f"cannot read state topic {topic!r}: {error}", topic=topic)
                    key, value = message.key(), message.value()
                    if key is not None:
                        if value is None:
                            latest.pop(key, None)
                        else:
                            latest[key] = value
                    offset = message.offset()
                    if (
                        partition is not None
                        and offset is not None
                        and offset + 1 >= ends[partition]
                    ):
                        pending.discard(partition)
        except KafkaException as exc:
            raise SinkError(f"cannot read state topic {topic!r}: {exc}", topic=topic) from exc
        finally:
            consumer.close()
        return latest

    def write_state(self, topic: str, key: bytes, value: bytes, *, wait: bool) -> None:
        """Produce one state record; with ``wait``, return only once Kafka holds it."""
        failures: list[Any] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(err)

        self._producer.produce(topic, value, key, on_delivery=delivered)
        if wait:
            if self._producer.flush(ADMIN_TIMEOUT_S):
                raise SinkError(
                    f"Kafka did not acknowledge state in {topic!r} in time", topic=topic
                )
            if failures:
                raise SinkError(f"Kafka refused state in {topic!r}: {failures[0]}", topic=topic)

    def ensure_topics(self, specs: Iterable[TopicSpec]) -> list[str]:
        """Create missing topics; refuse existing ones whose cleanup policy is wrong.

        Returns the names of the topics created.
        """
        wanted = {spec.name: spec for spec in specs}
        if not wanted:
            return []
        existing = self.list_topics()
        missing = [spec for name, spec in wanted.items() if name not in existing]
        created: list[str] = []
        if missing:
            new_topics = [
                NewTopic(
                    spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=spec.replication_factor,
                    config={
                        "max.message.bytes": str(MAX_RECORD_BYTES),
                        "cleanup.policy": spec.cleanup_policy,
                        **spec.configs,
                    },
                )
                for spec in missing
            ]
            for name, future in self._admin.create_topics(
                new_topics, request_timeout=ADMIN_TIMEOUT_S
            ).items():
                try:
                    future.result()
                    created.append(name)
                except KafkaException as exc:
                    if exc.args and exc.args[0].name() == "TOPIC_ALREADY_EXISTS":
                        continue  # created concurrently: checked below like any other
                    raise SinkError(f"cannot create topic {name!r}: {exc}", topic=name) from exc
        self._check_cleanup_policies([wanted[n] for n in wanted if n not in created])
        return created

    def _check_cleanup_policies(self, specs: list[TopicSpec]) -> None:
        if not specs:
            return
        resources = [ConfigResource(ConfigResource.Type.TOPIC, spec.name) for spec in specs]
        futures = self._admin.describe_configs(resources, request_timeout=ADMIN_TIMEOUT_S)
        by_name = {spec.name: spec for spec in specs}
        for resource, future in futures.items():
            spec = by_name[resource.name]
            try:
                configs = future.result()
            except KafkaException as exc:
                raise SinkError(
                    f"cannot read the configuration of topic {spec.name!r}: {exc}",
                    topic=spec.name,
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

    def topic_configs(self, name: str) -> dict[str, str]:
        """The broker's view of a topic's configuration (for status output and tests)."""
        resource = ConfigResource(ConfigResource.Type.TOPIC, name)
        future = self._admin.describe_configs([resource], request_timeout=ADMIN_TIMEOUT_S)
        configs = future[resource].result()
        return {key: entry.value for key, entry in configs.items()}

    def flush(self, timeout: float) -> int:
        """Wait for outstanding records; returns how many are still unacknowledged."""
        return int(self._producer.flush(timeout))

    def __len__(self) -> int:
        return len(self._producer)
