"""The Kafka topics of a connector's tables: each table's retention and compacted topic.

A table's topics are made once per run, before its first record: at set-up for the
published tables, and in the stream when a Relation message names a table not seen yet
(one added to the publication while streaming). The topics this run created are kept:
they are empty, so the lost-slot guard need not look for data in them.

It also makes the connector's other topics that keep every record (messages, outbox,
schema changes), so what "kept forever" means is said once. It must not produce records
or decide anything about the slot.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cdc.config import TopicsConfig
from cdc.kafka.sink import KafkaSink, TopicSpec

__all__ = ["KEEP_EVERY_RECORD", "TableTopics"]

# The topic config of a topic that keeps every record (the log is the source of truth);
# retention topics start from it and users may override it through retention_configs.
KEEP_EVERY_RECORD = {"retention.ms": "-1"}


class TableTopics:
    """Which tables' topics exist (made or checked by this run), and which it created."""

    __slots__ = (
        "_connector",
        "_database",
        "_log",
        "_log_topics",
        "_sink",
        "_topics",
        "created",
        "ensured",
    )

    def __init__(
        self, *, connector: str, database: str, topics: TopicsConfig, sink: KafkaSink, log: Any
    ) -> None:
        """Args:
        connector: the connector's name, as it appears in topic names.
        database: the source database's name, as it appears in topic names.
        topics: the effective topic settings (names, partitions, configs).
        sink: the connector's Kafka sink (its admin client makes the topics).
        log: the connector's bound logger (``connector`` and ``slot`` already bound).
        """
        self._connector = connector
        self._database = database
        self._topics = topics
        self._sink = sink
        self._log = log
        # (schema, table) whose topics exist: the stream checks it at Relation messages.
        self.ensured: set[tuple[str, str]] = set()
        # Topics this start created: empty, so the lost-slot guard skips them.
        self.created: set[str] = set()
        # The other topics that keep every record, made (or checked) by this run.
        self._log_topics: set[str] = set()

    def ensure(self, tables: list[tuple[str, str, bool]]) -> None:
        """Make the topics of these (schema, table, has_key) tables unless done already:
        the retention topic always, the compacted one for a table with a key.

        Raises:
            TopicConfigError: an existing topic has the wrong cleanup policy.
        """
        topics = self._topics
        specs: list[TopicSpec] = []
        for schema, table, has_key in tables:
            if (schema, table) in self.ensured:
                continue
            specs.append(
                TopicSpec(
                    topics.retention_topic(self._connector, self._database, schema, table),
                    topics.partitions,
                    topics.replication_factor,
                    "delete",
                    {**KEEP_EVERY_RECORD, **topics.retention_configs},
                )
            )
            if has_key:
                specs.append(
                    TopicSpec(
                        topics.compacted_topic(self._connector, self._database, schema, table),
                        topics.partitions,
                        topics.replication_factor,
                        "compact",
                        dict(topics.compacted_configs),
                    )
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
        topics = self._topics
        self._create(
            [
                TopicSpec(
                    name,
                    partitions or topics.partitions,
                    topics.replication_factor,
                    "delete",
                    dict(KEEP_EVERY_RECORD),
                )
                for name in wanted
            ]
        )
        self._log_topics.update(wanted)

    def _create(self, specs: list[TopicSpec]) -> None:
        created = self._sink.ensure_topics(specs)
        self.created.update(created)
        for name in created:
            self._log.info("topic_created", topic=name)
