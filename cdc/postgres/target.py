"""Edge: the replay's target database (a new service's PostgreSQL), written set by set.

The one job: run what the replay decided on the target, inside one transaction per
batch: DDL (``cdc.replay.ddl``), the folded rows of each table (``cdc.replay.batch``:
``COPY`` into a temporary staging table, then one ``DELETE ... USING``, one
``INSERT ... ON CONFLICT DO UPDATE`` and, for rows whose unchanged TOAST values must be
kept, one ``UPDATE ... FROM`` per table), and the replay's own state (Kafka offsets,
shapes, progress) in the ``cdc_replay`` schema. Rows and the offsets they came from are
committed together, so a crash at any moment repeats nothing and loses nothing.

Sessions use the daemon's settings (``DateStyle=ISO``, ``TimeZone=UTC``,
``IntervalStyle=postgres``, ``bytea_output=hex``, ``extra_float_digits=3``) so values
are read exactly as the legacy server printed them. It must not decide anything.
"""

from __future__ import annotations

# ruff: noqa: S608 - statements are built from identifiers quoted by cdc.replay.ddl.ident
# and from type names the log's schema events carry (format_type output); values always
# travel as parameters or COPY data.
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

import orjson
import psycopg

from cdc.postgres.errors import target_error
from cdc.replay.batch import ApplyError, TableWrites, copy_value
from cdc.replay.ddl import Target, ident

__all__ = ["STATE_SCHEMA", "ReplayState", "TargetDatabase"]

STATE_SCHEMA: Final = "cdc_replay"

_SESSION: Final = (
    "SET DateStyle = ISO; SET TimeZone = 'UTC'; SET IntervalStyle = postgres;"
    " SET bytea_output = hex; SET extra_float_digits = 3;"
    # A batch's rows and the offsets they came from commit in one transaction, so a
    # commit the target server loses in a crash loses both together: the replay reads
    # those changes again. Waiting for each commit's WAL flush buys nothing here.
    " SET synchronous_commit = off"
)

