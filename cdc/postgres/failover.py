"""What failover changes for a connector: the slot's creation command per server version,
the slot's health as PostgreSQL reports it, and DSNs that list several hosts.

PostgreSQL 17 can keep a logical slot across a failover: a slot created with ``FAILOVER``
is synchronised to standbys that run ``sync_replication_slots = on``, and after the
promotion the new primary holds it (``pg_replication_slots.synced``), so streaming goes on
from it. Before 17 a slot lives on one server only and is lost with it.

Pure: builds commands and messages, parses connection strings with libpq's own parser
(``psycopg.conninfo``); it never connects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from cdc.errors import SlotError, SourceError

__all__ = [
    "FAILOVER_SLOTS_VERSION",
    "SlotHealth",
    "alter_slot_failover_command",
    "check_multi_host_dsn",
    "create_slot_command",
    "failover_hint",
    "slot_health_columns",
]

# CREATE_REPLICATION_SLOT ... (FAILOVER true), ALTER_REPLICATION_SLOT, and the columns
# failover, synced and invalidation_reason of pg_replication_slots (PostgreSQL 17 release
# notes; docs: Streaming Replication Protocol, Logical Replication Failover).
FAILOVER_SLOTS_VERSION = 170000
_PG13 = 130000  # pg_replication_slots.wal_status
_PG16 = 160000  # pg_replication_slots.conflicting

# target_session_attrs values that only ever pick a primary (libpq docs, 34.1.2).
_PRIMARY_ONLY = frozenset({"read-write", "primary"})


def create_slot_command(
    slot: str,
    *,
    server_version: int,
    export_snapshot: bool,
    temporary: bool,
    failover: bool,
) -> sql.Composed:
    """The CREATE_REPLICATION_SLOT command for a logical pgoutput slot.

    On PostgreSQL 17+ with ``failover`` (and not ``temporary``: PostgreSQL refuses a
    temporary failover slot, and one dies with its connection anyway) the slot is created
    with ``FAILOVER true`` in the option-list syntax (``SNAPSHOT 'export'|'nothing'``).
    Otherwise the command is the one every version since 10 accepts
    (``EXPORT_SNAPSHOT``/``NOEXPORT_SNAPSHOT``), as cdc always sent it.
    """
    name = sql.Identifier(slot)
    if failover and not temporary and server_version >= FAILOVER_SLOTS_VERSION:
        snapshot = "export" if export_snapshot else "nothing"
        return sql.SQL(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT {}, FAILOVER true)"
        ).format(name, sql.Literal(snapshot))
    return sql.SQL("CREATE_REPLICATION_SLOT {} {}LOGICAL pgoutput {}").format(
        name,
        sql.SQL("TEMPORARY " if temporary else ""),
        sql.SQL("EXPORT_SNAPSHOT" if export_snapshot else "NOEXPORT_SNAPSHOT"),
    )


def alter_slot_failover_command(slot: str) -> sql.Composed:
    """ALTER_REPLICATION_SLOT (PostgreSQL 17+): make an existing slot a failover slot."""
    return sql.SQL("ALTER_REPLICATION_SLOT {} (FAILOVER true)").format(sql.Identifier(slot))


def slot_health_columns(server_version: int) -> str:
    """The select list after the slot's identity: ``wal_status, conflicting, failover,
    synced, invalidation_reason``, NULL where the server has no such column."""
    return ", ".join(
        (
            "wal_status" if server_version >= _PG13 else "NULL",
            "conflicting" if server_version >= _PG16 else "NULL",
            "failover" if server_version >= FAILOVER_SLOTS_VERSION else "NULL",
            "synced" if server_version >= FAILOVER_SLOTS_VERSION else "NULL",
            "invalidation_reason" if server_version >= FAILOVER_SLOTS_VERSION else "NULL",
        )
    )


@dataclass(frozen=True, slots=True)
class SlotHealth:
    """What ``pg_replication_slots`` says about an existing slot (None: no such column)."""

    wal_status: str | None = None
    conflicting: bool | None = None
    failover: bool | None = None
    synced: bool | None = None
    invalidation_reason: str | None = None

    @property
    def invalidated(self) -> str | None:
        """Why the slot can no longer stream, or None when it can."""
        if self.invalidation_reason:
            return self.invalidation_reason
        if self.conflicting:
            return "conflicting with recovery (rows it needs were removed)"
        if self.wal_status == "lost":
            return "wal_status lost (WAL it needs was removed, max_slot_wal_keep_size)"
        return None

    def refuse_invalidated(self, slot: str, confirmed: str | None) -> None:
        """Raise when the slot is invalidated: the changes after its position are gone.

        Raises:
            SlotError: naming the slot, the reason and the way out.
        """
        reason = self.invalidated
        if reason is None:
            return
        raise SlotError(
            f"replication slot {slot!r} exists but PostgreSQL invalidated it ({reason}): it"
            f" can no longer stream, and the changes after its position {confirmed or '?'} are"
            " gone from the WAL. cdc will not skip them silently: to accept the gap, drop the"
            f" slot (SELECT pg_drop_replication_slot('{slot}')) and set recreate_slot: true"
            " (or snapshot.mode: when_needed, which snapshots again)"
        )


def failover_hint(server_version: int, timeline: int) -> str:
    """Why a slot may be missing after a failover, for the error that refuses a new slot."""
    major = server_version // 10000
    promoted = (
        f"This server is on timeline {timeline}: it was promoted (a failover, or a"
        " point-in-time recovery) since the cluster was created. "
        if timeline > 1
        else ""
    )
    if server_version >= FAILOVER_SLOTS_VERSION:
        return (
            f"{promoted}On PostgreSQL {major} a slot survives a failover only when it was"
            " created with FAILOVER (cdc does so on 17+) and the standby had synced it:"
            " sync_replication_slots = on, hot_standby_feedback = on and primary_slot_name on"
            " the standby, its physical slot in synchronized_standby_slots on the primary"
            " (docs/operations.md#failover)"
        )
    return (
        f"{promoted}PostgreSQL {major} does not copy logical slots to standbys: after a"
        " failover the slot is gone (failover slots need PostgreSQL 17)"
    )


def check_multi_host_dsn(dsn: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse a DSN that lists several hosts without ``target_session_attrs=read-write``.

    libpq tries the hosts in order and, by default, takes the first that answers: a standby
    as well. The slot, the publication and the exported snapshot live on the primary, and
    every connection of a connector (replication, catalog, snapshot workers, ``cdc check``)
    uses this DSN as written, so it is the DSN that must say ``read-write`` (or
    ``primary``): rewriting it in one place would let the others land on a standby.
    A DSN libpq cannot parse passes here; connecting reports it.

    Raises:
        SourceError: not retryable, naming the setting to add.
    """
    env = os.environ if environ is None else environ
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return
    hosts = str(params.get("host") or params.get("hostaddr") or env.get("PGHOST", ""))
    if len([h for h in hosts.split(",") if h.strip()]) < 2:
        return
    attrs = str(params.get("target_session_attrs") or env.get("PGTARGETSESSIONATTRS", ""))
    if attrs in _PRIMARY_ONLY:
        return
    given = f"target_session_attrs={attrs}" if attrs else "no target_session_attrs"
    raise SourceError(
        f"postgres.dsn lists several hosts ({hosts}) with {given}: libpq could connect to a"
        " standby, and cdc's slot and publication live on the primary. Add"
        " target_session_attrs=read-write to postgres.dsn (key=value form) or"
        " ?target_session_attrs=read-write (URL form)",
        retryable=False,
    )
