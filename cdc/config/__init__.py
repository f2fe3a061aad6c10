"""Configuration of ``cdc``: the daemon-wide file and one file per connector.

Its one job is to turn YAML text into frozen, validated models, and every mistake into a
:class:`~cdc.errors.ConfigError` naming the file, the dotted key and what is expected.
``load_daemon_config_text`` and ``load_connector_config_text`` are pure (text and an
environment mapping in, a model out); only :func:`load_files` touches the file system.
This module must not connect to PostgreSQL or Kafka, log, or print, and no error message
or ``repr`` it produces may contain a password.

Environment variables are interpolated into string *values* after YAML parsing, so a
secret full of YAML-special characters (``:``, ``#``, quotes) is taken verbatim:
``${NAME}``, ``${NAME:-default}`` (default used when unset or empty) and ``$${`` for a
literal ``${``. That file-format machinery (YAML, interpolation, error messages) lives in
:mod:`cdc.config.files`; this module holds the models and the ``load_*`` entry points.
"""

from __future__ import annotations

import os
import re
import socket
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from cdc.config.files import config_error, load_model, read_config_file, yaml_type
from cdc.errors import ConfigError
from cdc.protocol.values import ValueOptions

__all__ = [
    "TEMPLATE_PLACEHOLDERS",
    "ColumnSelection",
    "ConnectorConfig",
    "DaemonConfig",
    "DeadLetterConfig",
    "ExactlyOnceConfig",
    "FleetConfig",
    "KafkaConfig",
    "LogConfig",
    "MessagesConfig",
    "MetricsConfig",
    "OutboxConfig",
    "PostgresConfig",
    "ReplayConfig",
    "SnapshotConfig",
    "TableOptions",
    "ToastConfig",
    "TopicsConfig",
    "TopicsOverride",
    "ValuesConfig",
    "WalRetentionConfig",
    "load_connector_config_text",
    "load_daemon_config_text",
    "load_files",
]

#: Placeholders a topic name template may use.
TEMPLATE_PLACEHOLDERS = frozenset({"connector", "database", "schema", "table"})

# Kafka topic names: legal characters and maximum length (Kafka's Topic.validate).
_TOPIC_ILLEGAL_CHAR = re.compile(r"[^A-Za-z0-9._-]")
_TOPIC_MAX_LENGTH = 249

# PostgreSQL identifiers are at most NAMEDATALEN-1 = 63 bytes. Slot names are further
# restricted to lower-case letters, digits and underscores (ReplicationSlotValidateName);
# publications get the same rule so the source can put them in SQL without quoting.
_SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")
_CONNECTOR_NAME = re.compile(r"[A-Za-z0-9_.-]+")

# librdkafka properties that cdc sets itself because delivery guarantees depend on them.
# Each maps to the reason shown to the user.
_OWNED_KAFKA_PROPERTIES: Mapping[str, str] = {
    "bootstrap.servers": "it is set from kafka.bootstrap_servers",
    "metadata.broker.list": "it is set from kafka.bootstrap_servers",
    "enable.idempotence": (
        "cdc enables the idempotent producer so retries never duplicate or reorder changes"
    ),
    "acks": (
        "cdc uses acks=all so a change is confirmed to PostgreSQL only once every "
        "in-sync replica has it"
    ),
    "request.required.acks": (
        "cdc uses acks=all so a change is confirmed to PostgreSQL only once every "
        "in-sync replica has it"
    ),
    "max.in.flight.requests.per.connection": (
        "cdc bounds in-flight requests so the idempotent producer keeps per-key order"
    ),
    "max.in.flight": (
        "cdc bounds in-flight requests so the idempotent producer keeps per-key order"
    ),
    "retries": "the idempotent producer must retry until delivery.timeout.ms",
    "message.send.max.retries": "the idempotent producer must retry until delivery.timeout.ms",
    "partitioner": (
        "cdc fixes the partitioner so every change of a row key lands on the same "
        "partition as before (compaction and per-key order depend on it)"
    ),
    "transactional.id": (
        "cdc derives it from the connector name (cdc-<connector>) so a restarted or"
        " second instance fences the old one"
    ),
    "isolation.level": "cdc reads its own state read_committed",
    "delivery.report.only.error": (
        "cdc needs a delivery report for every event to know which LSN is safe to confirm"
    ),
}

# Topic-level configs that define what each topic *is*; the sink sets them. (retention.ms
# defaults to -1, every change kept forever, but a user may choose a finite retention.)
_OWNED_RETENTION_TOPIC_CONFIGS: Mapping[str, str] = {
    "cleanup.policy": "the retention topic is always cleanup.policy=delete",
}
_OWNED_COMPACTED_TOPIC_CONFIGS: Mapping[str, str] = {
    "cleanup.policy": "the compacted topic is always cleanup.policy=compact",
}

