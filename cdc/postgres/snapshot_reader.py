"""Edge: read table rows from PostgreSQL for snapshots, as the text forms pgoutput sends.

The one job: on one ordinary (not replication) connection, describe a table as pgoutput
would (:class:`TableShape`), import an exported snapshot, and stream rows out with
``COPY ... TO STDOUT`` -- a whole table, an integer key range of it, or one key-ordered
chunk -- plus the logical messages that serve as watermarks of incremental snapshots.

Rows are tuples of ``str`` (the type's output function text, exactly what pgoutput puts in
a tuple of kind ``t``, because this connection runs with :data:`cdc.postgres.source.SESSION_OPTIONS`
as the walsender does) or ``None`` for NULL, so ``RowConverter`` and ``TableEncoder``
treat them like streamed tuples.

It must not: talk to Kafka, decide which tables to snapshot or when, log rows, or hold
more than one batch (or one chunk) of rows in memory.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

import psycopg
from psycopg import sql

from cdc.errors import SourceError
from cdc.masking import TableControls
from cdc.postgres.errors import source_error
from cdc.postgres.source import EVENT_KEY_COLUMNS_SQL, SESSION_OPTIONS
from cdc.protocol.messages import Column, Relation, ReplicaIdentity

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "KeyRange",
    "SnapshotReader",
    "TableShape",
]

KeyRange: TypeAlias = tuple[int | None, int | None]  # (lower exclusive, upper inclusive)
KeyValues: TypeAlias = tuple[str | None, ...]

# Rows per list yielded by copy_rows: big enough that per-batch costs vanish, small enough
# that a batch of wide rows stays a few MiB.
DEFAULT_BATCH_ROWS: Final = 10_000

# Key types split_ranges can cut into ranges (pg_type OIDs of int8, int2, int4).
_INTEGER_KEY_TYPES: Final = frozenset({20, 21, 23})

# Exported snapshot names are hex words joined by dashes ("00000003-0000001B-1"). SET
# TRANSACTION SNAPSHOT takes no bind parameters, so the name is checked before it is
# quoted into the statement.
_SNAPSHOT_NAME: Final = re.compile(r"[0-9A-Fa-f]+(?:-[0-9A-Fa-f]+)+")

_PG12: Final = 120000  # pg_attribute.attgenerated appeared in PostgreSQL 12


@dataclass(frozen=True, slots=True)
class TableShape:
    """A table as pgoutput would describe it, read from the catalog before any change.

    ``relation`` has the table's OID, its replica identity and its columns in attnum
    order without dropped and generated columns (pgoutput publishes neither); a column's
    ``flags`` is 1 when it is one of ``key_columns``. ``key_columns`` follows the rule of
    ``cdc.postgres.source.published_tables``: the replica-identity index under ``USING INDEX``,
    else the primary key, else ``()``. (pgoutput's own Relation flags every column under
    ``REPLICA IDENTITY FULL`` and none under ``NOTHING``; consumers here pass
    ``key_columns`` explicitly, and a snapshot row has no old tuple, so only the key
    matters.)
    """

    relation: Relation
    key_columns: tuple[str, ...]
    estimated_rows: int  # pg_class.reltuples; 0 when the table was never analyzed
    # format_type() and attnotnull of each column, for the table's schema-change event.
    type_names: tuple[str, ...] = ()
    not_null: tuple[bool, ...] = ()
    # The table's row filter (table_options.<table>.where): SQL only PostgreSQL evaluates,
    # the same expression the publication filters the stream with.
    row_filter: str | None = None
    # Positions of key_columns in relation.columns, for key_of on the hot path.
    key_indexes: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.relation.columns]
        missing = [k for k in self.key_columns if k not in names]
        if missing:
            raise ValueError(f"key columns {missing} are not columns of {self.qualified}: {names}")
        object.__setattr__(self, "key_indexes", tuple(names.index(k) for k in self.key_columns))

    @property
    def qualified(self) -> str:
        return f"{self.relation.namespace}.{self.relation.name}"


class SnapshotReader:
    """One PostgreSQL connection for snapshot reads (not a replication connection).

    The connection is in autocommit: a statement outside :meth:`begin_snapshot` is its
    own short transaction, so chunk reads and watermarks never hold a snapshot open.
    Not thread-safe: one reader per worker thread.
    """

    def __init__(
        self,
        dsn: str,
        *,
        application_name: str,
        read_only: bool = False,
        controls: Mapping[str, TableControls] | None = None,
    ) -> None:
        """Connect with the daemon's session options, on which the text forms depend.

        ``controls`` (``"schema.table"`` -> column list and row filter) make
        :meth:`table_shape` leave out the columns the stream does not publish and every
        read apply the row filter, so a snapshot holds exactly what the stream would.

        ``read_only`` makes every transaction of the session read-only
        (``default_transaction_read_only``): readers that only compare, such as
        ``cdc verify``, cannot write by mistake, watermarks included.

        Raises:
            SourceError: the connection failed.
        """
        try:
            self._conn: psycopg.Connection[Any] | None = psycopg.connect(
                dsn,
                autocommit=True,
                application_name=application_name,
                options=SESSION_OPTIONS,
                # Row values are decoded as UTF-8 (the only server encoding cdc reads);
                # a PGCLIENTENCODING in the environment must not change that.
                client_encoding="UTF8",
            )
        except psycopg.Error as exc:
            raise source_error("connecting to PostgreSQL for snapshot reads", exc) from exc
        if read_only:
            # Set once connected, not as a startup option: PostgreSQL 14+ reports a startup
            # default_transaction_read_only to libpq, and target_session_attrs=read-write
            # (a DSN with several hosts) would then refuse every host.
            try:
                self._conn.execute("SET default_transaction_read_only = on")
            except psycopg.Error as exc:
                self._conn.close()
                raise source_error("making the snapshot-read session read-only", exc) from exc
        self._server_version = self._conn.info.server_version
        self._in_snapshot = False
        self._controls: Mapping[str, TableControls] = controls or {}
        # format_type(atttypid, atttypmod) per column type, for casting chunk keys back.
        self._type_names: dict[tuple[int, int], str] = {}

    # --- catalog ----------------------------------------------------------------------

    def table_shape(self, schema: str, table: str) -> TableShape:
        """Describe ``schema.table`` as a pgoutput Relation message would.

        Raises:
            SourceError: the table does not exist (or is not a table), or the query failed.
        """
        conn = self._require()
        generated = "AND a.attgenerated = ''" if self._server_version >= _PG12 else ""
        try:
            head = conn.execute(
                sql.SQL(
                    """
                SELECT c.oid::int8, c.relreplident, c.reltuples::float8, {key_columns}
                FROM pg_class c
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
                """
                ).format(key_columns=EVENT_KEY_COLUMNS_SQL),
                (schema, table),
            ).fetchone()
            if head is None:
                raise SourceError(
                    f"table {schema}.{table} does not exist (or is not a table): check the"
                    " table list of the snapshot"
                )
            oid, replident, reltuples, keys = head
            columns = conn.execute(
                sql.SQL(
                    """
                    SELECT a.attname::text, a.atttypid::int8, a.atttypmod,
                           format_type(a.atttypid, a.atttypmod), a.attnotnull
                    FROM pg_attribute a
                    WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped {}
                    ORDER BY a.attnum
                    """
                ).format(sql.SQL(generated)),
                (oid,),
            ).fetchall()
        except psycopg.Error as exc:
            raise source_error(f"reading the columns of table {schema}.{table}", exc) from exc
        key_columns = tuple(keys)
        control = self._controls.get(f"{schema}.{table}")
        if control is not None:
            # The key columns are always kept (TableControls.check refused otherwise).
            columns = [c for c in columns if control.keeps(c[0]) or c[0] in key_columns]
        for _, type_oid, typmod, type_text, _ in columns:
            self._type_names[(type_oid, typmod)] = type_text
        relation = Relation(
            xid=None,
            oid=oid,
            namespace=schema,
            name=table,
            replica_identity=ReplicaIdentity(replident),
            columns=tuple(
                Column(1 if name in key_columns else 0, name, type_oid, typmod)
                for name, type_oid, typmod, _, _ in columns
            ),
        )
        # reltuples is -1 (PostgreSQL 14+) or 0 for a table never vacuumed or analyzed.
        return TableShape(
            relation,
            key_columns,
            max(0, int(reltuples)),
            type_names=tuple(c[3] for c in columns),
            not_null=tuple(bool(c[4]) for c in columns),
            row_filter=None if control is None else control.row_filter,
        )

    # --- exported snapshot --------------------------------------------------------------

    def begin_snapshot(self, snapshot_name: str) -> None:
        """Open a repeatable-read, read-only transaction seeing the exported snapshot.

        The slot's replication connection must still be idle after CREATE_REPLICATION_SLOT
        (docs: "Exporting Snapshots"), or PostgreSQL refuses the name.

        Raises:
            SourceError: the name is malformed, a snapshot is already open here, or the
                server refused the snapshot (no longer exported).
        """
        conn = self._require()
        if not _SNAPSHOT_NAME.fullmatch(snapshot_name):
            raise SourceError(f"{snapshot_name!r} is not an exported snapshot name")
        if self._in_snapshot:
            raise SourceError("a snapshot transaction is already open on this reader")
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            self._in_snapshot = True
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
        except psycopg.Error as exc:
            self._rollback()
            raise source_error(
                f"importing snapshot {snapshot_name} (the connection that created the slot"
                " must stay idle until every worker imported it)",
                exc,
            ) from exc

    def end_snapshot(self) -> None:
        """Close the snapshot transaction (COMMIT; a failed one is rolled back)."""
        conn = self._require()
        if not self._in_snapshot:
            return
        self._in_snapshot = False
        try:
            conn.execute("COMMIT")
        except psycopg.Error as exc:
            raise source_error("ending the snapshot transaction", exc) from exc

    # --- rows ----------------------------------------------------------------------------

    def copy_rows(
        self,
        shape: TableShape,
        *,
        key_range: KeyRange | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        ordered: bool = False,
    ) -> Generator[list[KeyValues], None, None]:
        """Stream the rows of a table (or of an integer key range of it) in batches.

        Inside :meth:`begin_snapshot` the rows are those of the snapshot; otherwise the
        COPY is its own transaction. Closing the iterator early cancels the COPY, which
        also aborts an open snapshot transaction.

        Args:
            shape: the table, from :meth:`table_shape`.
            key_range: ``(lower exclusive, upper inclusive)`` of the single integer key
                column, ``None`` for an unbounded side; from :meth:`split_ranges`.
            batch_rows: rows per yielded list.
            ordered: in key order (so that how far the read got is a key: an
                interrupted snapshot resumes after it); the table must have a key.

        Raises:
            SourceError: the COPY failed.
            ValueError: ``key_range`` given for a table without a single integer key, or
                ``ordered`` for a table without a key.
        """
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be positive, not {batch_rows}")
        query = sql.SQL("SELECT {} FROM {}").format(_select_list(shape), _table(shape))
        bounds = _row_filter(shape)
        if key_range is not None:
            key = _integer_key(shape)
            if key is None:
                raise ValueError(
                    f"table {shape.qualified} has no single integer key to read a range of"
                )
            lower, upper = key_range
            if lower is not None:
                bounds.append(sql.SQL("{} > {}").format(key, sql.Literal(int(lower))))
            if upper is not None:
                bounds.append(sql.SQL("{} <= {}").format(key, sql.Literal(int(upper))))
        if bounds:
            query = sql.SQL("{} WHERE {}").format(query, sql.SQL(" AND ").join(bounds))
        if ordered:
            if not shape.key_columns:
                raise ValueError(f"table {shape.qualified} has no key to read in order of")
            keys = sql.SQL(", ").join(sql.Identifier(k) for k in shape.key_columns)
            query = sql.SQL("{} ORDER BY {}").format(query, keys)
        yield from self._copy(shape, query, batch_rows, f"reading table {shape.qualified}")

    def split_ranges(self, shape: TableShape, parts: int) -> list[KeyRange | None]:
        """Cut a table with a single integer key into ``parts`` contiguous key ranges.

        The ranges cover every key: the first has no lower bound and the last no upper
        bound, so rows outside the min/max seen here are still read. Uses the current
        transaction (the snapshot, inside :meth:`begin_snapshot`). Returns ``[None]``
        (the whole table) for other keys, an empty table or ``parts`` below 2.

        Raises:
            SourceError: the min/max query failed.
        """
        key = _integer_key(shape)
        if key is None or parts < 2:
            return [None]
        conn = self._require()
        try:
            row = conn.execute(
                sql.SQL("SELECT min({0}), max({0}) FROM {1}").format(key, _table(shape))
            ).fetchone()
        except psycopg.Error as exc:
            raise source_error(f"reading the key range of table {shape.qualified}", exc) from exc
        assert row is not None
        low, high = row
        if low is None:
            return [None]
        parts = min(parts, high - low + 1)
        if parts < 2:
            return [None]
        # Boundaries low-1+step, low-1+2*step, ...: each range holds about `step` keys.
        step = -(-(high - low + 1) // parts)
        cuts = [low - 1 + step * i for i in range(1, parts)]
        cuts = [c for c in cuts if c < high]
        bounds: list[int | None] = [None, *cuts, None]
        return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]

    def read_chunk(
        self,
        shape: TableShape,
        after_key: KeyValues | None,
        limit: int,
        until_key: KeyValues | None = None,
    ) -> list[KeyValues]:
        """Read the next ``limit`` rows in key order after ``after_key``, in autocommit.

        ``after_key`` is :meth:`key_of` the last row of the previous chunk (text forms,
        cast back with each column's declared type); ``None`` starts at the beginning.
        ``until_key`` (inclusive) ends the range early (None: the end of the table).
        One short statement: no transaction outlives the chunk.

        Raises:
            SourceError: the table has no key, a snapshot transaction is open here, or
                the query failed.
        """
        if not shape.key_columns:
            raise SourceError(
                f"table {shape.qualified} has no primary key or replica identity index:"
                " it cannot be read in key-ordered chunks"
            )
        if limit < 1:
            raise ValueError(f"limit must be positive, not {limit}")
        if self._in_snapshot:
            raise SourceError("read_chunk runs in autocommit: end the snapshot transaction first")
        keys = sql.SQL(", ").join(sql.Identifier(k) for k in shape.key_columns)
        query = sql.SQL("SELECT {} FROM {}").format(_select_list(shape), _table(shape))
        conditions = _row_filter(shape)
        if after_key is not None:
            conditions.append(
                sql.SQL("({}) > ({})").format(keys, self._key_literal(shape, after_key))
            )
        if until_key is not None:
            conditions.append(
                sql.SQL("({}) <= ({})").format(keys, self._key_literal(shape, until_key))
            )
        if conditions:
            query = sql.SQL("{} WHERE {}").format(query, sql.SQL(" AND ").join(conditions))
        query = sql.SQL("{} ORDER BY {} LIMIT {}").format(query, keys, sql.Literal(int(limit)))
        rows: list[KeyValues] = []
        for batch in self._copy(shape, query, limit, f"reading a chunk of table {shape.qualified}"):
            rows.extend(batch)
        return rows

    def _key_literal(self, shape: TableShape, key: KeyValues) -> sql.Composable:
        """A key's text values cast back with each column's declared type."""
        if len(key) != len(shape.key_columns):
            raise ValueError(
                f"a key of {len(key)} values; the key of {shape.qualified}"
                f" has {len(shape.key_columns)} columns"
            )
        columns = shape.relation.columns
        return sql.SQL(", ").join(
            sql.SQL("{}::{}").format(
                sql.Literal(value), sql.SQL(self._type_name(columns[index], shape))
            )
            for value, index in zip(key, shape.key_indexes, strict=True)
        )

    @staticmethod
    def key_of(shape: TableShape, row: KeyValues) -> KeyValues:
        """The key columns' text values of one row, in key order."""
        return tuple([row[i] for i in shape.key_indexes])

    # --- watermarks ---------------------------------------------------------------------

    def emit_watermark(self, prefix: str, content: str) -> str:
        """Write a transactional logical message in its own transaction; return its LSN.

        Raises:
            SourceError: a snapshot transaction is open here, or the server refused.
        """
        conn = self._require()
        if self._in_snapshot:
            raise SourceError("watermarks run in autocommit: end the snapshot transaction first")
        try:
            row = conn.execute(
                "SELECT pg_logical_emit_message(true, %s, %s)::text", (prefix, content)
            ).fetchone()
        except psycopg.Error as exc:
            raise source_error(f"emitting logical message {prefix!r}", exc) from exc
        assert row is not None
        return str(row[0])

    def emit_signal_row(self, signal_table: str, signal_type: str, data: str) -> None:
        """Write a watermark as a row of the signal table, for servers whose pgoutput
        does not carry logical messages (PostgreSQL < 14).

        The row is inserted and deleted in one transaction: the stream still carries the
        insert, and the table does not grow by two rows per chunk.
        """
        conn = self._require()
        if self._in_snapshot:
            raise SourceError("watermarks run in autocommit: end the snapshot transaction first")
        schema, _, table = signal_table.partition(".")
        target = sql.Identifier(schema, table)
        row_id = uuid.uuid4().hex
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("INSERT INTO {} (id, type, data) VALUES (%s, %s, %s)").format(target),
                    (row_id, signal_type, data),
                )
                conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(target), (row_id,))
        except psycopg.Error as exc:
            raise source_error(f"writing a watermark row into {signal_table}", exc) from exc

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._in_snapshot = False

    # --- internals ------------------------------------------------------------------------

    def _copy(
        self, shape: TableShape, query: sql.Composable, batch_rows: int, action: str
    ) -> Generator[list[KeyValues], None, None]:
        conn = self._require()
        statement = sql.SQL("COPY ({}) TO STDOUT").format(query)
        ncols = len(shape.relation.columns)
        try:
            with conn.cursor().copy(statement) as copy:
                # psycopg's C parser unescapes the COPY text format (\N, \t, \\, ...);
                # loading every column as text keeps the server's output form unchanged.
                copy.set_types(["text"] * ncols)
                batch: list[KeyValues] = []
                append = batch.append
                for row in copy.rows():
                    append(row)
                    if len(batch) >= batch_rows:
                        yield batch
                        batch = []
                        append = batch.append
                if batch:
                    yield batch
        except psycopg.Error as exc:
            raise source_error(action, exc) from exc

    def _type_name(self, column: Column, shape: TableShape) -> str:
        cache_key = (column.type_oid, column.type_modifier)
        name = self._type_names.get(cache_key)
        if name is None:
            try:
                row = (
                    self._require()
                    .execute("SELECT format_type(%s, %s)", (column.type_oid, column.type_modifier))
                    .fetchone()
                )
            except psycopg.Error as exc:
                raise source_error(
                    f"reading the key types of table {shape.qualified}", exc
                ) from exc
            assert row is not None
            name = self._type_names[cache_key] = str(row[0])
        return name

    def _rollback(self) -> None:
        self._in_snapshot = False
        if self._conn is not None and not self._conn.closed:
            # A broken connection cannot roll back; the caller reports the original error.
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("ROLLBACK")

    def _require(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise SourceError("the snapshot reader is closed")
        return self._conn


def _select_list(shape: TableShape) -> sql.Composable:
    columns = shape.relation.columns
    if not columns:
        return sql.SQL("")
    return sql.SQL(", ").join(sql.Identifier(c.name) for c in columns)


def _row_filter(shape: TableShape) -> list[sql.Composable]:
    """The table's row filter as the first condition of a read (SQL from the connector
    file, as the publication's WHERE is: trusted configuration, not user input)."""
    if shape.row_filter is None:
        return []
    return [sql.SQL("({})").format(sql.SQL(shape.row_filter))]


def _table(shape: TableShape) -> sql.Composable:
    return sql.Identifier(shape.relation.namespace, shape.relation.name)


def _integer_key(shape: TableShape) -> sql.Composable | None:
    """The single integer key column, or None when the key is anything else."""
    if len(shape.key_indexes) != 1:
        return None
    column = shape.relation.columns[shape.key_indexes[0]]
    if column.type_oid not in _INTEGER_KEY_TYPES:
        return None
    return sql.Identifier(column.name)
