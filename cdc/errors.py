"""The exceptions of ``cdc``: one small tree, each message telling the user what to do.

    CdcError               ``retryable``: can a restart from the durable position heal it?
    ├── ConfigError        a YAML file or key is wrong (carries ``source`` and ``key``)
    ├── SourceError        PostgreSQL refused or broke the replication conversation
    │   ├── ProtocolError  bytes that are not valid replication/pgoutput (``lsn``, ``offset``)
    │   └── SlotError      the slot or publication is missing, taken or unusable
    ├── ConversionError    a column value cannot be turned into JSON (table, column, type, LSN)
    ├── SinkError          Kafka refused an event or a topic (``topic``)
    │   ├── TopicConfigError    an existing topic has the wrong cleanup policy
    │   ├── RecordTooLargeError one event is larger than Kafka accepts
    │   └── FencedError         another instance took the connector's transactional id
    ├── TargetError        a replay's target database refused a statement or a value
    └── ReplayValueError   an event's value cannot be written back exactly (column, type)

    Stopped                not an error: a stop was requested while waiting (SIGTERM)

Retryable errors heal by themselves (a network blip, a broker or server restart): the
daemon restarts the connector with backoff. The others need a person (a setting, a
privilege, a topic): the connector stops with the message, and nothing is retried. Each
edge decides which is which in one place (``cdc.postgres.errors``, ``cdc.kafka.errors``).

Third-party exceptions (psycopg, confluent-kafka, pydantic) are translated only at the
edges, with ``raise ... from exc``. Anything else escaping the pure core is a bug.
"""

from __future__ import annotations

__all__ = [
    "CdcError",
    "ConfigError",
    "ConversionError",
    "FencedError",
    "ProtocolError",
    "RecordTooLargeError",
    "ReplayValueError",
    "SinkError",
    "SlotError",
    "SourceError",
    "Stopped",
    "TargetError",
    "TopicConfigError",
]


class CdcError(Exception):
    """Base of every error ``cdc`` raises on purpose."""

    #: Whether restarting the connector (from what Kafka durably holds) can heal it.
    retryable: bool = False


class Stopped(Exception):  # noqa: N818 - a control-flow signal, not an error
    """A stop was requested while the connector waited (for Kafka, for a transaction).

    Raised from the waits so the stop travels up to the pipeline's shutdown in one step,
    instead of a ``bool`` returned through every layer.
    """


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
    """PostgreSQL refused, dropped or broke the replication conversation.

    Retryable unless the edge says otherwise (a wrong password, a missing privilege, a
    database that does not exist are not).
    """

    retryable = True

    def __init__(self, message: str, *, retryable: bool | None = None):
        if retryable is not None:
            self.retryable = retryable
        super().__init__(message)


class ProtocolError(SourceError):
    """Bytes from the server that are not a valid replication or pgoutput message."""

    retryable = False

    def __init__(self, message: str, *, lsn: int | None = None, offset: int | None = None):
        self.lsn = lsn
        self.offset = offset
        super().__init__(message)


class SlotError(SourceError):
    """The replication slot or the publication cannot be used as configured."""

    retryable = False


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
    """Kafka refused an event or a topic operation.

    Retryable unless the edge says otherwise (authorization, an invalid setting, a
    replication factor the cluster cannot meet are not).
    """

    retryable = True

    def __init__(self, message: str, *, topic: str | None = None, retryable: bool | None = None):
        self.topic = topic
        if retryable is not None:
            self.retryable = retryable
        super().__init__(message)


class TopicConfigError(SinkError):
    """An existing topic is configured against what ``cdc`` needs (e.g. its cleanup policy)."""

    retryable = False


class RecordTooLargeError(SinkError):
    """One record is larger than the producer or the topic accepts; retrying cannot help."""

    retryable = False


class FencedError(SinkError):
    """Another producer initialised this connector's transactional id: another instance
    runs the connector now. Retrying would fence it back, so this one stops."""

    retryable = False


class TargetError(CdcError):
    """The replay's target database refused a connection, a statement or a value.

    Retryable when the connection broke or the server is restarting; not when a value,
    a statement or a privilege is refused (the message names the table and statement).
    """

    retryable = True

    def __init__(self, message: str, *, retryable: bool | None = None):
        if retryable is not None:
            self.retryable = retryable
        super().__init__(message)


class ReplayValueError(CdcError):
    """A column value of an event that the replay cannot turn back into exactly the value
    the source database had, or a ``values:`` setting under which no exact inverse exists
    (``column``, ``type_name``). Retrying cannot help: the message says which setting or
    which event is at fault."""

    def __init__(self, message: str, *, column: str | None = None, type_name: str | None = None):
        self.column = column
        self.type_name = type_name
        super().__init__(message)
