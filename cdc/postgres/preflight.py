"""Edge: what the preflight needs to know of the legacy server, read in a read-only session.

One normal connection (no replication connection: no walsender is taken), with
``default_transaction_read_only=on`` so nothing the check runs can write, and a short
``statement_timeout`` so a busy server is not held. Catalog and statistics views only
(pg_settings, pg_roles, pg_replication_slots, pg_stat_activity, pg_publication*,
pg_class); no table is read. No judgement here: facts for ``cdc.check.findings``.
"""

from __future__ import annotations

from typing import Any

import psycopg

from cdc.check.facts import (
    PostgresFacts,
    PublicationFacts,
    SlotFacts,
    StandbySlotFacts,
    TableFacts,
)
from cdc.postgres.errors import source_error
from cdc.postgres.failover import FAILOVER_SLOTS_VERSION
from cdc.postgres.source import protocol_version_for

__all__ = ["CHECK_SESSION_OPTIONS", "CONNECT_TIMEOUT_S", "gather_postgres_facts"]

# No statement may hold the legacy server longer than this.
CHECK_SESSION_OPTIONS = "-c statement_timeout=5000"
# Read-only, set once connected: as a startup option, PostgreSQL 14+ reports it to libpq,
# and target_session_attrs=read-write (a multi-host DSN) would then refuse every host.
_READ_ONLY = "SET default_transaction_read_only = on"
CONNECT_TIMEOUT_S = 10

_SERVER_SQL = """
SELECT current_setting('server_version_num')::int, current_database(),
       current_setting('server_encoding'), current_setting('wal_level'),
       current_user::text, r.rolsuper, r.rolreplication,
       has_database_privilege(current_database(), 'CREATE'),
       current_setting('max_replication_slots')::int,
       current_setting('max_wal_senders')::int,
       (SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size')
FROM pg_roles r WHERE r.rolname = current_user
"""

# Every table FOR ALL TABLES would publish (user tables, partitioned ones included).
_ALL_TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY 1, 2
"""

_TABLES_SQL = """
SELECT t.s, t.n, c.oid IS NOT NULL,
       coalesce(has_table_privilege(c.oid, 'SELECT'), false),
       coalesce(pg_has_role(c.relowner, 'USAGE'), false),
       coalesce(c.relreplident::text, 'd'),
       EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
       EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)
FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(s, n, ord)
LEFT JOIN pg_namespace ns ON ns.nspname = t.s
LEFT JOIN pg_class c ON c.relnamespace = ns.oid AND c.relname = t.n AND c.relkind IN ('r', 'p')
ORDER BY t.ord
"""


def gather_postgres_facts(
    dsn: str,
    *,
    slot: str,
    publication: str,
    tables: tuple[tuple[str, str], ...] | None,
    application_name: str,
) -> PostgresFacts:
    """Read what the checks need, as the connector's role.

    Args:
        tables: the (schema, table) pairs the connector captures; None for FOR ALL
            TABLES (then the publication's tables, or every user table if it is missing).

    Raises:
        SourceError: the server cannot be reached or refused the role (mapped by
            ``cdc.postgres.errors``, with its fix).
    """
    try:
        with psycopg.connect(
            dsn,
            autocommit=True,
            application_name=application_name,
            options=CHECK_SESSION_OPTIONS,
            connect_timeout=CONNECT_TIMEOUT_S,
        ) as conn:
            conn.execute(_READ_ONLY)
            return _gather(conn, slot=slot, publication=publication, tables=tables)
    except psycopg.Error as exc:
        raise source_error("checking PostgreSQL (read-only)", exc) from exc


def _gather(
    conn: psycopg.Connection[Any],
    *,
    slot: str,
    publication: str,
    tables: tuple[tuple[str, str], ...] | None,
) -> PostgresFacts:
    server = conn.execute(_SERVER_SQL).fetchone()
    assert server is not None  # current_user is always in pg_roles
    version = server[0]
    slot_facts = _slot(conn, slot, version)
    used_slots = conn.execute(
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name <> %s", (slot,)
    ).fetchone()
    own_pid = None if slot_facts is None else slot_facts.active_pid
    senders = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'"
        " AND pid IS DISTINCT FROM %s",
        (own_pid,),
    ).fetchone()
    assert used_slots is not None
    assert senders is not None
    pub = _publication(conn, publication)
    if tables is None:
        if pub is not None and not pub.all_tables:
            wanted = sorted(pub.tables)
        else:
            wanted = [(s, t) for s, t in conn.execute(_ALL_TABLES_SQL)]
    else:
        wanted = list(tables)
    rows = conn.execute(_TABLES_SQL, ([s for s, _ in wanted], [t for _, t in wanted])).fetchall()
    return PostgresFacts(
        version_num=version,
        protocol_version=protocol_version_for(version),
        database=server[1],
        encoding=server[2],
        wal_level=server[3],
        role=server[4],
        superuser=server[5],
        replication=server[6],
        can_create_in_database=server[7],
        max_replication_slots=server[8],
        used_replication_slots=used_slots[0],
        max_wal_senders=server[9],
        used_wal_senders=senders[0],
        max_slot_wal_keep_size_mb=server[10],
        tables=tuple(TableFacts(*row) for row in rows),
        publication=pub,
        slot=slot_facts,
        standby_slots=_standby_slots(conn) if version >= FAILOVER_SLOTS_VERSION else (),
    )


def _standby_slots(conn: psycopg.Connection[Any]) -> tuple[StandbySlotFacts, ...]:
    """The slots ``synchronized_standby_slots`` names, as pg_replication_slots has them."""
    setting = conn.execute("SELECT current_setting('synchronized_standby_slots')").fetchone()
    assert setting is not None
    names = [n.strip().strip('"') for n in str(setting[0]).split(",") if n.strip()]
    if not names:
        return ()
    rows = conn.execute(
        "SELECT slot_name, slot_type = 'physical', active, invalidation_reason"
        " FROM pg_replication_slots WHERE slot_name = ANY(%s)",
        (names,),
    ).fetchall()
    found = {row[0]: row for row in rows}
    return tuple(
        StandbySlotFacts(name, True, *found[name][1:])
        if name in found
        else StandbySlotFacts(name, exists=False)
        for name in names
    )


def _slot(conn: psycopg.Connection[Any], slot: str, version: int) -> SlotFacts | None:
    # wal_status appeared in PostgreSQL 13.
    wal_status = "wal_status" if version >= 130000 else "NULL::text"
    row = conn.execute(
        f"SELECT slot_type, plugin, database, active_pid, {wal_status},"  # noqa: S608 - a constant
        " CASE WHEN confirmed_flush_lsn IS NOT NULL AND NOT pg_is_in_recovery()"
        " THEN pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint END"
        " FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None:
        return None
    return SlotFacts(*row)


def _publication(conn: psycopg.Connection[Any], publication: str) -> PublicationFacts | None:
    row = conn.execute(
        "SELECT puballtables FROM pg_publication WHERE pubname = %s", (publication,)
    ).fetchone()
    if row is None:
        return None
    published = conn.execute(
        "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = %s",
        (publication,),
    ).fetchall()
    return PublicationFacts(all_tables=row[0], tables=frozenset((s, t) for s, t in published))
