"""The preflight's pure judgement (cdc.check.findings): every finding kind from facts."""

from __future__ import annotations

from dataclasses import replace

import pytest

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
from cdc.check.findings import (
    Finding,
    Severity,
    blocking,
    exit_status,
    kafka_findings,
    may_write_transactional_id,
    postgres_findings,
    unreachable,
)

INTENT = ConnectorIntent(
    name="inv", slot="cdc_inv", publication="cdc_inv", tables=(("public", "orders"),)
)
ORDERS = TableFacts(
    "public", "orders", exists=True, selectable=True, owned=True, has_primary_key=True
)
HEALTHY = PostgresFacts(
    version_num=150004,
    protocol_version=3,
    database="inv",
    encoding="UTF8",
    wal_level="logical",
    role="cdc",
    superuser=False,
    replication=True,
    can_create_in_database=True,
    max_replication_slots=10,
    used_replication_slots=2,
    max_wal_senders=10,
    used_wal_senders=2,
    max_slot_wal_keep_size_mb=51200,
    tables=(ORDERS,),
    publication=None,
    slot=None,
)
SLOT = SlotFacts(
    slot_type="logical",
    plugin="pgoutput",
    database="inv",
    active_pid=None,
    wal_status="reserved",
    lag_bytes=1024,
)


def _pg(facts: PostgresFacts = HEALTHY, intent: ConnectorIntent = INTENT) -> list[Finding]:
    return postgres_findings(facts, intent)


def _only(findings: list[Finding], severity: Severity) -> list[Finding]:
    return [f for f in findings if f.severity is severity]


def _blocks(findings: list[Finding]) -> list[str]:
    return [f.message for f in blocking(findings)]


def test_healthy_server_has_no_block_and_no_warning() -> None:
    findings = _pg()
    assert _only(findings, Severity.BLOCK) + _only(findings, Severity.WARN) == []
    assert exit_status(findings) == 0


def test_version_info_names_protocol_messages_and_failover() -> None:
    (info,) = [f for f in _pg() if f.severity is Severity.INFO and "protocol" in f.message]
    assert "PostgreSQL 15.4" in info.message
    assert "protocol 3" in info.message
    assert "logical messages delivered" in info.message
    assert "no failover slots before 17" in info.message


def test_version_17_has_failover_slots_and_13_no_logical_messages() -> None:
    seventeen = " ".join(f.message for f in _pg(replace(HEALTHY, version_num=170002)))
    assert "failover slots available" in seventeen
    thirteen = " ".join(f.message for f in _pg(replace(HEALTHY, version_num=130010)))
    assert "no logical messages before 14" in thirteen


def test_server_older_than_10_blocks() -> None:
    findings = _pg(replace(HEALTHY, version_num=90624))
    assert any("9.6.24 is too old" in m for m in _blocks(findings))


def test_wal_level_replica_blocks_with_the_setting_to_change() -> None:
    (block,) = blocking(_pg(replace(HEALTHY, wal_level="replica")))
    assert "wal_level is 'replica'" in block.message
    assert "wal_level = logical" in block.fix


def test_non_utf8_database_blocks() -> None:
    assert any("encoding LATIN1" in m for m in _blocks(_pg(replace(HEALTHY, encoding="LATIN1"))))


def test_unlimited_wal_keep_size_warns() -> None:
    (warn,) = _only(_pg(replace(HEALTHY, max_slot_wal_keep_size_mb=-1)), Severity.WARN)
    assert "unlimited" in warn.message
    assert "max_slot_wal_keep_size" in warn.fix


def test_server_before_13_warns_that_wal_cannot_be_bounded() -> None:
    facts = replace(HEALTHY, version_num=120005, max_slot_wal_keep_size_mb=None)
    (warn,) = _only(_pg(facts), Severity.WARN)
    assert "cannot bound" in warn.message


def test_no_free_replication_slot_blocks() -> None:
    (block,) = blocking(_pg(replace(HEALTHY, used_replication_slots=10)))
    assert "no free replication slot" in block.message
    assert "max_replication_slots" in block.fix


def test_the_connectors_own_slot_needs_no_free_one() -> None:
    facts = replace(HEALTHY, used_replication_slots=10, slot=SLOT)
    assert _blocks(_pg(facts)) == []


def test_no_free_wal_sender_blocks() -> None:
    (block,) = blocking(_pg(replace(HEALTHY, used_wal_senders=10)))
    assert "no free WAL sender" in block.message
    assert "max_wal_senders" in block.fix


def test_role_without_replication_blocks_with_alter_role() -> None:
    (block,) = blocking(_pg(replace(HEALTHY, replication=False)))
    assert "neither REPLICATION nor superuser" in block.message
    assert block.fix == 'ALTER ROLE <user> REPLICATION (here: ALTER ROLE "cdc" REPLICATION)'