_STATE_DDL: Final = (
    f"CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.offsets (
        connector text NOT NULL, topic text NOT NULL, partition int NOT NULL,
        next_offset bigint NOT NULL, PRIMARY KEY (connector, topic, partition))""",
    f"""CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.tables (
        connector text NOT NULL, source_schema text NOT NULL, source_table text NOT NULL,
        target_schema text NOT NULL, target_table text NOT NULL, version int NOT NULL,
        shape jsonb NOT NULL, PRIMARY KEY (connector, source_schema, source_table))""",
    f"""CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.progress (
        connector text PRIMARY KEY, lsn bigint NOT NULL, seq bigint NOT NULL,
        commit_ts_us bigint, changes bigint NOT NULL, updated_at timestamptz NOT NULL)""",
)


class ReplayState:
    """What the target holds of a connector's replay: where each partition continues,
    the shape each table has there, and how far the stream was applied."""

    def __init__(
        self,
        offsets: dict[tuple[str, int], int],
        tables: dict[tuple[str, str], tuple[Target, bytes]],
        position: tuple[int, int] | None,
        changes: int,
        commit_ts_us: int | None = None,
    ) -> None:
        self.offsets = offsets
        self.tables = tables  # (schema, table) -> (where it lives, its schema event)
        self.position = position
        self.changes = changes
        self.commit_ts_us = commit_ts_us  # of the last applied change


class TargetDatabase:
    """One connection to the target; a batch is ``with db.transaction(): ...``."""

    def __init__(self, dsn: str, *, connector: str) -> None:
        self._connector = connector
        self._stage = 0
        try:
            self._conn: psycopg.Connection[Any] = psycopg.connect(
                dsn, autocommit=True, application_name=f"cdc-replay-{connector}"
            )
            self._conn.execute(_SESSION)
        except psycopg.Error as exc:
            raise target_error("connecting to the target database", exc) from exc

    def close(self) -> None:
        self._conn.close()

    def ensure_state(self) -> None:
        """Create the ``cdc_replay`` tables if missing (concurrent replays may race)."""
        try:
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(hashtext('cdc_replay'))")
                for statement in _STATE_DDL:
                    self._conn.execute(statement)
        except psycopg.Error as exc:
            raise target_error("creating the cdc_replay state tables", exc) from exc

    def lock(self) -> bool:
        """Hold the connector's replay lock for this session: one replay per connector
        and target at a time (a second would apply every change twice)."""
        try:
            row = self._conn.execute(
                "SELECT pg_try_advisory_lock(hashtext('cdc_replay'), hashtext(%s))",
                (self._connector,),
            ).fetchone()
        except psycopg.Error as exc:
            raise target_error("taking the replay lock", exc) from exc
        return bool(row and row[0])

    def load_state(self) -> ReplayState:
        c = self._connector
        try:
            offsets = {
                (topic, partition): offset
                for topic, partition, offset in self._conn.execute(
                    f"SELECT topic, partition, next_offset FROM {STATE_SCHEMA}.offsets"
                    " WHERE connector = %s",
                    (c,),
                )
            }
            tables = {
                (s, t): (Target(ts, tt), orjson.dumps(shape))
                for s, t, ts, tt, shape in self._conn.execute(
                    "SELECT source_schema, source_table, target_schema, target_table, shape"
                    f" FROM {STATE_SCHEMA}.tables WHERE connector = %s",
                    (c,),
                )
            }
            row = self._conn.execute(
                f"SELECT lsn, seq, changes, commit_ts_us FROM {STATE_SCHEMA}.progress"
                " WHERE connector = %s",
                (c,),
            ).fetchone()
        except psycopg.Error as exc:
            raise target_error("reading the replay state", exc) from exc
        if row is None:
            return ReplayState(offsets, tables, None, 0)
        ts = None if row[3] is None else int(row[3])
        return ReplayState(offsets, tables, (int(row[0]), int(row[1])), int(row[2]), ts)

    def reset(self, targets: Iterable[Target]) -> None:
        """Forget the connector's replay and drop its tables (``--rebuild``)."""
        try:
            with self._conn.transaction():
                for target in targets:
                    self._conn.execute(f"DROP TABLE IF EXISTS {target.sql}")
                for table in ("offsets", "tables", "progress"):
                    self._conn.execute(
                        f"DELETE FROM {STATE_SCHEMA}.{table} WHERE connector = %s",
                        (self._connector,),
                    )
        except psycopg.Error as exc:
            raise target_error("dropping the replayed tables", exc) from exc

    def run_outside(self, statements: Sequence[str], *, what: str) -> None:
        """Statements that must be committed before data uses them (new enum labels,
        types, extensions); each is idempotent."""
        try:
            for statement in statements:
                self._conn.execute(statement)
        except psycopg.Error as exc:
            raise target_error(f"{what} ({statement})", exc) from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One batch: everything inside commits together, or nothing does."""
        try:
            with self._conn.transaction():
                yield
        except psycopg.Error as exc:
            raise target_error("committing a replay batch", exc) from exc

    def execute(self, statements: Sequence[str], *, what: str) -> None:
        try:
            for statement in statements:
                self._conn.execute(statement)
        except psycopg.Error as exc:
            raise target_error(f"{what}: {statement}", exc, retry=False) from exc

    def truncate(self, target: Target) -> None:
        try:
            self._conn.execute(f"TRUNCATE {target.sql}")
        except psycopg.Error as exc:
            raise target_error(f"truncating {target.sql}", exc) from exc

    def write(
        self,
        target: Target,
        columns: Sequence[str],
        key_columns: Sequence[str],
        writes: TableWrites,
    ) -> None:
        """Apply one table's folded rows (inside ``transaction()``).

        Raises:
            ApplyError: a row whose unchanged TOAST values must be kept is not in the target.
            TargetError: PostgreSQL refused a value or a statement.
        """
        cols = ", ".join(ident(c) for c in columns)
        keys = ", ".join(ident(k) for k in key_columns)
        match = " AND ".join(f"t.{ident(k)} = s.{ident(k)}" for k in key_columns)
        try:
            if writes.deletes:
                stage = self._new_stage()
                self._conn.execute(
                    f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {keys}"
                    f" FROM {target.sql} WITH NO DATA"
                )
                self._copy(stage, key_columns, writes.deletes)
                self._conn.execute(f"DELETE FROM {target.sql} t USING {stage} s WHERE {match}")
            if writes.upserts:
                stage = self._new_stage()
                self._conn.execute(
                    f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {cols}"
                    f" FROM {target.sql} WITH NO DATA"
                )
                self._copy_lines(stage, columns, writes.upserts)
                others = [c for c in columns if c not in key_columns]
                action = (
                    "DO UPDATE SET "
                    + ", ".join(f"{ident(c)} = EXCLUDED.{ident(c)}" for c in others)
                    if others
                    else "DO NOTHING"
                )
                self._conn.execute(
                    f"INSERT INTO {target.sql} ({cols}) SELECT {cols} FROM {stage}"
                    f" ON CONFLICT ({keys}) {action}"
                )
            for kept, rows in writes.partial.items():
                stage = self._new_stage()
                kept_sql = ", ".join(ident(c) for c in kept)
                self._conn.execute(
                    f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {kept_sql}"
                    f" FROM {target.sql} WITH NO DATA"
                )
                self._copy(stage, kept, rows)
                sets = ", ".join(f"{ident(c)} = s.{ident(c)}" for c in kept if c not in key_columns)
                cursor = self._conn.execute(
                    f"UPDATE {target.sql} t SET {sets} FROM {stage} s WHERE {match}"
                    if sets
                    else f"SELECT 1 FROM {target.sql} t JOIN {stage} s ON {match}"
                )
                if cursor.rowcount != len(rows):
                    missing = self._conn.execute(
                        f"SELECT {', '.join(f's.{ident(k)}::text' for k in key_columns)}"
                        f" FROM {stage} s WHERE NOT EXISTS (SELECT 1 FROM {target.sql} t"
                        f" WHERE {match}) LIMIT 1"
                    ).fetchone()
                    raise ApplyError(
                        f"table {target.sql}: the row with key {missing} kept unchanged TOAST"
                        " values, but the target has no earlier version of it to keep them"
                        " from (it was written before the connector started and never"
                        " snapshotted). Snapshot the table (`cdc snapshot CONNECTOR --table"
                        " ...`) or use toast.mode: fill, then rebuild the target",
                        table=target.sql,
                        lsn=0,
                    )
            if writes.keyless:
                self._keyless(target, columns, writes)
        except psycopg.Error as exc:
            raise target_error(f"writing {len(writes)} rows into {target.sql}", exc) from exc

    def _keyless(self, target: Target, columns: Sequence[str], writes: TableWrites) -> None:
        types = dict(
            self._conn.execute(
                "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (target.sql,),
            ).fetchall()
        )
        equal = " AND ".join(
            f"{ident(c)}::text IS NOT DISTINCT FROM (%s::{types[c]})::text" for c in columns
        )
        inserts: list[tuple[str | None, ...]] = []
        for op in writes.keyless:
            if op.insert:
                inserts.append(op.row)
                continue
            if inserts:
                self._copy(target.sql, columns, inserts)
                inserts = []
            self._conn.execute(
                f"DELETE FROM {target.sql} WHERE ctid = (SELECT ctid FROM {target.sql}"
                f" WHERE {equal} LIMIT 1)",
                op.row,
            )
        if inserts:
            self._copy(target.sql, columns, inserts)

    def save(
        self,
        offsets: Mapping[tuple[str, int], int],
        position: tuple[int, int] | None,
        commit_ts_us: int | None,
        changes: int,
    ) -> None:
        """Store where each partition continues and how far the stream was applied
        (inside ``transaction()``, with the rows)."""
        try:
            if offsets:
                with self._conn.cursor() as cursor:
                    cursor.executemany(
                        f"INSERT INTO {STATE_SCHEMA}.offsets VALUES (%s, %s, %s, %s)"
                        " ON CONFLICT (connector, topic, partition)"
                        " DO UPDATE SET next_offset = EXCLUDED.next_offset",
                        [(self._connector, t, p, o) for (t, p), o in offsets.items()],
                    )
            if position is not None:
                self._conn.execute(
                    f"INSERT INTO {STATE_SCHEMA}.progress VALUES (%s, %s, %s, %s, %s, now())"
                    " ON CONFLICT (connector) DO UPDATE SET lsn = EXCLUDED.lsn,"
                    " seq = EXCLUDED.seq, commit_ts_us = coalesce(EXCLUDED.commit_ts_us,"
                    f" {STATE_SCHEMA}.progress.commit_ts_us), changes = EXCLUDED.changes,"
                    " updated_at = now()",
                    (self._connector, position[0], position[1], commit_ts_us, changes),
                )
        except psycopg.Error as exc:
            raise target_error("storing the replay position", exc) from exc

    def save_table(
        self, source: tuple[str, str], target: Target, version: int, shape: bytes
    ) -> None:
        """Remember the shape a table has in the target (inside ``transaction()``)."""
        try:
            self._conn.execute(
                f"INSERT INTO {STATE_SCHEMA}.tables VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (connector, source_schema, source_table) DO UPDATE SET"
                " target_schema = EXCLUDED.target_schema, target_table ="
                " EXCLUDED.target_table, version = EXCLUDED.version, shape = EXCLUDED.shape",
                (
                    self._connector, source[0], source[1], target.schema, target.table,
                    version, shape.decode(),
                ),
            )  # fmt: skip
        except psycopg.Error as exc:
            raise target_error(f"storing the shape of {target.sql}", exc) from exc

    def _new_stage(self) -> str:
        self._stage += 1
        return f"_cdc_stage_{self._stage}"

    def _copy(
        self, table: str, columns: Sequence[str], rows: Sequence[tuple[str | None, ...]]
    ) -> None:
        """``COPY`` rows of text values in."""
        self._copy_lines(table, columns, ["\t".join(map(copy_value, row)) for row in rows])

    def _copy_lines(self, table: str, columns: Sequence[str], lines: Sequence[str]) -> None:
        """``COPY`` lines already in COPY's text format in (``cdc.replay.batch`` builds
        them: cheaper than psycopg's per-value adaptation), a chunk per write."""
        cols = ", ".join(ident(c) for c in columns)
        with self._conn.cursor().copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
            for start in range(0, len(lines), _COPY_LINES):
                copy.write("\n".join(lines[start : start + _COPY_LINES]) + "\n")


# COPY lines per write: large enough to amortise the call, small enough to stream.
_COPY_LINES: Final = 5_000
