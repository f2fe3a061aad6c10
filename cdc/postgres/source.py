"""Edge: the PostgreSQL side. Prepares the slot and publication, then moves replication bytes.

Two connections per connector: a normal one for catalog queries and DDL (a replication
connection accepts only the simple query protocol, so no parameters), and a
``replication="database"`` one that runs CREATE_REPLICATION_SLOT and START_REPLICATION and
then carries the COPY_BOTH stream. This module moves bytes; it does not decode them.
"""

from __future__ import annotations

import select
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg import sql
from psycopg.pq import DiagnosticField, TransactionStatus

from cdc.errors import ConfigError, SlotError, SourceError
from cdc.lsn import format_lsn, parse_lsn
from cdc.masking import TableControls
from cdc.postgres.errors import source_error
from cdc.postgres.failover import (
    FAILOVER_SLOTS_VERSION,
    SlotHealth,
    alter_slot_failover_command,
    check_multi_host_dsn,
    create_slot_command,
    failover_hint,
    slot_health_columns,
)
from cdc.row_filter import parse_row_filter
from cdc.stream.wal_guard import SlotWal

__all__ = [
    "EVENT_KEY_COLUMNS_SQL",
    "SESSION_OPTIONS",
    "ReplicationSource",
    "ServerInfo",
    "SlotInfo",
    "TableInfo",
    "protocol_version_for",
]

# The text output of every value depends on these settings of the session that runs the
# output functions: pgoutput runs them in the walsender, with our startup options. The
# value converters assume exactly these (cdc.protocol.values).
SESSION_OPTIONS = (
    "-c datestyle=ISO,MDY -c timezone=UTC -c intervalstyle=postgres "
    "-c extra_float_digits=3 -c bytea_output=hex -c lc_monetary=C"
)

MIN_SERVER_VERSION = 100000
_PG12 = 120000  # pg_attribute.attgenerated
_PG15 = 150000  # publication column lists and row filters

# The event key of the table ``c`` (pg_class), as text[]: the replica-identity index's
# columns under REPLICA IDENTITY USING INDEX, else the primary key's (also under FULL and
# NOTHING, where pgoutput's key flags would mark every column or none); '{}' for neither.
# One rule for the stream and the snapshots, so their records have the same keys: the
# key's columns in table column order, as pgoutput's key flags give them (a primary key
# declared (b, a) on columns a, b is keyed {"a": ..., "b": ...} everywhere).
EVENT_KEY_COLUMNS_SQL = sql.SQL("""
    coalesce((
      SELECT array_agg(a.attname::text ORDER BY a.attnum)
      FROM pg_index i
      CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
      WHERE i.indrelid = c.oid
        AND CASE c.relreplident WHEN 'i' THEN i.indisreplident ELSE i.indisprimary END
    ), '{}')""")  # pgoutput and logical replication appeared in PostgreSQL 10


@dataclass(frozen=True, slots=True)
class ServerInfo:
    version_num: int
    database: str
    wal_level: str
    encoding: str
    # pg_control's system identifier: the LSNs of another cluster mean nothing here.
    system_id: str = ""
    # IDENTIFY_SYSTEM's timeline: above 1 once the server was promoted (or recovered to
    # a point in time), which is what a missing slot after a failover looks like.
    timeline: int = 0


@dataclass(frozen=True, slots=True)
class SlotInfo:
    name: str
    confirmed_flush_lsn: int
    created: bool
    # Set when the slot was just created with EXPORT_SNAPSHOT: valid for SET TRANSACTION
    # SNAPSHOT while the replication connection stays open and idle.
    snapshot_name: str | None = None
    # PostgreSQL 17+: whether the slot is synchronised to standbys (None before 17).
    failover: bool | None = None


@dataclass(frozen=True, slots=True)
class TableInfo:
    """A published table and what its replica identity lets us capture."""

    schema: str
    name: str
    replica_identity: str  # relreplident: d, n, f, i
    # The event key: the replica-identity index's columns under USING INDEX, else the
    # primary key's (also under FULL and NOTHING, where pgoutput's key flags would mark
    # every column or none); empty when the table has neither.
    key_columns: tuple[str, ...]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


def _same_filter(have: str | None, want: str | None) -> bool:
    """Whether the publication's row filter (PostgreSQL's deparsed form, e.g.
    ``(country <> 'XX'::text)``) is the configured one, up to spaces and outer brackets."""
    if have is None or want is None:
        return have is None and want is None
    return _bare(have) == _bare(want)