def test_superuser_needs_no_replication_attribute() -> None:
    assert _blocks(_pg(replace(HEALTHY, replication=False, superuser=True))) == []


def test_missing_publication_without_create_blocks() -> None:
    intent = replace(INTENT, create_publication=False)
    (block,) = blocking(_pg(intent=intent))
    assert "does not exist and create_publication is false" in block.message
    assert "CREATE PUBLICATION cdc_inv FOR TABLE public.orders" in block.fix


def test_for_all_tables_needs_a_superuser_to_create() -> None:
    intent = replace(INTENT, tables=None)
    (block,) = blocking(_pg(intent=intent))
    assert "FOR ALL TABLES needs a superuser" in block.message
    assert _blocks(_pg(replace(HEALTHY, superuser=True), intent)) == []


def test_creating_for_tables_not_owned_blocks() -> None:
    facts = replace(HEALTHY, tables=(replace(ORDERS, owned=False),))
    (block,) = blocking(_pg(facts))
    assert "does not own public.orders" in block.message
    assert "create_publication: false" in block.fix


def test_creating_without_create_on_the_database_blocks() -> None:
    (block,) = blocking(_pg(replace(HEALTHY, can_create_in_database=False)))
    assert "lacks CREATE on database 'inv'" in block.message


def test_existing_publication_with_every_table_is_ok_without_ownership() -> None:
    publication = PublicationFacts(all_tables=False, tables=frozenset({("public", "orders")}))
    facts = replace(HEALTHY, publication=publication, tables=(replace(ORDERS, owned=False),))
    assert _blocks(_pg(facts, replace(INTENT, create_publication=False))) == []


def test_existing_publication_lacking_a_table_blocks_without_create() -> None:
    facts = replace(HEALTHY, publication=PublicationFacts(False, frozenset()))
    (block,) = blocking(_pg(facts, replace(INTENT, create_publication=False)))
    assert "lacks public.orders" in block.message
    assert "ALTER PUBLICATION cdc_inv ADD TABLE public.orders" in block.fix


def test_existing_publication_lacking_a_table_is_added_by_its_owner() -> None:
    facts = replace(HEALTHY, publication=PublicationFacts(False, frozenset()))
    assert _blocks(_pg(facts)) == []


def test_existing_publication_for_all_tables_or_some_serves_all_tables() -> None:
    intent = replace(INTENT, tables=None)
    all_tables = replace(HEALTHY, publication=PublicationFacts(True, frozenset()))
    assert _blocks(_pg(all_tables, intent)) == []
    some = replace(HEALTHY, publication=PublicationFacts(False, frozenset({("public", "x")})))
    findings = _pg(some, intent)
    assert _blocks(findings) == []
    assert any("captures what it publishes" in f.message for f in findings)


def test_missing_table_blocks() -> None:
    facts = replace(HEALTHY, tables=(TableFacts("public", "orders", exists=False),))
    findings = _pg(facts)
    (block,) = blocking(findings)
    assert (block.subject, block.message) == ("public.orders", "table does not exist")


def test_table_without_select_blocks_with_grant() -> None:
    facts = replace(HEALTHY, tables=(replace(ORDERS, selectable=False),))
    (block,) = blocking(_pg(facts))
    assert block.fix == 'GRANT SELECT ON public.orders TO "cdc"'


@pytest.mark.parametrize(
    ("identity", "primary_key", "index"),
    [("d", False, False), ("n", True, False), ("i", False, False)],
)
def test_table_without_replica_identity_warns_that_updates_fail(
    identity: str, primary_key: bool, index: bool
) -> None:
    table = replace(
        ORDERS, replica_identity=identity, has_primary_key=primary_key, has_identity_index=index
    )
    (warn,) = _only(_pg(replace(HEALTHY, tables=(table,))), Severity.WARN)
    assert "rejects its UPDATE and DELETE" in warn.message
    assert "REPLICA IDENTITY FULL" in warn.fix


def test_full_identity_without_key_warns_of_null_keys_only() -> None:
    table = replace(ORDERS, replica_identity="f", has_primary_key=False)
    (warn,) = _only(_pg(replace(HEALTHY, tables=(table,))), Severity.WARN)
    assert "null key" in warn.message


def test_identity_index_is_a_key() -> None:
    table = replace(ORDERS, replica_identity="i", has_primary_key=False, has_identity_index=True)
    findings = [f for f in _pg(replace(HEALTHY, tables=(table,))) if f.subject == "public.orders"]
    assert [(f.severity, f.message) for f in findings] == [
        (Severity.OK, "readable, keyed by its replica identity index")
    ]


def test_missing_slot_without_create_blocks() -> None:
    (block,) = blocking(_pg(intent=replace(INTENT, create_slot=False)))
    assert "create_slot is false" in block.message


