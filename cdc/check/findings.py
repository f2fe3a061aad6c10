"""The preflight's judgement: gathered facts in, findings (severity, subject, fix) out.

Pure: no I/O, no logging, no clock. Each function judges one part of what a connector
needs (the server's settings, the role's rights, the publication, each table, the slot,
Kafka's topics and transactions) and says, for anything wrong, what to change. A
``block`` finding means the connector would fail (or harm the legacy server); ``warn``
means it would run, with a risk the operator should know; ``info`` and ``ok`` say what
was found.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cdc.check.facts import (
    AclFacts,
    ConnectorIntent,
    KafkaFacts,
    PostgresFacts,
    PublicationFacts,
    SlotFacts,
    StandbySlotFacts,
    TableFacts,
    TopicFacts,
)

__all__ = [
    "MIN_SERVER_VERSION",
    "Finding",
    "Severity",
    "blocking",
    "exit_status",
    "kafka_findings",
    "may_write_transactional_id",
    "postgres_findings",
    "unreachable",
]

# pgoutput and logical replication appeared in PostgreSQL 10 (cdc.postgres.source).
MIN_SERVER_VERSION = 100_000
# pgoutput sends pg_logical_emit_message messages from PostgreSQL 14 (protocol 2).
LOGICAL_MESSAGES_VERSION = 140_000
# Failover slots (CREATE_REPLICATION_SLOT ... FAILOVER, synced to standbys) from 17.
FAILOVER_SLOTS_VERSION = 170_000
# max_slot_wal_keep_size exists from PostgreSQL 13.
WAL_KEEP_SIZE_VERSION = 130_000


class Severity(enum.Enum):
    """How much a finding matters; ``BLOCK`` stops ``cdc run`` from starting."""

    OK = "ok"
    INFO = "info"
    WARN = "warn"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the preflight found, and what to do about it."""

    severity: Severity
    subject: str  # "postgres", "postgres.slot", a table, "kafka", a topic
    message: str
    fix: str = ""

    def line(self) -> str:
        """One readable line: ``BLOCK postgres: ... Fix: ...``."""
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{self.severity.value.upper():5} {self.subject}: {self.message}.{fix}"

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity.value,
            "subject": self.subject,
            "message": self.message,
            "fix": self.fix,
        }


