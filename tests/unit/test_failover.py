"""Failover: the slot's creation command per server version, its health, multi-host DSNs."""

from __future__ import annotations

import pytest

from cdc.errors import SlotError, SourceError
from cdc.postgres.failover import (
    SlotHealth,
    alter_slot_failover_command,
    check_multi_host_dsn,
    create_slot_command,
    failover_hint,
    slot_health_columns,
)

PG15, PG16, PG17, PG18 = 150012, 160008, 170004, 180000


def _command(
    version: int, *, export: bool = True, temporary: bool = False, failover: bool = True
) -> str:
    return create_slot_command(
        "cdc_inventory",
        server_version=version,
        export_snapshot=export,
        temporary=temporary,
        failover=failover,
    ).as_string(None)


@pytest.mark.parametrize("version", [100023, PG15, PG16])
def test_before_17_the_slot_is_created_as_it_always_was(version: int) -> None:
    assert (
        _command(version)
        == 'CREATE_REPLICATION_SLOT "cdc_inventory" LOGICAL pgoutput EXPORT_SNAPSHOT'
    )
    assert (
        _command(version, export=False)
        == 'CREATE_REPLICATION_SLOT "cdc_inventory" LOGICAL pgoutput NOEXPORT_SNAPSHOT'
    )


@pytest.mark.parametrize("version", [PG17, PG18])
def test_from_17_the_slot_is_a_failover_slot(version: int) -> None:
    assert (
        _command(version) == 'CREATE_REPLICATION_SLOT "cdc_inventory" LOGICAL pgoutput'
        " (SNAPSHOT 'export', FAILOVER true)"
    )
    assert (
        _command(version, export=False)
        == 'CREATE_REPLICATION_SLOT "cdc_inventory" LOGICAL pgoutput'
        " (SNAPSHOT 'nothing', FAILOVER true)"
    )


def test_a_temporary_slot_is_never_a_failover_slot() -> None:
    """PostgreSQL refuses FAILOVER on a temporary slot (initial_only)."""
    assert (
        _command(PG17, temporary=True)
        == 'CREATE_REPLICATION_SLOT "cdc_inventory" TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT'
    )


def test_failover_can_be_turned_off_on_17() -> None:
    assert (
        _command(PG17, failover=False)
        == 'CREATE_REPLICATION_SLOT "cdc_inventory" LOGICAL pgoutput EXPORT_SNAPSHOT'
    )


def test_the_slot_name_is_quoted_as_an_identifier() -> None:
    command = create_slot_command(
        'we"ird', server_version=PG17, export_snapshot=False, temporary=False, failover=True
    ).as_string(None)
    assert command.startswith('CREATE_REPLICATION_SLOT "we""ird" LOGICAL')


def test_an_existing_slot_is_altered_to_failover() -> None:
    assert (
        alter_slot_failover_command("s").as_string(None)
        == 'ALTER_REPLICATION_SLOT "s" (FAILOVER true)'
    )


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (120000, "NULL, NULL, NULL, NULL, NULL"),
        (PG15, "wal_status, NULL, NULL, NULL, NULL"),
        (PG16, "wal_status, conflicting, NULL, NULL, NULL"),
        (PG17, "wal_status, conflicting, failover, synced, invalidation_reason"),
    ],
)
def test_slot_health_reads_only_the_columns_the_server_has(version: int, expected: str) -> None:
    assert slot_health_columns(version) == expected


@pytest.mark.parametrize(
    "health",
    [
        SlotHealth(wal_status="lost"),
        SlotHealth(wal_status="reserved", conflicting=True),
        SlotHealth(wal_status="unreserved", invalidation_reason="wal_removed"),
    ],
)
def test_an_invalidated_slot_is_refused_naming_it_and_the_way_out(health: SlotHealth) -> None:
    with pytest.raises(SlotError) as caught:
        health.refuse_invalidated("cdc_inventory", "0/16B3748")
    message = str(caught.value)
    assert "'cdc_inventory'" in message
    assert "0/16B3748" in message
    assert "pg_drop_replication_slot('cdc_inventory')" in message
    assert "recreate_slot: true" in message
    assert not caught.value.retryable


@pytest.mark.parametrize(
    "health",
    [
        SlotHealth(),
        SlotHealth(wal_status="reserved", conflicting=False),
        SlotHealth(wal_status="extended", conflicting=False, failover=True, synced=True),
    ],
)
def test_a_healthy_slot_passes(health: SlotHealth) -> None:
    health.refuse_invalidated("s", "0/1")


def test_the_failover_hint_says_what_17_needs_and_what_a_promotion_looks_like() -> None:
    hint = failover_hint(PG17, timeline=3)
    assert "timeline 3" in hint
    assert "sync_replication_slots = on" in hint
    assert "synchronized_standby_slots" in hint
    assert "timeline" not in failover_hint(PG17, timeline=1)


def test_the_failover_hint_before_17_says_slots_do_not_survive() -> None:
    assert "need PostgreSQL 17" in failover_hint(PG15, timeline=2)


@pytest.mark.parametrize(
    "dsn",
    [
        "host=db1,db2 port=5432,5432 dbname=inventory target_session_attrs=read-write",
        "host=db1,db2 dbname=inventory target_session_attrs=primary",
        "postgresql://cdc:pw@db1:5432,db2:5432/inventory?target_session_attrs=read-write",
        "host=db1 dbname=inventory",
        "postgresql://cdc@db1/inventory",
        "hostaddr=10.0.0.1 dbname=inventory",
        "dbname=inventory",
        "this is not a dsn",  # connecting reports it, with its own fix
    ],
)
def test_a_dsn_that_can_only_reach_a_primary_is_accepted(dsn: str) -> None:
    check_multi_host_dsn(dsn, environ={})


@pytest.mark.parametrize(
    "dsn",
    [
        "host=db1,db2 port=5432,5432 dbname=inventory password=hunter2",
        "postgresql://cdc:hunter2@db1,db2/inventory",
        "host=db1,db2 dbname=inventory target_session_attrs=any password=hunter2",
        "hostaddr=10.0.0.1,10.0.0.2 dbname=inventory password=hunter2",
    ],
)
def test_several_hosts_without_read_write_are_refused_with_the_fix(dsn: str) -> None:
    with pytest.raises(SourceError) as caught:
        check_multi_host_dsn(dsn, environ={})
    assert "target_session_attrs=read-write" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert not caught.value.retryable


def test_the_environment_counts_as_libpq_reads_it() -> None:
    with pytest.raises(SourceError):
        check_multi_host_dsn("dbname=inventory", environ={"PGHOST": "db1,db2"})
    check_multi_host_dsn(
        "dbname=inventory", environ={"PGHOST": "db1,db2", "PGTARGETSESSIONATTRS": "read-write"}
    )
    check_multi_host_dsn(
        "host=db1,db2 dbname=inventory", environ={"PGTARGETSESSIONATTRS": "read-write"}
    )