def test_slot_of_another_plugin_blocks() -> None:
    (block,) = blocking(_pg(replace(HEALTHY, slot=replace(SLOT, plugin="wal2json"))))
    assert "plugin 'wal2json'" in block.message


def test_slot_of_another_database_blocks() -> None:
    (block,) = blocking(_pg(replace(HEALTHY, slot=replace(SLOT, database="other"))))
    assert "belongs to database 'other'" in block.message


def test_lost_slot_blocks() -> None:
    (block,) = blocking(_pg(replace(HEALTHY, slot=replace(SLOT, wal_status="lost"))))
    assert "wal_status lost" in block.message
    assert "recreate_slot: true" in block.fix


def test_unreserved_and_active_slot_warn() -> None:
    slot = replace(SLOT, wal_status="unreserved", active_pid=4242)
    warnings = [f.message for f in _only(_pg(replace(HEALTHY, slot=slot)), Severity.WARN)]
    assert len(warnings) == 2
    assert "wal_status unreserved" in warnings[0]
    assert "server process 4242" in warnings[1]


def test_existing_slot_reports_its_lag() -> None:
    findings = _pg(replace(HEALTHY, slot=SLOT))
    assert any("holding 1024 bytes of WAL" in f.message for f in findings)


# --- Kafka -----------------------------------------------------------------------

KAFKA = KafkaFacts(
    bootstrap_servers="k:9092",
    brokers=1,
    topics=(
        TopicFacts("inv.__cdc_state", "state", "compact", exists=True, actual_policy="compact"),
        TopicFacts("inv.public.orders", "retention", "delete", exists=False),
    ),
    transaction_max_timeout_ms=900_000,
)


def test_healthy_kafka_is_ok_and_says_the_transactional_id_is_tested_at_start() -> None:
    findings = kafka_findings(KAFKA, INTENT)
    assert blocking(findings) == []
    assert _only(findings, Severity.WARN) == []
    assert any("'cdc-inv' is tested at start" in f.message for f in findings)
    assert any("1 topics exist" in f.message for f in findings)
    assert any("1 missing topics may be created" in f.message for f in findings)


def test_wrong_cleanup_policy_blocks_with_kafka_configs() -> None:
    topic = TopicFacts("inv.public.orders", "retention", "delete", True, "compact")
    (block,) = blocking(kafka_findings(replace(KAFKA, topics=(topic,)), INTENT))
    assert block.subject == "inv.public.orders"
    assert "needs cleanup.policy=delete" in block.message
    assert "--add-config cleanup.policy=delete" in block.fix


def test_topic_that_cannot_be_created_blocks() -> None:
    topic = TopicFacts("t", "retention", "delete", False, create_error="refused. Fix: grant")
    (block,) = blocking(kafka_findings(replace(KAFKA, topics=(topic,)), INTENT))
    assert block.message == "cannot be created: refused. Fix: grant"


def test_transaction_timeout_above_broker_maximum_blocks() -> None:
    facts = replace(KAFKA, transaction_max_timeout_ms=30_000)
    (block,) = blocking(kafka_findings(facts, INTENT))
    assert "(30000 ms) is below our transaction.timeout.ms (60000 ms)" in block.message
    assert "at most 30000" in block.fix


def test_unknown_broker_maximum_warns() -> None:
    facts = replace(KAFKA, transaction_max_timeout_ms=None)
    (warn,) = _only(kafka_findings(facts, INTENT), Severity.WARN)
    assert "transaction.max.timeout.ms" in warn.message


def test_at_least_once_skips_transaction_checks() -> None:
    facts = replace(KAFKA, transaction_max_timeout_ms=1)
    findings = kafka_findings(facts, replace(INTENT, exactly_once=False))
    assert blocking(findings) == []
    assert not any("transaction" in f.message for f in findings)


def test_unreachable_blocks_and_lines_and_json() -> None:
    finding = unreachable("kafka", "cannot reach Kafka at k:9092 within 5s.")
    assert exit_status([finding]) == 1
    assert finding.line() == "BLOCK kafka: not checked: cannot reach Kafka at k:9092 within 5s."
    assert finding.to_json() == {
        "severity": "block",
        "subject": "kafka",
        "message": "not checked: cannot reach Kafka at k:9092 within 5s",
        "fix": "",
    }
    fixed = Finding(Severity.WARN, "t", "m", "f")
    assert fixed.line() == "WARN  t: m. Fix: f"


def _standby(*slots: StandbySlotFacts) -> list[Finding]:
    facts = replace(HEALTHY, version_num=170002, standby_slots=slots)
    return [f for f in _pg(facts) if f.subject == "postgres.standby_slots"]


