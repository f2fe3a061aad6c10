"""The PostgreSQL edge on a real server: publications, slots, keys, and clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from cdc.errors import SlotError, SourceError
from cdc.postgres.source import ReplicationSource
from tests.integration.helpers import scratch_database, unique_name

SCHEMA = """
CREATE TABLE with_pk (id bigint PRIMARY KEY, v text);
CREATE TABLE composite (tenant text, id int, v text, PRIMARY KEY (tenant, id));
CREATE TABLE full_identity (id int PRIMARY KEY, v text);
ALTER TABLE full_identity REPLICA IDENTITY FULL;
CREATE TABLE by_index (code text NOT NULL, v text);
CREATE UNIQUE INDEX by_index_code ON by_index (code);
ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_code;
CREATE TABLE no_key (v text);
CREATE TABLE nothing (id int PRIMARY KEY);
ALTER TABLE nothing REPLICA IDENTITY NOTHING;
"""


@pytest.fixture
def database(postgres_server: Any) -> Iterator[str]:
    with scratch_database(postgres_server, "src", SCHEMA) as (_, dsn):
        yield dsn


@pytest.fixture
def source(database: str) -> Iterator[ReplicationSource]:
    name = database.rsplit("/", 1)[1]
    src = ReplicationSource(database, slot=name, publication=name, application_name="cdc:test")
    src.connect()
    yield src
    src.close()


def test_published_tables_report_their_event_keys(source: ReplicationSource) -> None:
    source.ensure_publication(None, create=True)
    keys = {t.name: (t.replica_identity, t.key_columns) for t in source.published_tables()}
    assert keys == {
        "with_pk": ("d", ("id",)),
        "composite": ("d", ("tenant", "id")),
        "full_identity": ("f", ("id",)),
        "by_index": ("i", ("code",)),
        "no_key": ("d", ()),
        "nothing": ("n", ("id",)),
    }


def test_publication_for_configured_tables(source: ReplicationSource) -> None:
    source.ensure_publication([("public", "with_pk"), ("public", "no_key")], create=True)
    assert [t.qualified for t in source.published_tables()] == ["public.no_key", "public.with_pk"]


def test_missing_configured_table_is_named(source: ReplicationSource) -> None:
    with pytest.raises(SlotError, match=r"public\.nope"):
        source.ensure_publication([("public", "with_pk"), ("public", "nope")], create=True)


def test_publication_lacking_a_table_is_completed_or_refused(
    source: ReplicationSource, database: str
) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"CREATE PUBLICATION {source.publication} FOR TABLE with_pk")
    wanted = [("public", "with_pk"), ("public", "composite")]
    with pytest.raises(SlotError, match=r"lacks tables public\.composite.*create_publication"):
        source.ensure_publication(wanted, create=False)
    source.ensure_publication(wanted, create=True)
    assert {t.name for t in source.published_tables()} == {"with_pk", "composite"}


def test_missing_publication_without_create_is_an_error(source: ReplicationSource) -> None:
    with pytest.raises(SlotError, match=r"does not exist.*create_publication: true"):
        source.ensure_publication(None, create=False)


def test_slot_is_created_once_then_found(source: ReplicationSource) -> None:
    created = source.ensure_slot(create=True)
    assert created.created
    found = source.ensure_slot(create=True)
    assert not found.created
    assert found.confirmed_flush_lsn == created.confirmed_flush_lsn


def test_missing_slot_without_create_is_an_error(source: ReplicationSource) -> None:
    with pytest.raises(SlotError, match=r"does not exist.*create_slot: true"):
        source.ensure_slot(create=False)


def test_slot_of_another_plugin_is_refused(source: ReplicationSource, database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (source.slot,)
        )
    with pytest.raises(SlotError, match=r"test_decoding.*choose another `slot`"):
        source.ensure_slot(create=True)


def test_slot_in_use_is_a_retryable_source_error(source: ReplicationSource, database: str) -> None:
    source.ensure_publication(None, create=True)
    source.ensure_slot(create=True)
    other = ReplicationSource(
        database, slot=source.slot, publication=source.publication, application_name="cdc:other"
    )
    other.connect()
    try:
        other.start(0, 2)
        with pytest.raises(SourceError, match="in use by server process") as info:
            source.ensure_slot(create=True)
        assert not isinstance(info.value, SlotError)
    finally:
        other.close()


def test_bad_credentials_are_reported_without_the_password(postgres_server: Any) -> None:
    dsn = postgres_server.dsn().replace("postgres@", "nobody:s3cret-pw@")
    src = ReplicationSource(dsn, slot="x", publication="x", application_name="cdc:test")
    with pytest.raises(SourceError) as info:
        src.connect()
    assert "s3cret-pw" not in str(info.value)
    assert "connecting to PostgreSQL failed" in str(info.value)


def test_role_without_replication_gets_the_fix_in_the_error(
    postgres_server: Any, database: str
) -> None:
    role = unique_name("norepl")
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        dsn = database.replace("postgres@", f"{role}@")
        src = ReplicationSource(dsn, slot="x", publication="x", application_name="cdc:test")
        with pytest.raises(SourceError, match="ALTER ROLE <user> REPLICATION"):
            src.connect()
    finally:
        with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")
