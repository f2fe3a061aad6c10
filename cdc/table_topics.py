"""The Kafka topics of a connector's tables: each table's retention and compacted topic.

A table's topics are made once per run, before its first record: at set-up for the
published tables, and in the stream when a Relation message names a table not seen yet
(one added to the publication while streaming). The topics this run created are kept:
they are empty, so the lost-slot guard need not look for data in them.

It must not produce records or decide anything about the slot; the topics of routed
records (messages, outbox) and of schema changes belong to ``side_channel``.
"""

from __future__ import annotations

from typing import Any

from cdc.config import TopicsConfig
from cdc.sink import KafkaSink, TopicSpec

__all__ = ["TableTopics"]


class TableTopics:
    """Which tables' topics exist (made or checked by this run), and which it created."""

    __slots__ = ("_connector", "_database", "_log", "_sink", "_topics", "created", "ensured")

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
                    {"retention.ms": "-1", **topics.retention_configs},
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
        if not specs:
            return
        created = self._sink.ensure_topics(specs)
        self.created.update(created)
        for name in created:
            self._log.info("topic_created", topic=name)
        self.ensured.update((schema, table) for schema, table, _ in tables)