def blocking(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that stop the connector from starting."""
    return [f for f in findings if f.severity is Severity.BLOCK]


def exit_status(findings: Iterable[Finding]) -> int:
    """``cdc check``'s exit status: 1 when something blocks, else 0 (warnings allowed)."""
    return 1 if blocking(findings) else 0


def unreachable(subject: str, error: str) -> Finding:
    """A side that could not be asked at all (the error already carries its fix)."""
    return Finding(Severity.BLOCK, subject, f"not checked: {error.rstrip('.')}")


# --- PostgreSQL --------------------------------------------------------------------


def postgres_findings(facts: PostgresFacts, intent: ConnectorIntent) -> list[Finding]:
    """Every PostgreSQL finding, in the order an operator would fix them."""
    return [
        *_server(facts),
        *_capacity(facts, intent),
        *_role(facts),
        *_publication(facts, intent),
        *(finding for table in facts.tables for finding in _table(table, facts)),
        *_slot(facts.slot, facts, intent),
        *_standby_slots(facts.standby_slots),
    ]


def _server(facts: PostgresFacts) -> list[Finding]:
    out: list[Finding] = []
    version = _version_text(facts.version_num)
    if facts.version_num < MIN_SERVER_VERSION:
        out.append(
            Finding(
                Severity.BLOCK,
                "postgres",
                f"PostgreSQL {version} is too old: logical replication with pgoutput needs 10",
                "upgrade the server to PostgreSQL 10 or later (14 or later recommended)",
            )
        )
        return out
    messages = (
        "logical messages delivered"
        if facts.version_num >= LOGICAL_MESSAGES_VERSION
        else "no logical messages before 14 (pg_logical_emit_message is not delivered)"
    )
    failover = (
        "failover slots available (17+)"
        if facts.version_num >= FAILOVER_SLOTS_VERSION
        else "no failover slots before 17 (a failover loses the slot)"
    )
    out.append(
        Finding(
            Severity.INFO,
            "postgres",
            f"PostgreSQL {version}, database {facts.database!r}: pgoutput protocol"
            f" {facts.protocol_version}, {messages}, {failover}",
        )
    )
    if facts.wal_level == "logical":
        out.append(Finding(Severity.OK, "postgres", "wal_level is logical"))
    else:
        out.append(
            Finding(
                Severity.BLOCK,
                "postgres",
                f"wal_level is {facts.wal_level!r}, logical replication needs 'logical'",
                "set wal_level = logical in postgresql.conf and restart PostgreSQL",
            )
        )
    if facts.encoding != "UTF8":
        out.append(
            Finding(
                Severity.BLOCK,
                "postgres",
                f"database {facts.database!r} uses encoding {facts.encoding}; cdc reads UTF8"
                " databases only",
                "capture a UTF8 database (the encoding is fixed when a database is created)",
            )
        )
    out.append(_wal_keep_size(facts))
    return out


def _version_text(version_num: int) -> str:
    major = version_num // 10_000
    if major < 10:  # 9.6.x: server_version_num 90624
        return f"{major}.{version_num // 100 % 100}.{version_num % 100}"
    return f"{major}.{version_num % 10_000}"


def _wal_keep_size(facts: PostgresFacts) -> Finding:
    size = facts.max_slot_wal_keep_size_mb
    if size is None:
        return Finding(
            Severity.WARN,
            "postgres",
            f"PostgreSQL {_version_text(facts.version_num)} cannot bound the WAL a slot"
            " retains (max_slot_wal_keep_size needs 13): a stuck slot can fill the disk",
            "watch the slot's lag (cdc_lag_bytes) and alert on it",
        )
    if size < 0:
        return Finding(
            Severity.WARN,
            "postgres",
            "max_slot_wal_keep_size is -1 (unlimited): a stuck or abandoned slot keeps WAL"
            " until the disk is full",
            "set max_slot_wal_keep_size to what the WAL disk can spare (e.g. '50GB'; reload),"
            " and alert on the slot's lag",
        )
    return Finding(
        Severity.OK,
        "postgres",
        f"max_slot_wal_keep_size is {size} MB: a stuck slot is invalidated before the disk fills",
    )


def _capacity(facts: PostgresFacts, intent: ConnectorIntent) -> list[Finding]:
    out: list[Finding] = []
    # The connector's own slot, once it exists, is already counted by the server.
    slots_needed = 0 if facts.slot is not None else 1
    free_slots = facts.max_replication_slots - facts.used_replication_slots - slots_needed
    used = (
        f"{facts.used_replication_slots} of"
        f" max_replication_slots={facts.max_replication_slots} used by others"
    )
    if free_slots < 0:
        out.append(
            Finding(
                Severity.BLOCK,
                "postgres",
                f"no free replication slot for {intent.slot!r} ({used})",
                "raise max_replication_slots (restart), or drop an abandoned slot"
                " (SELECT pg_drop_replication_slot('name'))",
            )
        )
    else:
        out.append(Finding(Severity.OK, "postgres", f"replication slots: {used}, enough"))
    # One walsender per connector: its replication connection.
    free_senders = facts.max_wal_senders - facts.used_wal_senders - 1
    senders = f"{facts.used_wal_senders} of max_wal_senders={facts.max_wal_senders} in use"
    if free_senders < 0:
        out.append(
            Finding(
                Severity.BLOCK,
                "postgres",
                f"no free WAL sender for the connector ({senders})",
                "raise max_wal_senders (restart), or stop an unused replication client",
            )
        )
    else:
        out.append(Finding(Severity.OK, "postgres", f"WAL senders: {senders}, enough"))
    return out


def _role(facts: PostgresFacts) -> list[Finding]:
    if facts.superuser:
        return [Finding(Severity.OK, "postgres", f"role {facts.role!r} is a superuser")]
    if facts.replication:
        return [Finding(Severity.OK, "postgres", f"role {facts.role!r} has REPLICATION")]
    return [
        Finding(
            Severity.BLOCK,
            "postgres",
            f"role {facts.role!r} has neither REPLICATION nor superuser: it cannot stream",
            f'ALTER ROLE <user> REPLICATION (here: ALTER ROLE "{facts.role}" REPLICATION)',
        )
    ]


def _publication(facts: PostgresFacts, intent: ConnectorIntent) -> list[Finding]:
    name = intent.publication
    pub = facts.publication
    if pub is not None:
        return _existing_publication(pub, facts, intent)
    if not intent.create_publication:
        return [
            Finding(
                Severity.BLOCK,
                "postgres",
                f"publication {name!r} does not exist and create_publication is false",
                f"create it (CREATE PUBLICATION {name} {_for_clause(intent)})"
                " or set create_publication: true",
            )
        ]
    if intent.tables is None:
        if facts.superuser:
            return [
                Finding(
                    Severity.OK, "postgres", f"publication {name!r} will be created FOR ALL TABLES"
                )
            ]
        return [
            Finding(
                Severity.BLOCK,
                "postgres",
                f"publication {name!r} does not exist, and creating it FOR ALL TABLES needs"
                f" a superuser; {facts.role!r} is not one",
                f"ask a DBA to run CREATE PUBLICATION {name} FOR ALL TABLES and set"
                " create_publication: false, or list the tables in `tables`",
            )
        ]
    return _may_publish(facts, name, intent.tables, "create publication")


def _existing_publication(
    pub: PublicationFacts, facts: PostgresFacts, intent: ConnectorIntent
) -> list[Finding]:
    name = intent.publication
    if pub.all_tables:
        return [Finding(Severity.OK, "postgres", f"publication {name!r} exists FOR ALL TABLES")]
    if intent.tables is None:
        return [
            Finding(
                Severity.INFO,
                "postgres",
                f"publication {name!r} exists for {len(pub.tables)} tables (not FOR ALL"
                " TABLES): the connector captures what it publishes",
            )
        ]
    known = {(t.schema, t.name) for t in facts.tables if t.exists}
    missing = tuple(t for t in intent.tables if t not in pub.tables and t in known)
    if not missing:
        return [Finding(Severity.OK, "postgres", f"publication {name!r} exists with every table")]
    names = ", ".join(f"{s}.{t}" for s, t in missing)
    if not intent.create_publication:
        return [
            Finding(
                Severity.BLOCK,
                "postgres",
                f"publication {name!r} lacks {names} and create_publication is false",
                f"ALTER PUBLICATION {name} ADD TABLE {names}; or set create_publication: true",
            )
        ]
    return _may_publish(facts, name, missing, "add to publication")


def _may_publish(
    facts: PostgresFacts, name: str, tables: tuple[tuple[str, str], ...], what: str
) -> list[Finding]:
    """Whether the role may create the publication FOR TABLE (or add tables to it):
    superuser, or owner of each table (and, to create, CREATE on the database)."""
    if facts.superuser:
        return [Finding(Severity.OK, "postgres", f"may {what} {name!r} (superuser)")]
    by_name = {(t.schema, t.name): t for t in facts.tables}
    not_owned = [
        f"{s}.{t}"
        for s, t in tables
        if (s, t) in by_name and by_name[s, t].exists and not by_name[s, t].owned
    ]
    problems: list[str] = []
    if not_owned:
        problems.append(f"it does not own {', '.join(not_owned)}")
    if what == "create publication" and not facts.can_create_in_database:
        problems.append(f"it lacks CREATE on database {facts.database!r}")
    if not problems:
        return [Finding(Severity.OK, "postgres", f"may {what} {name!r} (owns every table)")]
    listed = ", ".join(f"{s}.{t}" for s, t in tables)
    return [
        Finding(
            Severity.BLOCK,
            "postgres",
            f"role {facts.role!r} may not {what} {name!r}: {'; '.join(problems)}",
            f"ask a DBA to run CREATE PUBLICATION {name} FOR TABLE {listed} (or ALTER"
            " PUBLICATION ... ADD TABLE) and set create_publication: false, or make the role"
            " own the tables",
        )
    ]


def _for_clause(intent: ConnectorIntent) -> str:
    if intent.tables is None:
        return "FOR ALL TABLES"
    return "FOR TABLE " + ", ".join(f"{s}.{t}" for s, t in intent.tables)


def _table(table: TableFacts, facts: PostgresFacts) -> list[Finding]:
    subject = table.qualified
    if not table.exists:
        return [
            Finding(
                Severity.BLOCK,
                subject,
                "table does not exist",
                "fix `tables` in the connector file, or create the table",
            )
        ]
    out: list[Finding] = []
    if not table.selectable and not facts.superuser:
        out.append(
            Finding(
                Severity.BLOCK,
                subject,
                f"role {facts.role!r} may not SELECT it (snapshots and verify read it)",
                f'GRANT SELECT ON {subject} TO "{facts.role}"',
            )
        )
    identity = table.replica_identity
    no_identity = (
        identity == "n"
        or (identity == "d" and not table.has_primary_key)
        or (identity == "i" and not table.has_identity_index)
    )
    if no_identity:
        out.append(
            Finding(
                Severity.WARN,
                subject,
                "no replica identity (no primary key, not FULL or USING INDEX): once it is"
                " published, PostgreSQL rejects its UPDATE and DELETE statements",
                f"add a primary key, or ALTER TABLE {subject} REPLICA IDENTITY FULL",
            )
        )
    elif not table.has_primary_key and identity != "i":
        out.append(
            Finding(
                Severity.WARN,
                subject,
                "no primary key: its events get a null key and skip the compacted topic",
                f"add a primary key, or ALTER TABLE {subject} REPLICA IDENTITY USING INDEX"
                " <unique index>",
            )
        )
    if not out:
        out.append(Finding(Severity.OK, subject, _identity_text(identity)))
    return out


def _identity_text(identity: str) -> str:
    return {
        "d": "readable, keyed by its primary key",
        "f": "readable, REPLICA IDENTITY FULL",
        "i": "readable, keyed by its replica identity index",
    }.get(identity, "readable")


def _slot(slot: SlotFacts | None, facts: PostgresFacts, intent: ConnectorIntent) -> list[Finding]:
    subject = "postgres.slot"
    name = intent.slot
    if slot is None:
        if not intent.create_slot:
            return [
                Finding(
                    Severity.BLOCK,
                    subject,
                    f"replication slot {name!r} does not exist and create_slot is false",
                    "create it (pg_create_logical_replication_slot(name, 'pgoutput')) or set"
                    " create_slot: true",
                )
            ]
        return [Finding(Severity.INFO, subject, f"replication slot {name!r} will be created")]
    if slot.slot_type != "logical" or slot.plugin != "pgoutput":
        return [
            Finding(
                Severity.BLOCK,
                subject,
                f"replication slot {name!r} is {slot.slot_type} with plugin {slot.plugin!r};"
                " cdc needs a logical pgoutput slot",
                "choose another `slot`, or drop this one if nothing uses it",
            )
        ]
    if slot.database != facts.database:
        return [
            Finding(
                Severity.BLOCK,
                subject,
                f"replication slot {name!r} belongs to database {slot.database!r}, not"
                f" {facts.database!r}",
                "choose another `slot`",
            )
        ]
    out: list[Finding] = []
    if slot.wal_status == "lost":
        out.append(
            Finding(
                Severity.BLOCK,
                subject,
                f"replication slot {name!r} has lost WAL it still needed (wal_status lost):"
                " changes after its position are gone",
                "set recreate_slot: true to drop it and snapshot again, and raise"
                " max_slot_wal_keep_size so it does not happen again",
            )
        )
    elif slot.wal_status == "unreserved":
        out.append(
            Finding(
                Severity.WARN,
                subject,
                f"replication slot {name!r} is about to lose WAL (wal_status unreserved)",
                "start the connector now, or raise max_slot_wal_keep_size",
            )
        )
    if slot.active_pid is not None:
        out.append(
            Finding(
                Severity.WARN,
                subject,
                f"replication slot {name!r} is in use by server process {slot.active_pid}"
                " (another cdc instance?)",
                "stop the other instance: a connector runs in one place at a time",
            )
        )
    lag = "unknown" if slot.lag_bytes is None else f"{slot.lag_bytes} bytes"
    status = slot.wal_status or "n/a"
    out.append(
        Finding(
            Severity.INFO,
            subject,
            f"replication slot {name!r} exists (pgoutput, wal_status {status}), holding {lag}"
            " of WAL",
        )
    )
    return out


def _standby_slots(slots: tuple[StandbySlotFacts, ...]) -> list[Finding]:
    """``synchronized_standby_slots`` (PostgreSQL 17+): PostgreSQL decodes nothing for a
    failover slot (cdc's, on 17+) until every standby named there has the WAL. A name that
    is no usable physical slot stops the stream for good, in silence; a standby that is
    down stops it until the standby is back."""
    subject = "postgres.standby_slots"
    out: list[Finding] = []
    for slot in slots:
        if not slot.exists or not slot.physical or slot.invalidation_reason:
            what = (
                "is not a slot on this server"
                if not slot.exists
                else "is not a physical slot"
                if not slot.physical
                else f"was invalidated ({slot.invalidation_reason})"
            )
            out.append(
                Finding(
                    Severity.BLOCK,
                    subject,
                    f"synchronized_standby_slots names {slot.name!r}, which {what}: PostgreSQL"
                    " holds back every change of a failover slot until that standby has it,"
                    " so the connector would stream nothing",
                    f"create the standby's physical slot {slot.name!r} (and point the"
                    " standby's primary_slot_name at it), or remove it from"
                    " synchronized_standby_slots and reload",
                )
            )
        elif not slot.active:
            out.append(
                Finding(
                    Severity.WARN,
                    subject,
                    f"no standby streams through {slot.name!r} (synchronized_standby_slots):"
                    " the connector's changes wait until one does",
                    "start the standby, or remove the slot from synchronized_standby_slots",
                )
            )
    if slots and not out:
        names = ", ".join(s.name for s in slots)
        out.append(
            Finding(
                Severity.OK,
                subject,
                f"failover slots wait for standby slot(s) {names}: a promoted standby has"
                " every change cdc published",
            )
        )
    return out


# --- Kafka -------------------------------------------------------------------------


def kafka_findings(facts: KafkaFacts, intent: ConnectorIntent) -> list[Finding]:
    """Every Kafka finding: reachability, topics, transactions."""
    out = [
        Finding(
            Severity.OK,
            "kafka",
            f"reachable at {facts.bootstrap_servers} ({facts.brokers} broker"
            f"{'' if facts.brokers == 1 else 's'})",
        )
    ]
    out.extend(_topics(facts.topics))
    if intent.exactly_once:
        out.extend(_transactions(facts, intent))
    return out


def _topics(topics: tuple[TopicFacts, ...]) -> list[Finding]:
    out: list[Finding] = []
    good_existing = 0
    creatable = 0
    for topic in topics:
        if topic.exists:
            if topic.actual_policy == topic.cleanup_policy:
                good_existing += 1
                continue
            out.append(
                Finding(
                    Severity.BLOCK,
                    topic.name,
                    f"exists with cleanup.policy={topic.actual_policy}, but as the"
                    f" {topic.role} topic it needs cleanup.policy={topic.cleanup_policy}",
                    f"kafka-configs --alter --entity-type topics --entity-name {topic.name}"
                    f" --add-config cleanup.policy={topic.cleanup_policy}; or change the topic"
                    " name template",
                )
            )
        elif topic.create_error is not None:
            out.append(
                Finding(
                    Severity.BLOCK,
                    topic.name,
                    f"cannot be created: {topic.create_error.rstrip('.')}",
                )
            )
        else:
            creatable += 1
    if good_existing:
        out.append(
            Finding(
                Severity.OK, "kafka", f"{good_existing} topics exist with the right cleanup policy"
            )
        )
    if creatable:
        out.append(Finding(Severity.OK, "kafka", f"{creatable} missing topics may be created"))
    return out


def _transactions(facts: KafkaFacts, intent: ConnectorIntent) -> list[Finding]:
    ours = intent.transaction_timeout_ms
    broker = facts.transaction_max_timeout_ms
    out: list[Finding] = []
    if broker is None:
        out.append(
            Finding(
                Severity.WARN,
                "kafka",
                "could not read the broker's transaction.max.timeout.ms (no DescribeConfigs"
                " on the cluster?)",
                f"make sure it is at least transaction.timeout.ms ({ours} ms)",
            )
        )
    elif broker < ours:
        out.append(
            Finding(
                Severity.BLOCK,
                "kafka",
                f"the broker's transaction.max.timeout.ms ({broker} ms) is below our"
                f" transaction.timeout.ms ({ours} ms): the producer cannot start",
                f"set kafka.properties.transaction.timeout.ms to at most {broker} in the daemon"
                " config, or raise transaction.max.timeout.ms on the brokers",
            )
        )
    else:
        out.append(
            Finding(
                Severity.OK,
                "kafka",
                f"transaction.max.timeout.ms ({broker} ms) >= transaction.timeout.ms ({ours} ms)",
            )
        )
    out.append(_transactional_id(facts, f"cdc-{intent.name}"))
    return out


def _transactional_id(facts: KafkaFacts, tid: str) -> Finding:
    """Whether the principal may use the connector's transactional id (Write, which
    implies Describe), judged from the cluster's ACLs as Kafka's authorizer does: a DENY
    beats an ALLOW; super users pass."""
    unknown = f"the right to use transactional id {tid!r} is tested at start (init_transactions)"
    if facts.authorizer is False:
        return Finding(
            Severity.OK,
            "kafka",
            f"the cluster has no authorizer: any principal may use transactional id {tid!r}",
        )
    if facts.authorizer is None:
        return Finding(Severity.INFO, "kafka", f"{unknown}: the ACLs could not be read")
    principal = facts.principal
    if principal is None:
        return Finding(
            Severity.INFO,
            "kafka",
            f"{unknown}: the principal is mapped on the broker (not SASL PLAIN or SCRAM)",
        )
    if principal in facts.super_users:
        return Finding(Severity.OK, "kafka", f"{principal} is a super user of the cluster")
    verdict = may_write_transactional_id(facts.transactional_acls, principal, tid)
    if verdict is True:
        return Finding(Severity.OK, "kafka", f"{principal} may use transactional id {tid!r} (ACLs)")
    fix = (
        f"kafka-acls --bootstrap-server {facts.bootstrap_servers} --add --allow-principal"
        f" {principal} --operation Write --operation Describe --transactional-id {tid}"
    )
    if verdict is None:
        return Finding(
            Severity.WARN,
            "kafka",
            f"{principal}'s right to use transactional id {tid!r} depends on the client"
            " host (an ACL names one): tested at start",
            fix,
        )
    return Finding(
        Severity.BLOCK,
        "kafka",
        f"{principal} may not use transactional id {tid!r}: no ACL allows Write on it"
        " (or one denies it), so exactly_once cannot start",
        fix,
    )


def may_write_transactional_id(acls: Iterable[AclFacts], principal: str, tid: str) -> bool | None:
    """Kafka's authorizer on Write of TransactionalId ``tid`` for ``principal``: True,
    False, or None when it depends on the client's host (an ACL names one)."""
    relevant = [
        acl
        for acl in acls
        if acl.principal in (principal, "User:*")
        and acl.operation in ("WRITE", "ALL")
        and (
            (acl.pattern == "LITERAL" and acl.resource in (tid, "*"))
            or (acl.pattern == "PREFIXED" and tid.startswith(acl.resource))
        )
    ]
    denied = [acl for acl in relevant if acl.permission == "DENY"]
    allowed = [acl for acl in relevant if acl.permission == "ALLOW"]
    if any(acl.host == "*" for acl in denied):
        return False
    if denied:
        return None
    if any(acl.host == "*" for acl in allowed):
        return True
    return None if allowed else False