@pytest.mark.parametrize(
    ("slot", "what"),
    [
        (StandbySlotFacts("sb1", exists=False), "is not a slot on this server"),
        (StandbySlotFacts("sb1", exists=True, physical=False), "is not a physical slot"),
        (
            StandbySlotFacts("sb1", exists=True, invalidation_reason="wal_removed"),
            "was invalidated (wal_removed)",
        ),
    ],
)
def test_a_standby_slot_that_cannot_confirm_blocks_since_the_stream_would_stall(
    slot: StandbySlotFacts, what: str
) -> None:
    [finding] = _standby(slot)
    assert finding.severity is Severity.BLOCK
    assert f"'sb1', which {what}" in finding.message
    assert "synchronized_standby_slots" in finding.fix


def test_a_standby_that_is_not_streaming_is_a_warning() -> None:
    [finding] = _standby(StandbySlotFacts("sb1", exists=True, active=False))
    assert finding.severity is Severity.WARN
    assert "no standby streams through 'sb1'" in finding.message


def test_streaming_standby_slots_are_ok() -> None:
    [finding] = _standby(
        StandbySlotFacts("sb1", exists=True, active=True),
        StandbySlotFacts("sb2", exists=True, active=True),
    )
    assert finding.severity is Severity.OK
    assert "sb1, sb2" in finding.message


def test_no_synchronized_standby_slots_adds_no_finding() -> None:
    assert _standby() == []


# --- the transactional id's ACLs ---------------------------------------------------------

TID = "cdc-inv"


def acl(
    permission: str = "ALLOW",
    *,
    principal: str = "User:cdc",
    host: str = "*",
    operation: str = "WRITE",
    pattern: str = "LITERAL",
    resource: str = TID,
) -> AclFacts:
    return AclFacts(principal, host, operation, permission, pattern, resource)


@pytest.mark.parametrize(
    ("acls", "verdict"),
    [
        ((), False),
        ((acl(),), True),
        ((acl(operation="ALL"),), True),
        ((acl(operation="DESCRIBE"),), False),  # Describe alone cannot initialise
        ((acl(principal="User:*"),), True),
        ((acl(principal="User:other"),), False),
        ((acl(pattern="PREFIXED", resource="cdc-"),), True),
        ((acl(pattern="PREFIXED", resource="other-"),), False),
        ((acl(resource="*"),), True),
        ((acl(resource="cdc-other"),), False),
        ((acl(), acl("DENY")), False),  # a DENY beats an ALLOW
        ((acl(), acl("DENY", principal="User:*", pattern="PREFIXED", resource="cdc")), False),
        ((acl(host="10.0.0.5"),), None),  # depends on the client's address
        ((acl(), acl("DENY", host="10.0.0.5")), None),
    ],
)
def test_write_on_the_transactional_id_is_judged_as_kafkas_authorizer_does(
    acls: tuple[AclFacts, ...], verdict: bool | None
) -> None:
    assert may_write_transactional_id(acls, "User:cdc", TID) is verdict


def _tid_finding(**facts: object) -> Finding:
    findings = kafka_findings(replace(KAFKA, **facts), INTENT)  # type: ignore[arg-type]
    [finding] = [f for f in findings if "transactional id" in f.message or "super" in f.message]
    return finding


def test_no_authorizer_allows_the_transactional_id() -> None:
    finding = _tid_finding(authorizer=False)
    assert finding.severity is Severity.OK
    assert "no authorizer" in finding.message


def test_unreadable_acls_leave_the_transactional_id_to_the_start() -> None:
    finding = _tid_finding(authorizer=None)
    assert finding.severity is Severity.INFO
    assert "tested at start" in finding.message


def test_a_principal_the_settings_do_not_name_is_left_to_the_start() -> None:
    assert _tid_finding(authorizer=True, principal=None).severity is Severity.INFO


def test_a_super_user_may_use_the_transactional_id() -> None:
    finding = _tid_finding(authorizer=True, principal="User:cdc", super_users=("User:cdc",))
    assert finding.severity is Severity.OK


def test_a_missing_write_acl_blocks_with_the_kafka_acls_command() -> None:
    finding = _tid_finding(authorizer=True, principal="User:cdc")
    assert finding.severity is Severity.BLOCK
    assert "--allow-principal User:cdc --operation Write --operation Describe" in finding.fix
    assert f"--transactional-id {TID}" in finding.fix


def test_a_host_specific_acl_is_a_warning() -> None:
    finding = _tid_finding(
        authorizer=True, principal="User:cdc", transactional_acls=(acl(host="10.0.0.5"),)
    )
    assert finding.severity is Severity.WARN


def test_an_allowing_acl_is_ok() -> None:
    finding = _tid_finding(authorizer=True, principal="User:cdc", transactional_acls=(acl(),))
    assert finding.severity is Severity.OK
