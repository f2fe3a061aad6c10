"""Edge: the PostgreSQL reads of ``cdc verify``, on the legacy database and on a replay target.

The one job: on top of :class:`~cdc.postgres.snapshot_reader.SnapshotReader`'s key-ordered
chunks (the same session options, so the same text forms; the same casting of keys back to
their columns' types), read in short read-only transactions that record the WAL position
they saw (:meth:`VerifyReader.short_transaction`), digest a key range on the server
(:meth:`VerifyReader.digest_range`: a row count and an md5 over the rows' text forms, so an
equal chunk crosses the network as a few bytes), read rows by key
(:meth:`VerifyReader.read_keys`), and read the positions verify waits for: a slot's
``confirmed_flush_lsn`` and a replay target's ``cdc_replay.offsets``.

It must not write (the session is ``default_transaction_read_only``), hold a transaction
open longer than one chunk, compare rows, or talk to Kafka.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Final

import psycopg
from psycopg import sql

from cdc.errors import SourceError
from cdc.lsn import parse_lsn
from cdc.postgres.catalog import TypeCatalog
from cdc.postgres.errors import source_error
from cdc.postgres.snapshot_reader import KeyValues, SnapshotReader, TableShape
from cdc.protocol.messages import Column

__all__ = ["REPLAY_OFFSETS_TABLE", "ChunkDigest", "VerifyReader", "project_shape"]

#: Where ``cdc replay`` records, per partition of each retention topic, the offset after
#: the last record it applied to the target (``next_offset``).
REPLAY_OFFSETS_TABLE: Final = "cdc_replay.offsets"

# The digest's per-row hash column; a name no table uses for a key column.
_ROW_HASH: Final = sql.Identifier("__cdc_verify_row_md5")

# SQLSTATEs of a missing table or schema (cdc_replay.offsets not created yet).
_UNDEFINED: Final = frozenset({"42P01", "3F000"})


@dataclass(frozen=True, slots=True)
class ChunkDigest:
    """What the server says about the rows of one key range, without sending them.

    ``digest`` is the md5 of the concatenated md5s of each row's text form
    (``ROW(col, ...)::text``, the columns in the shape's order) in key order, so two
    servers with equal rows give equal digests, and a server holds one 32-byte hash per
    row of the chunk, never the chunk's text. ``last_key`` is the text of the last row's
    key columns (``None`` for an empty range).
    """

    rows: int
    digest: str
    last_key: KeyValues | None


def project_shape(
    shape: TableShape, columns: Sequence[str], key_columns: Sequence[str] | None = None
) -> TableShape:
    """``shape`` reduced to ``columns`` (in that order) with ``key_columns`` as its key.

    Used to read two databases' versions of one table with the same select list, whatever
    each one's column order and extra columns.

    Raises:
        ValueError: a column or key column is not in ``shape``.
    """
    keys = tuple(shape.key_columns if key_columns is None else key_columns)
    index = {c.name: i for i, c in enumerate(shape.relation.columns)}
    missing = [c for c in columns if c not in index]
    if missing:
        raise ValueError(f"{shape.qualified} has no column {', '.join(missing)}")
    picked = [index[c] for c in columns]
    original = shape.relation.columns
    return TableShape(
        replace(
            shape.relation,
            columns=tuple(
                Column(
                    1 if original[i].name in keys else 0,
                    original[i].name,
                    original[i].type_oid,
                    original[i].type_modifier,
                )
                for i in picked
            ),
        ),
        keys,
        shape.estimated_rows,
        type_names=tuple(shape.type_names[i] for i in picked) if shape.type_names else (),
        not_null=tuple(shape.not_null[i] for i in picked) if shape.not_null else (),
    )


class VerifyReader(SnapshotReader):
    """One read-only connection for ``cdc verify`` (legacy database or replay target).

    In autocommit: each method is one short statement, unless it runs inside
    :meth:`short_transaction`, which lasts one chunk. Not thread-safe.
    """

    def __init__(self, dsn: str, *, application_name: str, role: str) -> None:
        """Connect read-only, with the daemon's session options.

        Args:
            role: which database this is, for error messages ("the legacy database
                (postgres.dsn)", "the target database (--target-dsn)").

        Raises:
            SourceError: the connection failed; the message names ``role``.
        """
        self.role = role
        try:
            super().__init__(dsn, application_name=application_name, read_only=True)
        except SourceError as exc:
            raise SourceError(f"{role}: {exc}", retryable=exc.retryable) from exc
        self._in_short = False

    # --- transactions -------------------------------------------------------------------

    @contextmanager
    def short_transaction(self, *, lsn: bool = True) -> Iterator[int]:
        """A ``REPEATABLE READ READ ONLY`` transaction for one chunk's statements; yields
        the WAL position of its snapshot (0 when ``lsn`` is false).

        The position is ``pg_current_wal_lsn()`` read by the transaction's first
        statement, after its snapshot was taken: every transaction the snapshot sees
        committed (synchronously) before it, so once a consumer of the slot has
        confirmed this position it has every change the chunk shows.

        Raises:
            SourceError: the server refused, or the transaction is nested.
        """
        conn = self._require()
        if self._in_short or self._in_snapshot:
            raise SourceError("a transaction is already open on this reader")
        position = 0
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            self._in_short = True
            if lsn:
                row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
                assert row is not None
                position = parse_lsn(str(row[0]))
            else:
                conn.execute("SELECT 1")  # take the snapshot now, as with the position
        except psycopg.Error as exc:
            self._end_short(commit=False)
            raise source_error(f"{self.role}: starting a read-only transaction", exc) from exc
        try:
            yield position
        except BaseException:
            self._end_short(commit=False)
            raise
        self._end_short(commit=True)

    def _end_short(self, *, commit: bool) -> None:
        if not self._in_short:
            return
        self._in_short = False
        conn = self._conn
        if conn is None or conn.closed:
            return
        try:
            conn.execute("COMMIT" if commit else "ROLLBACK")
        except psycopg.Error as exc:
            if commit:
                raise source_error(f"{self.role}: ending a read-only transaction", exc) from exc
            # A rollback after a failure: the caller reports the original error.

    # --- rows -----------------------------------------------------------------------------

    def digest_range(
        self,
        shape: TableShape,
        after_key: KeyValues | None,
        until_key: KeyValues | None = None,
        *,
        limit: int | None = None,
    ) -> ChunkDigest:
        """Count and digest the rows with ``after_key < key <= until_key`` (either side
        open when ``None``), at most ``limit`` of them in key order, on the server.

        Raises:
            SourceError: the table has no key, or the query failed.
        """
        self._check_keyed(shape)
        keys = _key_list(shape)
        newest_first = sql.SQL(", ").join(
            sql.SQL("{} DESC").format(sql.Identifier(k)) for k in shape.key_columns
        )
        key_texts = sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier(k)) for k in shape.key_columns
        )
        query = sql.SQL(
            "WITH chunk AS (SELECT {keys}, md5(ROW({columns})::text) AS {hash}"
            " FROM {table}{where} ORDER BY {keys}{limit})"
            " SELECT count(*)::int8, md5(coalesce(string_agg({hash}, '' ORDER BY {keys}), '')),"
            " (SELECT ARRAY[{key_texts}] FROM chunk ORDER BY {newest_first} LIMIT 1)"
            " FROM chunk"
        ).format(
            keys=keys,
            columns=_select_list(shape),
            hash=_ROW_HASH,
            table=_table(shape),
            where=self._range_condition(shape, after_key, until_key),
            limit=sql.SQL("") if limit is None else sql.SQL(" LIMIT {}").format(int(limit)),
            key_texts=key_texts,
            newest_first=newest_first,
        )
        try:
            row = self._require().execute(query).fetchone()
        except psycopg.Error as exc:
            raise source_error(
                f"{self.role}: digesting a chunk of table {shape.qualified}", exc
            ) from exc
        assert row is not None
        rows, digest, last = row
        return ChunkDigest(int(rows), str(digest), None if last is None else tuple(last))

    def read_range(
        self,
        shape: TableShape,
        after_key: KeyValues | None,
        until_key: KeyValues | None,
        *,
        page_rows: int,
    ) -> Iterator[list[KeyValues]]:
        """Every row with ``after_key < key <= until_key``, in pages of ``page_rows`` in key
        order (one statement each: :meth:`read_chunk`).

        Raises:
            SourceError: the table has no key, or a query failed.
        """
        after = after_key
        while True:
            rows = self.read_chunk(shape, after, page_rows, until_key)
            if rows:
                yield rows
            if len(rows) < page_rows:
                return
            after = self.key_of(shape, rows[-1])

    def read_keys(self, shape: TableShape, keys: Sequence[KeyValues]) -> list[KeyValues]:
        """The rows (present ones) whose key is one of ``keys`` (text forms), in one
        statement; keep ``keys`` to a chunk's size.

        Raises:
            SourceError: the table has no key, a key has the wrong number of values, or
                the query failed.
        """
        self._check_keyed(shape)
        if not keys:
            return []
        if len(shape.key_columns) == 1:
            condition = sql.SQL("{} IN ({})").format(
                sql.Identifier(shape.key_columns[0]),
                sql.SQL(", ").join(self._key_literal(shape, key) for key in keys),
            )
        else:
            condition = sql.SQL("({}) IN ({})").format(
                _key_list(shape),
                sql.SQL(", ").join(
                    sql.SQL("({})").format(self._key_literal(shape, key)) for key in keys
                ),
            )
        query = sql.SQL("SELECT {} FROM {} WHERE {}").format(
            _select_list(shape), _table(shape), condition
        )
        rows: list[KeyValues] = []
        for batch in self._copy(
            shape, query, len(keys), f"{self.role}: reading rows of table {shape.qualified} by key"
        ):
            rows.extend(batch)
        return rows

    # --- catalog and positions ------------------------------------------------------------

    def table_shape(self, schema: str, table: str) -> TableShape:
        """As :meth:`SnapshotReader.table_shape`, the error naming this reader's role."""
        try:
            return super().table_shape(schema, table)
        except SourceError as exc:
            raise SourceError(f"{self.role}: {exc}", retryable=exc.retryable) from exc

    def has_table(self, schema: str, table: str) -> bool:
        """Whether ``schema.table`` exists as a table here.

        Raises:
            SourceError: the query failed.
        """
        try:
            row = (
                self._require()
                .execute(
                    "SELECT EXISTS (SELECT FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p'))",
                    (schema, table),
                )
                .fetchone()
            )
        except psycopg.Error as exc:
            raise source_error(f"{self.role}: looking up table {schema}.{table}", exc) from exc
        assert row is not None
        return bool(row[0])

    def database_name(self) -> str:
        """``current_database()``: the ``{database}`` of topic name templates."""
        try:
            row = self._require().execute("SELECT current_database()::text").fetchone()
        except psycopg.Error as exc:
            raise source_error(f"{self.role}: reading the database name", exc) from exc
        assert row is not None
        return str(row[0])

    def publication_tables(self, publication: str) -> list[str]:
        """``schema.table`` of every table in ``publication``, sorted; empty when the
        publication does not exist.

        Raises:
            SourceError: the query failed.
        """
        try:
            rows = (
                self._require()
                .execute(
                    "SELECT schemaname::text || '.' || tablename::text"
                    " FROM pg_publication_tables WHERE pubname = %s ORDER BY 1",
                    (publication,),
                )
                .fetchall()
            )
        except psycopg.Error as exc:
            raise source_error(
                f"{self.role}: reading the tables of publication {publication!r}", exc
            ) from exc
        return [str(r[0]) for r in rows]

    def slot_confirmed_lsn(self, slot: str) -> int | None:
        """The slot's ``confirmed_flush_lsn``: how far its consumer (the daemon) confirmed
        that Kafka holds every change; ``None`` when the slot does not exist.

        Raises:
            SourceError: the query failed.
        """
        try:
            row = (
                self._require()
                .execute(
                    "SELECT confirmed_flush_lsn::text FROM pg_replication_slots"
                    " WHERE slot_name = %s",
                    (slot,),
                )
                .fetchone()
            )
        except psycopg.Error as exc:
            raise source_error(f"{self.role}: reading replication slot {slot!r}", exc) from exc
        if row is None or row[0] is None:
            return None
        return parse_lsn(str(row[0]))

    def replay_offsets(self, connector: str, topic: str) -> dict[int, int]:
        """``next_offset`` per partition of ``topic`` in :data:`REPLAY_OFFSETS_TABLE`: how
        far ``cdc replay`` applied that retention topic to this (target) database.

        Raises:
            SourceError: the table does not exist (no replay wrote here), or the query
                failed.
        """
        try:
            rows = (
                self._require()
                .execute(
                    "SELECT partition, next_offset FROM cdc_replay.offsets"
                    " WHERE connector = %s AND topic = %s",
                    (connector, topic),
                )
                .fetchall()
            )
        except psycopg.Error as exc:
            if exc.sqlstate in _UNDEFINED:
                raise SourceError(
                    f"{self.role} has no table {REPLAY_OFFSETS_TABLE}, so verify cannot tell"
                    " how far it is replayed: point --target-dsn at a database that"
                    " cdc replay writes to",
                    retryable=False,
                ) from exc
            raise source_error(f"{self.role}: reading {REPLAY_OFFSETS_TABLE}", exc) from exc
        return {int(partition): int(offset) for partition, offset in rows}

    def type_catalog(self) -> TypeCatalog:
        """The type catalog over this connection, for the value converters (autocommit
        lookups; call it outside :meth:`short_transaction`)."""
        return TypeCatalog(self._require())

    # --- internals ------------------------------------------------------------------------

    def _range_condition(
        self, shape: TableShape, after_key: KeyValues | None, until_key: KeyValues | None
    ) -> sql.Composable:
        keys = _key_list(shape)
        conditions = []
        if after_key is not None:
            conditions.append(
                sql.SQL("({}) > ({})").format(keys, self._key_literal(shape, after_key))
            )
        if until_key is not None:
            conditions.append(
                sql.SQL("({}) <= ({})").format(keys, self._key_literal(shape, until_key))
            )
        if not conditions:
            return sql.SQL("")
        return sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(conditions))

    @staticmethod
    def _check_keyed(shape: TableShape) -> None:
        if not shape.key_columns:
            raise SourceError(
                f"table {shape.qualified} has no primary key or replica identity index:"
                " it cannot be compared in key order"
            )


def _key_list(shape: TableShape) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(k) for k in shape.key_columns)


def _select_list(shape: TableShape) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(c.name) for c in shape.relation.columns)


def _table(shape: TableShape) -> sql.Composable:
    return sql.Identifier(shape.relation.namespace, shape.relation.name)