# Kafka property names that carry secrets: masked in repr().
_SECRET_PROPERTY = re.compile(r"password|secret|ssl\.key\.pem|oauthbearer\.config|jaas", re.I)


# --------------------------------------------------------------------------- validators


def _check_template(template: str) -> str:
    """Reject unknown placeholders and characters Kafka would refuse, at load time."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(
            f"is not a valid topic name template ({exc}); write {{ and }} only around "
            f"one of {_placeholder_list()}"
        ) from None
    literal = []
    for text, field, spec, conversion in parsed:
        literal.append(text)
        if field is None:
            continue
        if field in TEMPLATE_PLACEHOLDERS and (spec or conversion):
            raise ValueError(
                f"placeholder {{{field}}} must not carry a conversion or format spec "
                f"(write plain {{{field}}})"
            )
        if field not in TEMPLATE_PLACEHOLDERS:
            raise ValueError(
                f"unknown placeholder {{{field}}} in topic name template; "
                f"use only {_placeholder_list()}"
            )
    text = "".join(literal)
    bad = sorted(set(_TOPIC_ILLEGAL_CHAR.findall(text)))
    if bad:
        raise ValueError(
            f"topic name template contains {''.join(bad)!r}; Kafka topic names allow only "
            "letters, digits, '.', '_' and '-'"
        )
    if not template:
        raise ValueError("topic name template must not be empty")
    return template


def _placeholder_list() -> str:
    return ", ".join(f"{{{name}}}" for name in sorted(TEMPLATE_PLACEHOLDERS))


def _check_replication_factor(value: int) -> int:
    if value == -1 or value >= 1:
        return value
    raise ValueError("must be -1 (the broker's default.replication.factor) or at least 1")


def _stringify_topic_configs(value: Any) -> Any:
    """Kafka's admin API takes topic configs as strings; accept YAML numbers and booleans."""
    if not isinstance(value, Mapping):
        return value
    converted: dict[Any, Any] = {}
    for key, item in value.items():
        if isinstance(item, bool):
            converted[key] = "true" if item else "false"
        elif isinstance(item, int | float):
            converted[key] = str(item)
        else:
            converted[key] = item
    return converted


def _owned_key_checker(owned: Mapping[str, str], where: str) -> Any:
    def check(key: str) -> str:
        if not key:
            raise ValueError("property names must not be empty")
        reason = owned.get(key)
        if reason is not None:
            raise ValueError(f"{key!r} cannot be set in {where}: {reason}; remove it")
        return key

    return check


_TopicTemplate = Annotated[str, AfterValidator(_check_template)]
_Partitions = Annotated[int, Field(ge=1)]
_ReplicationFactor = Annotated[int, AfterValidator(_check_replication_factor)]
_RetentionConfigs = Annotated[
    dict[
        Annotated[
            str,
            AfterValidator(_owned_key_checker(_OWNED_RETENTION_TOPIC_CONFIGS, "retention_configs")),
        ],
        str,
    ],
    BeforeValidator(_stringify_topic_configs),
]
_CompactedConfigs = Annotated[
    dict[
        Annotated[
            str,
            AfterValidator(_owned_key_checker(_OWNED_COMPACTED_TOPIC_CONFIGS, "compacted_configs")),
        ],
        str,
    ],
    BeforeValidator(_stringify_topic_configs),
]
_KafkaPropertyName = Annotated[
    str, AfterValidator(_owned_key_checker(_OWNED_KAFKA_PROPERTIES, "kafka.properties"))
]


def _check_property_value(value: Any) -> Any:
    # One clear message instead of pydantic's one-error-per-union-member.
    if not isinstance(value, bool | int | float | str):
        # pydantic turns only ValueError (not TypeError) into a validation error.
        raise ValueError(  # noqa: TRY004
            f"must be a string, number or boolean, found {yaml_type(value)}"
        )
    return value