def _bare(expression: str) -> str:
    text = "".join(expression.split())
    while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1]
    return text


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def protocol_version_for(server_version_num: int) -> int:
    """The highest pgoutput protocol the server speaks (docs: Logical Streaming Protocol)."""
    if server_version_num >= 160000:
        return 4
    if server_version_num >= 150000:
        return 3
    if server_version_num >= 140000:
        return 2
    return 1


class ReplicationSource:
    """One connector's two PostgreSQL connections and the COPY_BOTH byte stream."""

    def __init__(
        self,
        dsn: str,
        *,
        slot: str,
        publication: str,
        application_name: str,
        log: Any = None,
    ) -> None:
        self._dsn = dsn
        self._log = (
            log
            if log is not None
            else structlog.get_logger("cdc.postgres").bind(
                connector=application_name.removeprefix("cdc:"), slot=slot
            )
        )
        self.slot = slot
        self.publication = publication
        self._application_name = application_name
        self._sql: psycopg.Connection[Any] | None = None
        self._repl: psycopg.Connection[Any] | None = None
        self._pgconn: Any = None
        self._socket = -1
        self._server_version = 0
        self._timeline = 0

    # --- set-up ---------------------------------------------------------------------

    def connect(self) -> ServerInfo:
        """Open both connections and check the server can do logical replication.

        Both connections use the DSN as written (several hosts need
        ``target_session_attrs=read-write``: ``check_multi_host_dsn``), and the server must
        be a primary: a standby (in recovery) is refused, retryably, since it may be one
        being promoted by a failover.
        """
        check_multi_host_dsn(self._dsn)
        try:
            self._sql = psycopg.connect(
                self._dsn,
                autocommit=True,
                application_name=f"{self._application_name}:setup",
                options=SESSION_OPTIONS,
            )
            self._repl = psycopg.connect(
                self._dsn,
                autocommit=True,
                replication="database",
                application_name=self._application_name,
                options=SESSION_OPTIONS,
            )
            row = self._sql.execute(
                "SELECT current_setting('server_version_num')::int, current_database(),"
                " current_setting('wal_level'), current_setting('server_encoding'),"
                " pg_is_in_recovery(), inet_server_addr()::text, inet_server_port()"
            ).fetchone()
            system = self._repl.execute("IDENTIFY_SYSTEM").fetchone()
        except psycopg.Error as exc:
            self.close()
            raise source_error("connecting to PostgreSQL", exc) from exc
        assert row is not None
        assert system is not None
        info = ServerInfo(
            version_num=row[0],
            database=row[1],
            wal_level=row[2],
            encoding=row[3],
            system_id=str(system[0]),
            timeline=int(system[1]),
        )
        self._server_version = info.version_num
        self._timeline = info.timeline
        if row[4]:
            where = "a unix socket" if row[5] is None else f"{row[5]} port {row[6]}"
            raise SourceError(
                f"the PostgreSQL server at {where} is a standby (in recovery): cdc streams"
                " from the primary, where its slot and publication live. Waiting for it to be"
                " promoted; if it is not the primary, point postgres.dsn at the primary, or"
                " list every host with target_session_attrs=read-write",
                retryable=True,
            )
        if info.version_num < MIN_SERVER_VERSION:
            raise SourceError(
                f"PostgreSQL {info.version_num} is too old: logical replication with pgoutput"
                " needs PostgreSQL 10 or later",
                retryable=False,
            )
        if info.wal_level != "logical":
            raise SourceError(
                f"wal_level is {info.wal_level!r} on database {info.database!r}: set"
                " wal_level = logical in postgresql.conf and restart PostgreSQL",
                retryable=False,
            )
        if info.encoding != "UTF8":
            raise SourceError(
                f"database {info.database!r} uses encoding {info.encoding}: cdc reads UTF8"
                " databases only",
                retryable=False,
            )
        return info

    def ensure_publication(self, tables: list[tuple[str, str]] | None, *, create: bool) -> None:
        """Create the publication when missing: for the configured tables, or all tables.

        An existing publication is used as it is, except that configured tables it lacks
        are added when ``create`` is allowed (otherwise that is an error naming them).
        """
        conn = self._require_sql()
        try:
            row = conn.execute(
                "SELECT puballtables FROM pg_publication WHERE pubname = %s", (self.publication,)
            ).fetchone()
            if row is None:
                if not create:
                    raise SlotError(
                        f"publication {self.publication!r} does not exist: create it"
                        " (CREATE PUBLICATION ... FOR TABLE ...) or set create_publication: true"
                    )
                self._check_tables_exist(conn, tables)
                if tables is None:
                    query = sql.SQL("CREATE PUBLICATION {} FOR ALL TABLES").format(
                        sql.Identifier(self.publication)
                    )
                else:
                    query = sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                        sql.Identifier(self.publication),
                        sql.SQL(", ").join(sql.Identifier(s, t) for s, t in tables),
                    )
                conn.execute(query)
                return
            if row[0] or tables is None:
                return
            published = {
                (s, t)
                for s, t in conn.execute(
                    "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
                    (self.publication,),
                )
            }
            missing = [t for t in tables if t not in published]
            if not missing:
                return
            names = ", ".join(f"{s}.{t}" for s, t in missing)
            if not create:
                raise SlotError(
                    f"publication {self.publication!r} lacks tables {names}: add them"
                    " (ALTER PUBLICATION ... ADD TABLE) or set create_publication: true"
                )
            self._check_tables_exist(conn, missing)
            conn.execute(
                sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                    sql.Identifier(self.publication),
                    sql.SQL(", ").join(sql.Identifier(s, t) for s, t in missing),
                )
            )
        except psycopg.errors.InsufficientPrivilege as exc:
            raise SlotError(
                f"not allowed to create or alter publication {self.publication!r}:"
                f" {str(exc).strip()}. FOR ALL TABLES needs a superuser; FOR TABLE needs"
                " ownership of each table. Ask a DBA to create the publication, then set"
                " create_publication: false"
            ) from exc
        except psycopg.Error as exc:
            raise source_error(f"preparing publication {self.publication!r}", exc) from exc

    def apply_data_controls(
        self, controls: Mapping[str, TableControls], *, create: bool, server_version: int
    ) -> frozenset[str]:
        """Check each table's column list, row filter and masks against the catalog, and
        push the column list and row filter into the publication where PostgreSQL can
        apply them (15+: ``ADD TABLE t (c1, c2) WHERE (...)``), so excluded columns and
        filtered rows are never decoded or sent.

        Not pushed down, a column list is applied by the encoder (it drops the columns),
        and a row filter by cdc's own evaluation (``cdc.row_filter``), which accepts only
        what it evaluates as PostgreSQL would, on replica-identity columns (PostgreSQL's
        own rule for tables that publish UPDATE and DELETE). With ``create`` false (a
        DBA's publication) a difference is an error naming it and the statement that
        fixes it.

        Returns:
            The tables whose row filter cdc evaluates.

        Raises:
            ConfigError: an unknown table or column, a key column excluded or masked, or a
                filter cdc cannot evaluate exactly.
            SlotError: a DBA's publication that differs, or a filter on columns outside
                the replica identity.
        """
        if not controls:
            return frozenset()
        conn = self._require_sql()
        evaluated: set[str] = set()
        try:
            row = conn.execute(
                "SELECT puballtables FROM pg_publication WHERE pubname = %s", (self.publication,)
            ).fetchone()
            all_tables = bool(row and row[0])
            for table, control in controls.items():
                in_cdc = self._apply_control(
                    conn,
                    table,
                    control,
                    create=create,
                    pushable=server_version >= _PG15 and not all_tables,
                    why_not=(
                        f"PostgreSQL {server_version // 10000} has no publication row filters"
                        " (they need PostgreSQL 15)"
                        if server_version < _PG15
                        else f"publication {self.publication!r} is FOR ALL TABLES, which"
                        " cannot carry row filters: list the tables in `tables`"
                    ),
                )
                if in_cdc:
                    evaluated.add(table)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise SlotError(
                f"not allowed to alter publication {self.publication!r} for table_options:"
                f" {str(exc).strip()}. Ask a DBA to set the column lists and row filters,"
                " then set create_publication: false"
            ) from exc
        except psycopg.Error as exc:
            raise source_error(
                f"applying table_options to publication {self.publication!r}", exc
            ) from exc
        return frozenset(evaluated)

    def _apply_control(
        self,
        conn: psycopg.Connection[Any],
        table: str,
        control: TableControls,
        *,
        create: bool,
        pushable: bool,
        why_not: str,
    ) -> bool:
        """Check (and push down) one table's controls; True when cdc evaluates its row
        filter itself."""
        schema, _, name = table.partition(".")
        head = conn.execute(
            sql.SQL(
                "SELECT c.oid, c.relreplident, {key_columns} FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')"
            ).format(key_columns=EVENT_KEY_COLUMNS_SQL),
            (schema, name),
        ).fetchone()
        if head is None:
            raise ConfigError(
                f"table {table} does not exist: fix its entry or create the table",
                key=f"table_options.{table}",
            )
        oid, identity, keys = head
        generated = "a.attgenerated <> ''" if self._server_version >= _PG12 else "false"
        typed = conn.execute(
            sql.SQL(
                "SELECT a.attname::text, {}, a.atttypid::int FROM pg_attribute a"
                " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped"
                " ORDER BY a.attnum"
            ).format(sql.SQL(generated)),
            (oid,),
        ).fetchall()
        columns = [(c, is_generated) for c, is_generated, _ in typed]
        control.check([c for c, _ in columns], keys)
        where = control.row_filter
        if not pushable:
            if where is None:
                return False  # the encoder drops the excluded columns
            parsed = parse_row_filter(
                where,
                {c: type_oid for c, _, type_oid in typed},
                table=table,
                indexes={c: i for i, (c, _, _) in enumerate(typed)},
            )
            outside = sorted(parsed.columns - set(keys)) if identity != "f" else []
            if outside:
                raise SlotError(
                    f"table {table}: its row filter (table_options.{table}.where) reads"
                    f" {', '.join(outside)}, outside its replica identity"
                    f" ({', '.join(keys) or 'none'}); cdc evaluates it itself ({why_not}),"
                    " and an UPDATE or DELETE carries only the identity's old values, as"
                    " PostgreSQL 15 requires of any publication row filter. Filter on"
                    f" those columns, or ALTER TABLE {table} REPLICA IDENTITY FULL"
                )
            return True
        published = [c for c, is_generated in columns if not is_generated]
        # Under REPLICA IDENTITY FULL a column list must hold every column or PostgreSQL
        # refuses the table's UPDATEs and DELETEs: the encoder drops the columns instead.
        wanted = (
            control.published(published)
            if control.limits_columns and identity != "f"
            else published
        )
        current = conn.execute(
            "SELECT attnames::text[], rowfilter FROM pg_publication_tables"
            " WHERE pubname = %s AND schemaname = %s AND tablename = %s",
            (self.publication, schema, name),
        ).fetchone()
        if current is None:
            raise SlotError(
                f"table {table} has table_options but is not in publication"
                f" {self.publication!r}: add it (ALTER PUBLICATION ... ADD TABLE) or list it"
                " in `tables`"
            )
        # Without a column list attnames holds every column, the generated ones too
        # (which pgoutput does not send before PostgreSQL 18).
        have_columns = [c for c in current[0] or () if c in published]
        have_filter = current[1]
        if set(have_columns) == set(wanted) and _same_filter(have_filter, where):
            return False
        column_list = (
            sql.SQL(" ({})").format(sql.SQL(", ").join(sql.Identifier(c) for c in wanted))
            if wanted != published
            else sql.SQL("")  # every column: no list (FULL refuses any list in PG 15)
        )
        statement = sql.SQL("ALTER PUBLICATION {} ADD TABLE {}{}{}").format(
            sql.Identifier(self.publication),
            sql.Identifier(schema, name),
            column_list,
            sql.SQL("") if where is None else sql.SQL(" WHERE ({})").format(sql.SQL(where)),
        )
        if not create:
            differences = []
            if set(have_columns) != set(wanted):
                differences.append(
                    f"it publishes columns ({', '.join(have_columns)}), the connector file"
                    f" wants ({', '.join(wanted)})"
                )
            if not _same_filter(have_filter, where):
                differences.append(
                    f"its row filter is {have_filter or 'none'}, the connector file's is"
                    f" {where or 'none'}"
                )
            raise SlotError(
                f"publication {self.publication!r} does not match table_options for {table}:"
                f" {'; '.join(differences)}. Ask a DBA to run ALTER PUBLICATION ... DROP TABLE"
                f" then {statement.as_string(conn)}, or set the connector file to what the"
                " publication holds (write `where` as pg_publication_tables.rowfilter shows it)"
            )
        with conn.transaction():
            before = self._refused_write(conn, schema, name, published)
            conn.execute(
                sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(
                    sql.Identifier(self.publication), sql.Identifier(schema, name)
                )
            )
            conn.execute(statement)
            after = self._refused_write(conn, schema, name, published)
            if after is not None and before is None:
                # Rolled back by the exception: PostgreSQL would refuse the application's
                # UPDATEs and DELETEs on the table from the commit on.
                raise SlotError(
                    f"table {table}: PostgreSQL refuses this column list or row filter for a"
                    f" table whose UPDATEs and DELETEs are published ({after}). A row filter"
                    f" may use only the replica identity columns ({', '.join(keys) or 'none'})"
                    " and a column list must include them: change table_options, or set the"
                    " table's REPLICA IDENTITY (FULL allows any column in a row filter)"
                )
        return False

    @staticmethod
    def _refused_write(
        conn: psycopg.Connection[Any], schema: str, name: str, columns: list[str]
    ) -> str | None:
        """Why PostgreSQL would refuse an UPDATE or DELETE on the table under the current
        publications (EXPLAIN runs the same check, changing nothing), or None."""
        if not columns:
            return None
        first = sql.Identifier(columns[0])
        target = sql.Identifier(schema, name)
        for statement in (
            sql.SQL("EXPLAIN UPDATE ONLY {} SET {} = {} WHERE false").format(target, first, first),
            sql.SQL("EXPLAIN DELETE FROM ONLY {} WHERE false").format(target),
        ):
            try:
                with conn.transaction():
                    conn.execute(statement)
            except psycopg.errors.InvalidColumnReference as exc:
                detail = exc.diag.message_detail or ""
                return f"{str(exc).strip().splitlines()[0]}: {detail}".rstrip(": ")
            except psycopg.errors.ObjectNotInPrerequisiteState as exc:
                return str(exc).strip().splitlines()[0]
        return None

    @staticmethod
    def _check_tables_exist(
        conn: psycopg.Connection[Any], tables: list[tuple[str, str]] | None
    ) -> None:
        if not tables:
            return
        missing = [
            f"{s}.{t}"
            for s, t in tables
            if conn.execute(
                "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s", (s, t)
            ).fetchone()
            is None
        ]
        if missing:
            raise SlotError(
                f"configured tables do not exist: {', '.join(missing)}: fix `tables` in the"
                " connector file or create them"
            )

    def published_tables(self) -> list[TableInfo]:
        """Every table of the publication, with its replica identity and key columns."""
        conn = self._require_sql()
        try:
            rows = conn.execute(
                sql.SQL(
                    """
                SELECT n.nspname, c.relname, c.relreplident, {key_columns}
                FROM pg_publication_tables p
                JOIN pg_namespace n ON n.nspname = p.schemaname
                JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename
                WHERE p.pubname = %s
                ORDER BY 1, 2
                """
                ).format(key_columns=EVENT_KEY_COLUMNS_SQL),
                (self.publication,),
            ).fetchall()
        except psycopg.Error as exc:
            raise source_error(f"reading tables of publication {self.publication!r}", exc) from exc
        return [TableInfo(s, t, ri, tuple(keys)) for s, t, ri, keys in rows]

    @property
    def catalog_connection(self) -> psycopg.Connection[Any]:
        """The setup connection, for catalog lookups from this connector's thread."""
        return self._require_sql()

    def key_columns(self, schema: str, table: str) -> tuple[str, ...]:
        """The primary key of one table, for a table that appears after start-up."""
        conn = self._require_sql()
        try:
            row = conn.execute(
                """
                SELECT coalesce(array_agg(a.attname ORDER BY a.attnum), '{}')
                FROM pg_index i
                JOIN pg_class c ON c.oid = i.indrelid
                JOIN pg_namespace n ON n.oid = c.relnamespace
                CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                WHERE n.nspname = %s AND c.relname = %s AND i.indisprimary
                """,
                (schema, table),
            ).fetchone()
        except psycopg.Error as exc:
            raise source_error(f"reading the primary key of {schema}.{table}", exc) from exc
        return tuple(row[0]) if row else ()

    def ensure_slot(
        self,
        *,
        create: bool,
        before_create: Callable[[], None] | None = None,
        export_snapshot: bool = False,
        temporary: bool = False,
        failover: bool = True,
    ) -> SlotInfo:
        """Find the slot, or create it; refuse a slot of another plugin or database, and a
        slot PostgreSQL invalidated.

        ``before_create`` runs before a missing slot is created and may refuse by raising:
        the pipeline uses it to detect a slot that was lost rather than never made (its
        error then says what a failover does to slots on this server version).
        ``export_snapshot`` creates it with an exported snapshot (for a consistent initial
        snapshot); ``temporary`` makes PostgreSQL drop it when the connection closes.
        ``failover`` (PostgreSQL 17+, not temporary): the slot is created as a failover
        slot, and an existing slot cdc manages (``create``) is made one.
        """
        conn = self._require_sql()
        version = self._server_version
        try:
            row = conn.execute(
                "SELECT plugin, slot_type, database, confirmed_flush_lsn::text, active_pid, "  # noqa: S608
                + slot_health_columns(version)
                + " FROM pg_replication_slots WHERE slot_name = %s",
                (self.slot,),
            ).fetchone()
            database = conn.execute("SELECT current_database()").fetchone()
        except psycopg.Error as exc:
            raise source_error(f"looking up replication slot {self.slot!r}", exc) from exc
        assert database is not None
        if row is not None:
            plugin, slot_type, slot_db, confirmed, active_pid = row[:5]
            health = SlotHealth(*row[5:])
            if slot_type != "logical" or plugin != "pgoutput":
                raise SlotError(
                    f"replication slot {self.slot!r} exists but is {slot_type} with plugin"
                    f" {plugin!r}; cdc needs a logical pgoutput slot: choose another `slot`"
                )
            if slot_db != database[0]:
                raise SlotError(
                    f"replication slot {self.slot!r} belongs to database {slot_db!r}, not"
                    f" {database[0]!r}: choose another `slot`"
                )
            health.refuse_invalidated(self.slot, confirmed)
            if active_pid is not None:
                raise SourceError(
                    f"replication slot {self.slot!r} is in use by server process {active_pid}"
                    " (another cdc instance, or one that just died and is not yet noticed)"
                )
            if confirmed is None:
                raise SlotError(f"replication slot {self.slot!r} has no confirmed position")
            if health.synced:
                # On a primary, synced marks a slot a promoted standby kept (the docs:
                # "may (if leftover from a promoted standby) also be true").
                self._log.info(
                    "slot_resumed_after_failover", lsn=confirmed, timeline=self._timeline
                )
            is_failover = health.failover
            if failover and create and health.failover is False and not temporary:
                self._alter_to_failover()
                is_failover = True
            return SlotInfo(self.slot, parse_lsn(confirmed), created=False, failover=is_failover)
        hint = failover_hint(version, self._timeline)
        if not create:
            raise SlotError(
                f"replication slot {self.slot!r} does not exist: create it or set"
                f" create_slot: true. If it existed before: {hint}"
            )
        if before_create is not None:
            try:
                before_create()
            except SlotError as exc:
                raise SlotError(f"{exc}. {hint}") from exc
        repl = self._require_repl()
        command = create_slot_command(
            self.slot,
            server_version=version,
            export_snapshot=export_snapshot,
            temporary=temporary,
            failover=failover,
        )
        try:
            result = repl.execute(command).fetchone()
        except psycopg.Error as exc:
            raise source_error(f"creating replication slot {self.slot!r}", exc) from exc
        assert result is not None
        return SlotInfo(
            self.slot,
            parse_lsn(result[1]),
            created=True,
            snapshot_name=result[2] if export_snapshot else None,
            failover=(failover and not temporary) if version >= FAILOVER_SLOTS_VERSION else None,
        )

    def _alter_to_failover(self) -> None:
        """Make the (inactive) slot a failover slot, so a standby syncs it from now on."""
        try:
            self._require_repl().execute(alter_slot_failover_command(self.slot))
        except psycopg.Error as exc:
            raise source_error(
                f"making replication slot {self.slot!r} a failover slot", exc
            ) from exc
        self._log.info("slot_failover_enabled")

    def slot_wal(self, server_version: int) -> SlotWal | None:
        """What the server says about the slot's retained WAL (one catalog query): the
        bytes from its ``restart_lsn`` to the server's position, and on PostgreSQL 13+
        ``wal_status`` and ``safe_wal_size``. None when the slot is gone (the stream says
        why) or the catalog connection is busy (try again later).

        Raises:
            SourceError: retryable when the connection was lost (the stream's business:
                the connector restarts); not retryable when only the query failed (the
                caller may simply try again at its next interval).
        """
        conn = self._require_sql()
        if conn.info.transaction_status != TransactionStatus.IDLE:
            return None
        columns = "wal_status, safe_wal_size" if server_version >= 130000 else "NULL, NULL"
        try:
            row = conn.execute(
                "SELECT (pg_current_wal_lsn() - restart_lsn)::bigint, "  # noqa: S608
                + columns
                + " FROM pg_replication_slots WHERE slot_name = %s",
                (self.slot,),
            ).fetchone()
        except psycopg.Error as exc:
            error = source_error(f"reading the retained WAL of slot {self.slot!r}", exc)
            error.retryable = conn.broken or conn.closed
            raise error from exc
        if row is None:
            return None
        return SlotWal(retained_bytes=row[0], wal_status=row[1], safe_wal_size=row[2])

    # --- streaming ------------------------------------------------------------------

    def start(self, start_lsn: int, protocol_version: int) -> None:
        """START_REPLICATION from ``start_lsn``; the connection is then in COPY_BOTH."""
        repl = self._require_repl()
        options = [f"proto_version '{protocol_version}'", f"publication_names '{self.publication}'"]
        if protocol_version >= 2:
            options.append("messages 'true'")
        command = (
            f'START_REPLICATION SLOT "{self.slot}" LOGICAL {format_lsn(start_lsn)}'
            f" ({', '.join(options)})"
        )
        try:
            repl.execute(command)
        except psycopg.Error as exc:
            raise source_error(f"starting replication from slot {self.slot!r}", exc) from exc
        self._pgconn = repl.pgconn
        self._socket = repl.pgconn.socket

    def read(self) -> memoryview | bytes | None:
        """One CopyData payload if one is buffered, else None (never blocks)."""
        try:
            nbytes, data = self._pgconn.get_copy_data(1)
        except psycopg.Error as exc:
            raise source_error("reading the replication stream", exc) from exc
        if nbytes > 0:
            return data  # type: ignore[no-any-return]
        if nbytes == 0:
            return None
        raise self._stream_ended()

    def wait(self, timeout: float) -> None:
        """Block until the server sends something or ``timeout`` passes, then buffer it."""
        readable, _, _ = select.select([self._socket], [], [], timeout)
        if readable:
            try:
                self._pgconn.consume_input()
            except psycopg.Error as exc:
                raise source_error("reading the replication stream", exc) from exc

    def send(self, payload: bytes) -> None:
        """Send one CopyData message (a standby status update) and flush it."""
        pgconn = self._pgconn
        try:
            while pgconn.put_copy_data(payload) == 0:
                select.select([], [self._socket], [], 1.0)
            while pgconn.flush() == 1:
                select.select([], [self._socket], [], 1.0)
        except psycopg.Error as exc:
            raise source_error("sending a status update to PostgreSQL", exc) from exc

    def _stream_ended(self) -> SourceError:
        error = ""
        sqlstate = ""
        try:
            result = self._pgconn.get_result()
            if result is not None and result.error_message:
                error = result.error_message.decode(errors="replace").strip()
                sqlstate = (result.error_field(DiagnosticField.SQLSTATE) or b"").decode()
        except psycopg.Error as exc:
            return source_error(f"reading the replication stream of slot {self.slot!r}", exc)
        # A server shutting down or a connection lost heal by themselves; a slot that
        # was invalidated or whose WAL was removed (58P01, 55000) does not.
        retryable = not sqlstate or sqlstate.startswith(("08", "57", "53", "XX"))
        return SourceError(
            f"PostgreSQL ended the replication stream of slot {self.slot!r}:"
            f" {error or 'no reason'}",
            retryable=retryable,
        )

    # --- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        for conn in (self._repl, self._sql):
            if conn is not None:
                conn.close()
        self._repl = self._sql = None
        self._pgconn = None

    def _require_sql(self) -> psycopg.Connection[Any]:
        if self._sql is None:
            raise SourceError("not connected to PostgreSQL")
        return self._sql

    def _require_repl(self) -> psycopg.Connection[Any]:
        if self._repl is None:
            raise SourceError("not connected to PostgreSQL")
        return self._repl
