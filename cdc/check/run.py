"""The preflight of one connector: gather the facts at both edges, judge them.

``check_connector`` serves ``cdc check`` (every problem becomes a finding, an unreachable
side included); ``preflight`` serves ``cdc run`` before a connector's pipeline touches
anything: it logs each warning once (``preflight_warning``) and refuses to start on a
blocking finding with one fatal error naming every block and its fix. A side that does not
answer for a reason that heals by itself (a server restarting, Kafka down) is raised as
that retryable error instead, so the daemon retries with backoff as it always did.
Nothing here writes to PostgreSQL or Kafka.
"""

from __future__ import annotations

from typing import Any

from cdc.check.facts import ConnectorIntent, PostgresFacts, TableFacts
from cdc.check.findings import (
    Finding,
    Severity,
    blocking,
    kafka_findings,
    postgres_findings,
    unreachable,
)
from cdc.config import ConnectorConfig, DaemonConfig
from cdc.errors import CdcError
from cdc.kafka.client import PRODUCER_DEFAULTS
from cdc.kafka.preflight import gather_kafka_facts
from cdc.kafka.topics import (
    KafkaAdmin,
    TopicSpec,
    log_topic_spec,
    state_topic_spec,
    table_topic_specs,
)
from cdc.logging import redact_dsn
from cdc.postgres.preflight import gather_postgres_facts
from cdc.stream.schema_changes import schema_topic_name
from cdc.stream.transactions import transaction_topic_name

__all__ = ["check_connector", "connector_intent", "preflight"]


def _split(table: str) -> tuple[str, str]:
    schema, _, name = table.partition(".")
    return schema, name


def _special_tables(connector: ConnectorConfig) -> set[tuple[str, str]]:
    """The signal and outbox tables: published (their rows come through the stream) but
    not captured (no topics), as the pipeline does."""
    return {_split(t) for t in (connector.snapshot.signal_table, connector.outbox.table) if t}


def connector_intent(daemon: DaemonConfig, connector: ConnectorConfig) -> ConnectorIntent:
    """What the connector file asks for, as the checks see it."""
    tables = connector.table_names
    if tables is not None:
        tables = [*tables, *sorted(_special_tables(connector) - set(tables))]
    timeout = daemon.kafka.properties.get(
        "transaction.timeout.ms", PRODUCER_DEFAULTS["transaction.timeout.ms"]
    )
    return ConnectorIntent(
        name=connector.name,
        slot=connector.slot,
        publication=connector.publication,
        tables=None if tables is None else tuple(tables),
        create_slot=connector.create_slot,
        create_publication=connector.create_publication,
        exactly_once=connector.delivery == "exactly_once",
        transaction_timeout_ms=int(timeout),
    )


def _topic_specs(
    daemon: DaemonConfig, connector: ConnectorConfig, pg: PostgresFacts | None
) -> list[tuple[TopicSpec, str]]:
    """The topics the pipeline makes at start, with the role each policy serves.

    Raises:
        ConfigError: a topic name would be longer than Kafka allows.
    """
    topics = connector.effective_topics(daemon)
    specs = [(state_topic_spec(connector.name, topics), "state")]
    if pg is not None:
        special = _special_tables(connector)
        tables = [
            (t.schema, t.name, _has_key(t))
            for t in pg.tables
            if t.exists and (t.schema, t.name) not in special
        ]
        specs.extend(
            (spec, "compacted" if spec.cleanup_policy == "compact" else "retention")
            for spec in table_topic_specs(topics, connector.name, pg.database, tables)
        )
    if connector.schema_changes == "topic":
        specs.append(
            (log_topic_spec(schema_topic_name(connector.name), topics, partitions=1), "log")
        )
    if connector.provide_transaction_metadata:
        name = transaction_topic_name(connector.name)
        specs.append((log_topic_spec(name, topics, partitions=1), "log"))
    return specs


def _has_key(table: TableFacts) -> bool:
    # The event key: the replica identity index under USING INDEX, else the primary key.
    if table.replica_identity == "i":
        return table.has_identity_index
    return table.has_primary_key


def check_connector(
    daemon: DaemonConfig, connector: ConnectorConfig, *, log: Any, raise_retryable: bool = False
) -> list[Finding]:
    """Every finding of one connector, PostgreSQL first.

    Args:
        log: where the Kafka clients' own lines go (a structlog logger).
        raise_retryable: raise an error that heals by itself (instead of reporting it),
            for ``cdc run``'s backoff.

    Raises:
        ConfigError: a topic name the configuration renders is invalid.
        CdcError: only with ``raise_retryable``, a retryable error of either side.
    """
    intent = connector_intent(daemon, connector)
    findings: list[Finding] = []
    pg: PostgresFacts | None = None
    try:
        pg = gather_postgres_facts(
            connector.postgres.dsn.get_secret_value(),
            slot=connector.slot,
            publication=connector.publication,
            tables=intent.tables,
            application_name=f"cdc:{connector.name}:check",
        )
    except CdcError as exc:
        if raise_retryable and exc.retryable:
            raise
        findings.append(unreachable("postgres", redact_dsn(str(exc))))
    else:
        findings.extend(postgres_findings(pg, intent))
    specs = _topic_specs(daemon, connector, pg)
    try:
        admin = KafkaAdmin(
            daemon.kafka.bootstrap_servers,
            daemon.kafka.properties,
            client_id=f"cdc-{connector.name}-check",
            log=log,
        )
        kafka = gather_kafka_facts(admin, specs)
    except CdcError as exc:
        if raise_retryable and exc.retryable:
            raise
        findings.append(unreachable("kafka", redact_dsn(str(exc))))
    else:
        findings.extend(kafka_findings(kafka, intent))
    return findings


def preflight(daemon: DaemonConfig, connector: ConnectorConfig, *, log: Any) -> list[Finding]:
    """``cdc run``'s check before a connector starts: warnings logged, blocks refused.

    Returns the findings (none blocking).

    Raises:
        CdcError: not retryable, naming every blocking finding and its fix; or the
            retryable error of a side that did not answer.
    """
    findings = check_connector(daemon, connector, log=log, raise_retryable=True)
    for finding in findings:
        if finding.severity is Severity.WARN:
            log.warning(
                "preflight_warning",
                subject=finding.subject,
                message=finding.message,
                fix=finding.fix,
            )
    blocks = blocking(findings)
    if blocks:
        details = " | ".join(
            f"{f.subject}: {f.message}. Fix: {f.fix or 'see above'}" for f in blocks
        )
        raise CdcError(
            f"preflight refused to start connector {connector.name!r}"
            f" ({len(blocks)} blocking finding{'' if len(blocks) == 1 else 's'};"
            f" `cdc check {connector.name}` lists them all): {details}"
        )
    log.info("preflight_passed", warnings=sum(f.severity is Severity.WARN for f in findings))
    return findings