# In smart-union mode an exact type match wins, so YAML `true` stays a bool and `5` an int.
_KafkaPropertyValue = Annotated[bool | int | float | str, BeforeValidator(_check_property_value)]


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    """Base: unknown keys are errors (typos must not be silently ignored), values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(_Model):
    """How to reach Kafka, plus pass-through librdkafka properties."""

    bootstrap_servers: Annotated[str, Field(min_length=1)]
    properties: dict[_KafkaPropertyName, _KafkaPropertyValue] = Field(default_factory=dict)

    def librdkafka_config(self) -> dict[str, str]:
        """Return ``bootstrap.servers`` and the pass-through properties as librdkafka strings.

        The sink adds the properties cdc owns (``enable.idempotence``, ``acks`` …) on top.
        """
        config = {"bootstrap.servers": self.bootstrap_servers}
        for key, value in self.properties.items():
            if isinstance(value, bool):
                config[key] = "true" if value else "false"
            else:
                config[key] = str(value)
        return config

    def __repr_args__(self) -> Any:
        # Keep sasl.password, ssl.key.password … out of repr(), str() and tracebacks.
        for name, value in super().__repr_args__():
            if name == "properties" and isinstance(value, Mapping):
                masked = {
                    key: "**********" if _SECRET_PROPERTY.search(key) else item
                    for key, item in value.items()
                }
                yield name, masked
            else:
                yield name, value


class TopicsConfig(_Model):
    """Topic names and creation settings; the daemon defaults, merged per connector."""

    retention: _TopicTemplate = "{connector}.{schema}.{table}"
    compacted: _TopicTemplate = "{connector}.{schema}.{table}.latest"
    partitions: _Partitions = 6
    replication_factor: _ReplicationFactor = 3
    retention_configs: _RetentionConfigs = Field(default_factory=dict)
    compacted_configs: _CompactedConfigs = Field(default_factory=dict)

    @model_validator(mode="after")
    def _distinct_templates(self) -> TopicsConfig:
        if self.retention == self.compacted:
            raise ValueError(
                "retention and compacted topic templates are equal; they must name "
                "different topics (a topic cannot be both kept forever and compacted)"
            )
        return self

    def retention_topic(self, connector: str, database: str, schema: str, table: str) -> str:
        """Name of the topic that keeps every change of ``schema.table``.

        Raises:
            ConfigError: the rendered name is longer than Kafka allows.
        """
        return _render_topic(
            self.retention,
            "topics.retention",
            connector=connector,
            database=database,
            schema=schema,
            table=table,
        )

    def compacted_topic(self, connector: str, database: str, schema: str, table: str) -> str:
        """Name of the compacted topic holding the latest row per key of ``schema.table``.

        Raises:
            ConfigError: the rendered name is longer than Kafka allows.
        """
        return _render_topic(
            self.compacted,
            "topics.compacted",
            connector=connector,
            database=database,
            schema=schema,
            table=table,
        )


def _render_topic(
    template: str, key: str, *, connector: str, database: str, schema: str, table: str
) -> str:
    # PostgreSQL names may contain characters Kafka refuses; like Debezium, replace them
    # with "_" rather than fail on a table the user cannot rename.
    values = {
        "connector": _TOPIC_ILLEGAL_CHAR.sub("_", connector),
        "database": _TOPIC_ILLEGAL_CHAR.sub("_", database),
        "schema": _TOPIC_ILLEGAL_CHAR.sub("_", schema),
        "table": _TOPIC_ILLEGAL_CHAR.sub("_", table),
    }
    name = template.format_map(values)
    if len(name) > _TOPIC_MAX_LENGTH or name in {".", ".."}:
        raise ConfigError(
            f"topic name for {schema}.{table} would be {name[:60]!r}… ({len(name)} characters); "
            f"Kafka allows at most {_TOPIC_MAX_LENGTH}: shorten the template",
            key=key,
        )
    return name


class TopicsOverride(_Model):
    """Per-connector overrides of the daemon's ``topics`` defaults; every key optional."""

    retention: _TopicTemplate | None = None
    compacted: _TopicTemplate | None = None
    partitions: _Partitions | None = None
    replication_factor: _ReplicationFactor | None = None
    retention_configs: _RetentionConfigs | None = None
    compacted_configs: _CompactedConfigs | None = None


