"""What the preflight gathers, as plain values: the server's and the cluster's answers.

The edges fill these (``cdc.postgres.preflight``, ``cdc.kafka.preflight``) and
``cdc.check.findings`` judges them, so every finding can be unit-tested from values
written in a test. No I/O, no judgement here: facts only.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AclFacts",
    "ConnectorIntent",
    "KafkaFacts",
    "PostgresFacts",
    "PublicationFacts",
    "SlotFacts",
    "StandbySlotFacts",
    "TableFacts",
    "TopicFacts",
]


@dataclass(frozen=True, slots=True)
class ConnectorIntent:
    """What the connector file asks for, as far as the checks need it."""

    name: str
    slot: str
    publication: str
    # (schema, table) listed in `tables` plus the signal and outbox tables; None: FOR ALL TABLES.
    tables: tuple[tuple[str, str], ...] | None
    create_slot: bool = True
    create_publication: bool = True
    exactly_once: bool = True
    # The producer's transaction.timeout.ms (kafka.properties, else PRODUCER_DEFAULTS).
    transaction_timeout_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class TableFacts:
    """One table the connector would capture."""

    schema: str
    name: str
    exists: bool
    selectable: bool = False  # has_table_privilege(..., 'SELECT')
    owned: bool = False  # the role is (a member of) the owner: may add it to a publication
    replica_identity: str = "d"  # pg_class.relreplident: d, n, f, i
    has_primary_key: bool = False
    # Under REPLICA IDENTITY USING INDEX: whether the index still exists (dropping it
    # silently leaves the table with no identity, as NOTHING).
    has_identity_index: bool = False

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True, slots=True)
class PublicationFacts:
    """The connector's publication, when it exists."""

    all_tables: bool
    tables: frozenset[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class SlotFacts:
    """The connector's replication slot, when it exists (pg_replication_slots)."""

    slot_type: str  # logical, physical
    plugin: str | None
    database: str | None
    active_pid: int | None
    wal_status: str | None  # reserved, extended, unreserved, lost (PostgreSQL 13+)
    lag_bytes: int | None  # pg_current_wal_lsn() - confirmed_flush_lsn


@dataclass(frozen=True, slots=True)
class StandbySlotFacts:
    """A physical slot named in ``synchronized_standby_slots`` (PostgreSQL 17+): a failover
    slot's changes are decoded only once that standby has received them."""

    name: str
    exists: bool
    physical: bool = True
    active: bool = False  # a standby streams through it now
    invalidation_reason: str | None = None


@dataclass(frozen=True, slots=True)
class PostgresFacts:
    """The legacy server as the connector's role sees it."""

    version_num: int  # server_version_num, e.g. 150004
    protocol_version: int  # the pgoutput protocol cdc would use on this server
    database: str
    encoding: str
    wal_level: str
    role: str
    superuser: bool
    replication: bool  # rolreplication
    can_create_in_database: bool  # CREATE on the database: CREATE PUBLICATION needs it
    max_replication_slots: int
    used_replication_slots: int  # every slot but the connector's own
    max_wal_senders: int
    used_wal_senders: int  # every walsender but one serving the connector's own slot
    max_slot_wal_keep_size_mb: int | None  # -1: unlimited; None: before PostgreSQL 13
    tables: tuple[TableFacts, ...]
    publication: PublicationFacts | None
    slot: SlotFacts | None
    # synchronized_standby_slots (PostgreSQL 17+), each as this server has it.
    standby_slots: tuple[StandbySlotFacts, ...] = ()


@dataclass(frozen=True, slots=True)
class TopicFacts:
    """One topic the connector needs, as the cluster has it."""

    name: str
    role: str  # retention, compacted, state, log: what its cleanup policy serves
    cleanup_policy: str  # the one the role needs (cdc.kafka.topics' specs)
    exists: bool
    actual_policy: str | None = None  # of an existing topic
    # A missing topic's validate-only creation refused, with its fix (cdc.kafka.errors).
    create_error: str | None = None


@dataclass(frozen=True, slots=True)
class AclFacts:
    """One ACL binding on a TransactionalId resource (names as Kafka's enums spell them)."""

    principal: str  # User:cdc, User:*
    host: str  # *, or one address
    operation: str  # WRITE, DESCRIBE, ALL, ...
    permission: str  # ALLOW, DENY
    pattern: str  # LITERAL, PREFIXED
    resource: str  # the transactional id, its prefix, or *


@dataclass(frozen=True, slots=True)
class KafkaFacts:
    """The cluster as the daemon's principal sees it."""

    bootstrap_servers: str
    brokers: int
    topics: tuple[TopicFacts, ...]
    # The broker's transaction.max.timeout.ms; None when it could not be read.
    transaction_max_timeout_ms: int | None
    # Whether the cluster has an authorizer: None when its ACLs could not be read.
    authorizer: bool | None = None
    # Our principal as the settings name it (SASL's user); None when they do not say.
    principal: str | None = None
    transactional_acls: tuple[AclFacts, ...] = ()
    super_users: tuple[str, ...] = ()  # the broker's super.users
