"""The exceptions of ``cdc``: one small tree, each message telling the user what to do.

    CdcError
    ├── ConfigError        a YAML file or key is wrong (carries ``source`` and ``key``)
    ├── SourceError        PostgreSQL refused or broke the replication conversation
    │   ├── ProtocolError  bytes that are not valid replication/pgoutput (``lsn``, ``offset``)
    │   └── SlotError      the slot or publication is missing, taken or unusable
    ├── ConversionError    a column value cannot be turned into JSON (table, column, type, LSN)
    └── SinkError          Kafka refused an event or a topic (``topic``)
        ├── TopicConfigError    an existing topic has the wrong cleanup policy
        └── RecordTooLargeError one event is larger than Kafka accepts

Third-party exceptions (psycopg, confluent-kafka, pydantic) are translated only at the
edges, with ``raise ... from exc``. Anything else escaping the pure core is a bug.
"""

from __future__ import annotations

__all__ = [
    "CdcError",
    "ConfigError",
    "ConversionError",
    "ProtocolError",
    "RecordTooLargeError",
    "SinkError",
    "SlotError",
    "SourceError",
    "TopicConfigError",
]


class CdcError(Exception):
    """Base of every error ``cdc`` raises on purpose."""


class ConfigError(CdcError):
    """A configuration file is missing, unreadable or invalid."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.source = source
        self.key = key
        where = ""
        if source:
            where = f"{source}: "
        if key:
            where += f"{key}: "
        super().__init__(f"{where}{message}")


class SourceError(CdcError):
    """PostgreSQL refused, dropped or broke the replication conversation."""


class ProtocolError(SourceError):
    """Bytes from the server that are not a valid replication or pgoutput message."""

    def __init__(self, message: str, *, lsn: int | None = None, offset: int | None = None):
        self.lsn = lsn
        self.offset = offset
        super().__init__(message)


class SlotError(SourceError):
    """The replication slot or the publication cannot be used as configured."""


class ConversionError(CdcError):
    """A column value that cannot be represented exactly in JSON."""

    def __init__(
        self,
        message: str,
        *,
        table: str | None = None,
        column: str | None = None,
        type_name: str | None = None,
        lsn: int | None = None,
    ):
        self.table = table
        self.column = column
        self.type_name = type_name
        self.lsn = lsn
        super().__init__(message)


class SinkError(CdcError):
    """Kafka refused an event or a topic operation."""

    def __init__(self, message: str, *, topic: str | None = None):
        self.topic = topic
        super().__init__(message)


class TopicConfigError(SinkError):
    """An existing topic is configured against what ``cdc`` needs (e.g. its cleanup policy)."""


class RecordTooLargeError(SinkError):
    """One record is larger than the producer or the topic accepts; retrying cannot help."""