class LogConfig(_Model):
    """Log level and rendering."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class MetricsConfig(_Model):
    """Where the Prometheus endpoint listens; ``port: null`` disables it."""

    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    # 0 asks the OS for any free port (useful in tests).
    port: Annotated[int, Field(ge=0, le=65535)] | None = 9187


class FleetConfig(_Model):
    """Several ``cdc run`` sharing the connectors through a Kafka consumer group
    (docs/operations.md, "Running a fleet"); absent: this process runs every connector."""

    # Names the consumer group (cdc-fleet-<group>) and its assignment topic
    # (__cdc_fleet.<group>): Kafka topic characters, short enough for the topic name.
    group: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]
    # The static member id (group.instance.id): stable across restarts of one instance
    # (a pod name, a host name), unique within the group.
    instance_id: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        default_factory=socket.gethostname
    )
    # How long the group waits for a silent instance before handing its connectors over:
    # the takeover time after a crash, against flapping on a GC pause or a network blip.
    # The broker bounds it (group.min/max.session.timeout.ms, 6 s to 30 min by default).
    session_timeout_ms: Annotated[int, Field(ge=1000, le=3_600_000)] = 10_000
    heartbeat_interval_ms: Annotated[int, Field(ge=100, le=3_600_000)] = 1_000
    # The rebalance's bound (librdkafka's max.poll.interval.ms): an instance gets half of
    # it to stop a revoked connector cleanly.
    rebalance_timeout_ms: Annotated[int, Field(ge=2000, le=3_600_000)] = 60_000
    # SIGTERM leaves the group, so the connectors move at once; false: they wait for this
    # instance to come back (a rolling restart) or for the session timeout.
    leave_on_stop: bool = True

    @model_validator(mode="after")
    def _timeouts(self) -> FleetConfig:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError(
                "heartbeat_interval_ms must be at most a third of session_timeout_ms,"
                " so a member survives a lost heartbeat or two"
            )
        if self.rebalance_timeout_ms < self.session_timeout_ms:
            raise ValueError("rebalance_timeout_ms must be at least session_timeout_ms")
        return self


class DaemonConfig(_Model):
    """The daemon-wide file (``config/cdc.yaml``)."""

    kafka: KafkaConfig
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    fleet: FleetConfig | None = None


class PostgresConfig(_Model):
    """How to reach PostgreSQL. The DSN is secret: it holds the password."""

    dsn: SecretStr

    @field_validator("dsn")
    @classmethod
    def _not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError(
                "must not be empty; give a libpq connection string, e.g. "
                "postgresql://user:${PASSWORD}@host:5432/dbname"
            )
        return value


class ValuesConfig(_Model):
    """How column values are written where a choice exists (docs/types.md); the names
    and choices are Debezium's *.handling.mode settings where it has them."""

    decimal_handling: Literal["string", "double", "precise"] = "string"
    binary_handling: Literal["base64", "base64-url-safe", "hex"] = "base64"
    time_precision: Literal["adaptive", "adaptive_time_microseconds", "connect", "isostring"] = (
        "adaptive"
    )
    interval_handling: Literal["string", "numeric"] = "string"
    # Debezium's default hstore.handling.mode is json: the map as JSON text in a string.
    hstore_handling: Literal["map", "json"] = "json"
    # A value that cannot be converted exactly: stop the connector (naming table, column,
    # type and LSN), or publish its PostgreSQL text form and count it.
    on_conversion_error: Literal["stop", "text"] = "stop"

    def options(self) -> ValueOptions:
        """These settings as the value converters take them (daemon, replay and verify
        must read values with the same ones)."""
        return ValueOptions(
            decimal_handling=self.decimal_handling,
            binary_handling=self.binary_handling,
            time_precision=self.time_precision,
            interval_handling=self.interval_handling,
            hstore_handling=self.hstore_handling,
            on_conversion_error=self.on_conversion_error,
        )


class MessagesConfig(_Model):
    """Logical decoding messages (pg_logical_emit_message, PostgreSQL 14+)."""

    # Topic template ({connector}, {prefix}); null: messages are not published.
    topic: str | None = "{connector}.messages"
    # Only messages with these prefixes; empty: every prefix (cdc.* are cdc's own, never
    # published).
    prefixes: tuple[str, ...] = ()


class OutboxConfig(_Model):
    """The transactional outbox pattern, as Debezium's outbox event router routes it."""

    table: str | None = None  # "schema.table" of the outbox table; null: no outbox
    topic: str = "outbox.event.{aggregate_type}"  # placeholders {aggregate_type}, {connector}
    id_column: str = "id"
    aggregate_type_column: str = "aggregatetype"
    aggregate_id_column: str = "aggregateid"
    type_column: str = "type"
    payload_column: str = "payload"

    @field_validator("table")
    @classmethod
    def _normalise_table(cls, value: str | None) -> str | None:
        return None if value is None else _check_table(value)


class ExactlyOnceConfig(_Model):
    """How ``delivery: exactly_once`` groups records into Kafka transactions."""

    # A Kafka transaction is committed at once when the stream catches up between two
    # source transactions; under sustained load, after this long or this many records,
    # whichever comes first. A commit waits for every record in flight to be acknowledged
    # (tens of ms under load, bench/e2e.py): 500 ms keeps that a few percent.
    commit_interval_ms: Annotated[int, Field(ge=1, le=30_000)] = 500
    max_records: Annotated[int, Field(ge=1)] = 50_000


_SIZE = re.compile(r"\s*(\d+)\s*([KMGT]i?B|B)?\s*", re.I)
_SIZE_UNITS = {
    "b": 1,
    **{f"{p}b": 1000**i for i, p in enumerate("kmgt", 1)},
    **{f"{p}ib": 1024**i for i, p in enumerate("kmgt", 1)},
}


def _parse_size(value: Any) -> Any:
    """A size in bytes: an integer, or a string such as ``"1 GiB"`` or ``"500MB"``."""
    if isinstance(value, bool):
        # pydantic turns only ValueError (not TypeError) into a validation error.
        raise ValueError(  # noqa: TRY004
            'must be a size in bytes or a string such as "1 GiB", not a boolean'
        )
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match is None:
            raise ValueError(
                f"{value!r} is not a size: write bytes (1073741824) or a number with"
                ' B, kB, MB, GB, TB, KiB, MiB, GiB or TiB ("1 GiB")'
            )
        return int(match[1]) * _SIZE_UNITS[(match[2] or "b").lower()]
    return value


_Size = Annotated[int, BeforeValidator(_parse_size), Field(ge=1)]


class WalRetentionConfig(_Model):
    """How much WAL the connector's slot may hold back on the legacy server
    (docs/operations.md#retained-wal): PostgreSQL keeps every WAL segment from the slot's
    ``restart_lsn`` on, so a stuck connector (Kafka down) fills the legacy disk."""

    # Above this, cdc_slot_retained_wal_bytes is worth an alert and a warning is logged
    # (once when crossing, then every 10 minutes while above); null: never warn.
    warn_bytes: _Size | None = 1024**3
    # Above this the connector stops (fatal, not retried) so a DBA can act before the
    # disk fills; null (the default): never stop, PostgreSQL's max_slot_wal_keep_size
    # is then the only limit.
    stop_bytes: _Size | None = None
    # How often the slot's retained WAL is read (one catalog query), also while Kafka
    # is waited for.
    check_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0

    @model_validator(mode="after")
    def _stop_above_warn(self) -> WalRetentionConfig:
        if (
            self.warn_bytes is not None
            and self.stop_bytes is not None
            and self.stop_bytes < self.warn_bytes
        ):
            raise ValueError(
                f"stop_bytes ({self.stop_bytes}) is below warn_bytes ({self.warn_bytes}):"
                " the warning must come before the stop; raise stop_bytes or lower warn_bytes"
            )
        return self


def _check_dead_letter_topic(template: str) -> str:
    """Only ``{connector}`` may appear; the rest must be a legal Kafka topic name."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"is not a valid topic name template ({exc})") from None
    if any(f != "connector" for f in fields):
        raise ValueError("the only placeholder a dead-letter topic may use is {connector}")
    bad = sorted(set(_TOPIC_ILLEGAL_CHAR.findall(template.replace("{connector}", ""))))
    if bad or not template:
        raise ValueError(
            "must be a Kafka topic name (letters, digits, '.', '_' and '-', and {connector})"
        )
    return template


class DeadLetterConfig(_Model):
    """Records Kafka refuses for good (docs/delivery.md#dead-letter-topic). Off by default:
    such a record stops the connector ("stop, never drop"); on, it goes to this topic
    with headers saying what it was and why, and the stream goes on."""

    enabled: bool = False
    topic: Annotated[str, AfterValidator(_check_dead_letter_topic)] = (
        "{connector}.__cdc_dead_letter"
    )

    def topic_name(self, connector: str) -> str:
        """The topic for this connector."""
        return self.topic.replace("{connector}", _TOPIC_ILLEGAL_CHAR.sub("_", connector))


class ToastConfig(_Model):
    """Unchanged TOASTed values, which PostgreSQL leaves out of UPDATEs (docs/events.md)."""

    # placeholder: the value is the placeholder and the column is listed in the event's
    # unavailable_columns; fill: the value remembered from the row's last event (a local
    # store), so the compacted topic always holds whole rows.
    mode: Literal["placeholder", "fill"] = "placeholder"
    placeholder: str = "__debezium_unavailable_value"
    # The fill store (SQLite); {connector} is replaced. Keep it on persistent disk.
    store: str = "state/{connector}.toast.sqlite3"


class SnapshotConfig(_Model):
    """How a connector reads the rows that exist before streaming (docs/snapshots.md)."""

    # never | initial (once, when the slot is created) | initial_only (snapshot, then stop)
    # | when_needed (also when the slot was lost) | always (at every start)
    mode: Literal["never", "initial", "initial_only", "when_needed", "always"] = "initial"
    # Connections reading the initial snapshot in parallel, sharing one exported snapshot.
    max_workers: Annotated[int, Field(ge=1, le=32)] = 2
    # Rows per chunk of an incremental snapshot: one short query each.
    chunk_rows: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    # Cap on the rows an incremental snapshot reads per second (None: no cap).
    max_rows_per_second: Annotated[int, Field(ge=1)] | None = None
    # Tables estimated (pg_class.reltuples) above this many rows are snapshotted
    # incrementally, while streaming, even in the initial snapshot (None: never).
    incremental_above_rows: Annotated[int, Field(ge=0)] | None = None
    # Debezium-style signal table (id, type, data) a DBA inserts into to start snapshots.
    # "schema.table" or "table"; it must be in the publication.
    signal_table: str | None = None
    # Where incremental snapshots write their watermarks: logical decoding messages
    # (PostgreSQL 14+), or rows of the signal table; auto picks messages when possible.
    watermarks: Literal["auto", "logical_message", "signal_table"] = "auto"

    @model_validator(mode="after")
    def _signal_table_for_watermarks(self) -> SnapshotConfig:
        if self.watermarks == "signal_table" and self.signal_table is None:
            raise ValueError("watermarks: signal_table needs snapshot.signal_table to be set")
        return self

    @field_validator("signal_table")
    @classmethod
    def _normalise_signal_table(cls, value: str | None) -> str | None:
        return None if value is None else _check_table(value)


# Characters no sane table name holds, and that mark a pasted SQL fragment or a quoted
# name: statement ends, quotes, comments, control characters. (cdc quotes identifiers
# wherever it uses them, so this is about catching the mistake, not about injection.)
_NOT_IN_A_NAME = re.compile(r"[;'\"\\\x00-\x1f\x7f]|--|/\*")
_NAMEDATALEN = 63  # PostgreSQL truncates identifiers to NAMEDATALEN-1 bytes


def _check_table(entry: str) -> str:
    """Normalise ``table`` or ``schema.table`` to ``schema.table``; refuse what cannot
    be a table name as stored in the catalog."""
    parts = entry.split(".")
    if len(parts) == 1:
        parts = ["public", parts[0]]
    if len(parts) != 2 or not all(part.strip() for part in parts):
        raise ValueError(
            "expected 'schema.table' or 'table' (meaning public.table), with exactly "
            "the names stored in the catalog (no quotes)"
        )
    for part in parts:
        if _NOT_IN_A_NAME.search(part) or part != part.strip():
            raise ValueError(
                f"{entry!r} is not a table name: write the schema and table names exactly"
                " as stored in the catalog, without quotes, semicolons, comments or"
                " surrounding spaces"
            )
        if len(part.encode()) > _NAMEDATALEN:
            raise ValueError(
                f"{part!r} is longer than PostgreSQL's {_NAMEDATALEN}-byte identifiers"
            )
    return ".".join(parts)


def _derived_name(name: str) -> str:
    return "cdc_" + re.sub(r"[^a-z0-9_]", "_", name.lower())


_SLOT_RULE = (
    "must be 1 to 63 characters of a-z, 0-9 and _ (when omitted it is derived from name "
    "as cdc_<name>; set it explicitly if that is too long)"
)


# An HMAC key shorter than this is guessable by brute force over the hashed values.
_MIN_MASKING_KEY_BYTES = 16


class ReplayConfig(_Model):
    """A replay that ``cdc run`` keeps following: the connector's topics applied to a
    new service's database (docs/replay.md). ``cdc replay`` runs one from the shell."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    target_dsn: SecretStr
    tables: tuple[Annotated[str, AfterValidator(_check_table)], ...] | None = None
    # Legacy schema.table -> schema.table in the target (default: the same names).
    map: dict[
        Annotated[str, AfterValidator(_check_table)], Annotated[str, AfterValidator(_check_table)]
    ] = Field(default_factory=dict)
    # Commit whole source transactions only (needs provide_transaction_metadata: true).
    transactional: bool = False
    batch_changes: Annotated[int, Field(ge=1)] = 20_000
    enabled: bool = True


class ColumnSelection(_Model):
    """Which columns of a table are published: ``include`` (only these) or ``exclude``
    (all but these), never both."""

    include: tuple[Annotated[str, Field(min_length=1)], ...] | None = None
    exclude: tuple[Annotated[str, Field(min_length=1)], ...] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ColumnSelection:
        if self.include is not None and self.exclude is not None:
            raise ValueError(
                "give include (only these columns) or exclude (all but these), not both"
            )
        if self.include is None and self.exclude is None:
            raise ValueError("give include (only these columns) or exclude (all but these)")
        for names in (self.include, self.exclude):
            if names is not None and len(set(names)) != len(names):
                raise ValueError("a column is listed twice")
        if self.include is not None and not self.include:
            raise ValueError("include lists no column: list at least the key columns")
        return self


class TableOptions(_Model):
    """What of one table leaves the database (docs/configuration.md#data-controls)."""

    columns: ColumnSelection | None = None
    # A SQL boolean expression over the table's columns, PostgreSQL's publication row
    # filter (15+): rows for which it is not true are never decoded, sent or snapshotted.
    # Only PostgreSQL evaluates it; where it cannot be pushed down cdc refuses to start.
    where: Annotated[str, Field(min_length=1)] | None = None
    # column -> hash (keyed HMAC-SHA256, hex) | redact (a fixed string).
    mask: dict[Annotated[str, Field(min_length=1)], Literal["hash", "redact"]] = Field(
        default_factory=dict
    )

    @field_validator("where")
    @classmethod
    def _one_expression(cls, value: str | None) -> str | None:
        if value is not None and (";" in value or not value.strip()):
            raise ValueError(
                "must be one SQL boolean expression (no ';'), e.g. \"country <> 'XX'\""
            )
        return None if value is None else value.strip()

    @model_validator(mode="after")
    def _masked_columns_published(self) -> TableOptions:
        columns = self.columns
        for column in self.mask:
            if columns is not None and columns.exclude is not None and column in columns.exclude:
                raise ValueError(f"column {column!r} is both excluded and masked: choose one")
            if (
                columns is not None
                and columns.include is not None
                and column not in columns.include
            ):
                raise ValueError(
                    f"column {column!r} is masked but not in columns.include: include it,"
                    " or drop the mask"
                )
        return self


class ConnectorConfig(_Model):
    """One connector: one PostgreSQL database, one slot, one publication."""

    name: str
    postgres: PostgresConfig
    slot: str
    publication: str
    tables: tuple[Annotated[str, AfterValidator(_check_table)], ...] | None = None
    # Per table: column lists, a row filter, masks (docs/configuration.md#data-controls).
    table_options: dict[Annotated[str, AfterValidator(_check_table)], TableOptions] = Field(
        default_factory=dict
    )
    # The key of the hash mask (HMAC-SHA256); e.g. ${file:/run/secrets/mask_key}. Keep it
    # the same forever: a new key gives every value a new hash, and joins across time break.
    masking_key: SecretStr | None = None
    topics: TopicsOverride = Field(default_factory=TopicsOverride)
    create_slot: bool = True
    create_publication: bool = True
    recreate_slot: bool = False
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig)
    # Schema-change events: "topic" (default) publishes them to <connector>.__schema,
    # "inband" as op "s" records into every partition of the table's retention topic,
    # "off" not at all. Either way events take the new shape from the first change after
    # the DDL.
    schema_changes: Literal["topic", "inband", "off"] = "topic"
    # Debezium's provide.transaction.metadata: each data event's "transaction" block says
    # which source transaction it belongs to and where in it, and <connector>.transaction
    # receives a BEGIN and an END record (with the event counts) per transaction that
    # published a data event (docs/events.md#transaction-metadata). Off: "transaction"
    # is null, as Debezium's default.
    provide_transaction_metadata: bool = False
    toast: ToastConfig = Field(default_factory=ToastConfig)
    values: ValuesConfig = Field(default_factory=ValuesConfig)
    messages: MessagesConfig = Field(default_factory=MessagesConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    status_interval_seconds: Annotated[float, Field(gt=0, le=60)] = 10.0
    max_in_flight_events: Annotated[int, Field(ge=1)] = 5_000
    # exactly_once: Kafka transactions, no change lost or repeated, even across crashes
    # (consumers read read_committed); at_least_once: the idempotent producer, no change
    # lost, some repeated after a crash (docs/delivery.md).
    delivery: Literal["exactly_once", "at_least_once"] = "exactly_once"
    exactly_once: ExactlyOnceConfig = Field(default_factory=ExactlyOnceConfig)
    # The slot's retained WAL: a metric, a warning, and an opt-in stop (docs/operations.md).
    wal_retention: WalRetentionConfig = Field(default_factory=WalRetentionConfig)
    # Opt-in: a record Kafka refuses for good goes to a dead-letter topic (docs/delivery.md).
    dead_letter: DeadLetterConfig = Field(default_factory=DeadLetterConfig)
    # Replays `cdc run` follows next to the connector (docs/replay.md).
    replays: tuple[ReplayConfig, ...] = ()
    enabled: bool = True

    @model_validator(mode="before")
    @classmethod
    def _derive_names(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("name"), str):
            derived = _derived_name(data["name"])
            data = dict(data)
            data.setdefault("slot", derived)
            data.setdefault("publication", derived)
        return data

    @model_validator(mode="after")
    def _check_table_options(self) -> ConnectorConfig:
        for table, options in self.table_options.items():
            if self.tables is not None and table not in self.tables:
                raise ValueError(
                    f"table_options: {table} is not in tables: add it there, or remove its options"
                )
            if table in (self.snapshot.signal_table, self.outbox.table):
                raise ValueError(
                    f"table_options: {table} is the signal or outbox table, which is not"
                    " published as a table"
                )
            if "hash" in options.mask.values() and self.masking_key is None:
                raise ValueError(
                    f"table_options: {table} hashes a column, which needs masking_key (e.g."
                    " masking_key: ${file:/run/secrets/mask_key})"
                )
        key = self.masking_key
        if key is not None and len(key.get_secret_value().encode()) < _MIN_MASKING_KEY_BYTES:
            raise ValueError(
                f"masking_key must be at least {_MIN_MASKING_KEY_BYTES} bytes (e.g. 32 random"
                " bytes as hex: openssl rand -hex 32)"
            )
        return self

    @model_validator(mode="after")
    def _check_replays(self) -> ConnectorConfig:
        names = [r.name for r in self.replays]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"replays: the name {name!r} is used twice")
        for replay in self.replays:
            if replay.transactional and not self.provide_transaction_metadata:
                raise ValueError(
                    f"replays: {replay.name!r} is transactional, which needs"
                    " provide_transaction_metadata: true (the transaction topic)"
                )
        return self

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _CONNECTOR_NAME.fullmatch(value):
            raise ValueError("must be letters, digits, '.', '_' or '-' (it is used in topic names)")
        return value

    @field_validator("slot", "publication")
    @classmethod
    def _check_slot(cls, value: str) -> str:
        if not _SLOT_NAME.fullmatch(value):
            raise ValueError(_SLOT_RULE)
        return value

    @field_validator("tables")
    @classmethod
    def _check_tables(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("list at least one table, or omit tables to capture all tables")
        seen: set[str] = set()
        for table in value:
            if table in seen:
                raise ValueError(f"{table} is listed twice")
            seen.add(table)
        return value

    @property
    def table_names(self) -> list[tuple[str, str]] | None:
        """``(schema, table)`` pairs, or ``None`` for a publication ``FOR ALL TABLES``."""
        if self.tables is None:
            return None
        return [(schema, table) for schema, _, table in (t.partition(".") for t in self.tables)]

    def effective_topics(self, daemon: DaemonConfig) -> TopicsConfig:
        """The daemon's topic defaults with this connector's overrides applied.

        ``retention_configs`` and ``compacted_configs`` are merged key by key (the
        connector wins); every other key replaces the default.

        Raises:
            ConfigError: the merged settings are inconsistent (e.g. equal templates).
        """
        return _merge_topics(daemon.topics, self.topics, source=None)


def _merge_topics(
    defaults: TopicsConfig, overrides: TopicsOverride, *, source: str | None
) -> TopicsConfig:
    merged = defaults.model_dump()
    changes = overrides.model_dump(exclude_none=True)
    if not changes:
        return defaults
    for key in ("retention_configs", "compacted_configs"):
        if key in changes:
            changes[key] = {**merged[key], **changes[key]}
    merged.update(changes)
    try:
        return TopicsConfig.model_validate(merged)
    except ValidationError as exc:
        raise config_error(exc, TopicsConfig, source=source, prefix=("topics",)) from None


def load_daemon_config_text(text: str, *, source: str, env: Mapping[str, str]) -> DaemonConfig:
    """Parse and validate the daemon-wide YAML file.

    Args:
        text: the file's contents.
        source: the file's path, used in error messages.
        env: environment for ``${VAR}`` interpolation.

    Raises:
        ConfigError: invalid YAML, a missing variable, or a key that fails validation.
    """
    return load_model(DaemonConfig, text, source=source, env=env, required_top="kafka")


def load_connector_config_text(
    text: str, *, source: str, env: Mapping[str, str]
) -> ConnectorConfig:
    """Parse and validate one connector's YAML file.

    Raises:
        ConfigError: invalid YAML, a missing variable, or a key that fails validation.
    """
    return load_model(ConnectorConfig, text, source=source, env=env, required_top="name")


def load_files(
    config_path: Path,
    connectors_dir: Path,
    env: Mapping[str, str] | None = None,
) -> tuple[DaemonConfig, list[ConnectorConfig]]:
    """Load the daemon file and every ``*.yaml``/``*.yml`` connector file (sorted by name).

    Hidden files (starting with ``.``, e.g. editor lock files) are skipped. Disabled
    connectors are returned too (``enabled=False``); callers decide what to run.

    Raises:
        ConfigError: any file is invalid, the folder is missing or holds no connector
            files, or two connectors share a name or a slot.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    daemon = load_daemon_config_text(
        read_config_file(config_path), source=str(config_path), env=environ
    )

    if not connectors_dir.is_dir():
        raise ConfigError(
            "connectors folder not found; create it or point --connectors / CDC_CONNECTORS "
            "at the folder holding the connector *.yaml files",
            source=str(connectors_dir),
        )
    paths = sorted(
        path
        for path in connectors_dir.iterdir()
        if path.suffix in {".yaml", ".yml"} and not path.name.startswith(".") and path.is_file()
    )
    if not paths:
        raise ConfigError(
            "no connector files (*.yaml or *.yml) in this folder; add one per database",
            source=str(connectors_dir),
        )

    connectors: list[ConnectorConfig] = []
    names: dict[str, Path] = {}
    slots: dict[str, Path] = {}
    for path in paths:
        connector = load_connector_config_text(
            read_config_file(path), source=str(path), env=environ
        )
        if connector.name in names:
            raise ConfigError(
                f"connector name {connector.name!r} is also used by {names[connector.name]}; "
                "connector names must be unique",
                source=str(path),
                key="name",
            )
        if connector.slot in slots:
            raise ConfigError(
                f"slot {connector.slot!r} is also used by {slots[connector.slot]}; two "
                "connectors cannot share a replication slot",
                source=str(path),
                key="slot",
            )
        _merge_topics(daemon.topics, connector.topics, source=str(path))
        names[connector.name] = path
        slots[connector.slot] = path
        connectors.append(connector)
    return daemon, connectors
