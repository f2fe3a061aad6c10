"""``cdc verify``: compare a connector's legacy tables with what it produced, table by table.

The one job: open the edges (a read-only :class:`~cdc.postgres.verify_reader.VerifyReader`
on the legacy database, a Kafka admin for topic readers, a read-only reader on a replay
target) and run, for each table, a comparer (``cdc.verify.topic`` for the compacted topic,
``cdc.verify.target`` for a target database); return the :class:`VerifyReport`.

What the comparers share lives here: the legacy reads, paced by the connector's
``snapshot.chunk_rows`` and ``snapshot.max_rows_per_second`` and each in one short
read-only transaction that records its WAL position; the wait for the slot to confirm a
position; and the re-check rounds, which turn keys that differed during the scan into
differences only if they still differ once the compared side has caught up to the legacy
reads (docs/verify.md). It must not write anywhere or compare values itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Protocol, TypeVar

import structlog

from cdc.config import ConnectorConfig, DaemonConfig, TopicsConfig
from cdc.errors import CdcError, ConfigError
from cdc.kafka.topics import KafkaAdmin
from cdc.lsn import format_lsn
from cdc.postgres.snapshot_reader import KeyValues, TableShape
from cdc.postgres.verify_reader import ChunkDigest, VerifyReader
from cdc.verify.compare import CatchUp, RowOutcome, TableReport, Throttle, VerifyReport

__all__ = [
    "RECHECK_ROUNDS",
    "Candidates",
    "LegacyTables",
    "VerifyOptions",
    "recheck",
    "verify_connector",
]

# A key that differed only because a write raced the scan agrees after one catch-up; one
# that still differs after this many independent reads-and-catch-ups is reported. (So
# would a key written twice or more within every round: docs/verify.md, "hot keys".)
RECHECK_ROUNDS: Final = 4

# Keys per by-key read of a re-check: one short statement each (and no more than a chunk).
KEYS_PER_READ: Final = 1_000

# How often the slot's confirmed position is polled while waiting for it.
_POLL_S: Final = 0.1

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    """The command line's choices (``cdc verify --help``)."""

    tables: tuple[str, ...] = ()  # "schema.table" or "table"; empty: the connector's tables
    target_dsn: str | None = None  # compare with this database instead of the topics
    max_differences: int = 20  # shown per table (all are counted)
    wait_seconds: float = 60.0  # bound on each wait for the compared side to catch up


class Comparer(Protocol):
    """Compares one table with its counterpart (compacted topic or target table)."""

    def verify_table(self, schema: str, table: str) -> TableReport: ...


class LegacyTables:
    """The legacy database as the comparers read it: paced, short, read-only reads that
    each return the WAL position they saw; and the connector's settings they need."""

    def __init__(
        self,
        *,
        reader: VerifyReader,
        daemon: DaemonConfig,
        connector: ConnectorConfig,
        options: VerifyOptions,
        admin: KafkaAdmin,
        log: Any,
    ) -> None:
        self.reader = reader
        self.connector = connector
        self.options = options
        self.admin = admin
        self.log = log
        self.topics: TopicsConfig = connector.effective_topics(daemon)
        self.database = reader.database_name()
        self.chunk_rows = connector.snapshot.chunk_rows
        self.keys_per_read = min(KEYS_PER_READ, self.chunk_rows)
        self._throttle = Throttle(connector.snapshot.max_rows_per_second)
        self.value_options = connector.values.options()

    # --- reads ------------------------------------------------------------------------

    def read_chunk(
        self,
        shape: TableShape,
        after: KeyValues | None,
        limit: int,
        until: KeyValues | None = None,
    ) -> tuple[list[KeyValues], int]:
        """The next ``limit`` rows after ``after`` (up to ``until``), and the WAL position
        of the transaction that read them."""
        self._pace()
        with self.reader.short_transaction() as lsn:
            rows = self.reader.read_chunk(shape, after, limit, until)
        self._throttle.read(len(rows), time.monotonic())
        return rows, lsn

    def digest_chunk(self, shape: TableShape, after: KeyValues | None, limit: int) -> ChunkDigest:
        """The digest of the next ``limit`` rows after ``after``: one statement, in
        autocommit (its rows are read again, with a position, only if it differs)."""
        self._pace()
        digest = self.reader.digest_range(shape, after, limit=limit)
        self._throttle.read(digest.rows, time.monotonic())
        return digest

    def read_keys(
        self, shape: TableShape, keys: Sequence[KeyValues]
    ) -> tuple[list[KeyValues], int]:
        """The rows with these keys (present ones), in reads of ``keys_per_read`` keys;
        the highest WAL position of those reads."""
        rows: list[KeyValues] = []
        position = 0
        for batch in batched(keys, self.keys_per_read):
            self._pace()
            with self.reader.short_transaction() as lsn:
                found = self.reader.read_keys(shape, batch)
            self._throttle.read(max(len(found), len(batch)), time.monotonic())
            rows.extend(found)
            position = max(position, lsn)
        return rows, position

    def scan(self, shape: TableShape) -> Iterator[tuple[list[KeyValues], int]]:
        """Every row of the table, chunk by chunk, each with its WAL position."""
        after: KeyValues | None = None
        while True:
            rows, lsn = self.read_chunk(shape, after, self.chunk_rows)
            yield rows, lsn
            if len(rows) < self.chunk_rows:
                return
            after = self.reader.key_of(shape, rows[-1])

    def _pace(self) -> None:
        delay = self._throttle.delay(time.monotonic())
        if delay > 0:
            time.sleep(delay)

    # --- the slot ---------------------------------------------------------------------

    def wait_for_slot(self, lsn: int, deadline: float) -> CatchUp:
        """Wait until the connector's slot has confirmed ``lsn``: the daemon confirms a
        position only once Kafka durably holds every change before it."""
        slot = self.connector.slot
        while True:
            confirmed = self.reader.slot_confirmed_lsn(slot)
            if confirmed is not None and confirmed >= lsn:
                return CatchUp(lsn, True)
            if time.monotonic() >= deadline:
                if confirmed is None:
                    detail = f"replication slot {slot} does not exist: is the connector running?"
                else:
                    detail = (
                        f"replication slot {slot} confirmed only {format_lsn(confirmed)} within"
                        f" {self.options.wait_seconds:g} s: is the daemon running and keeping up?"
                    )
                return CatchUp(lsn, False, detail)
            time.sleep(_POLL_S)

    def deadline(self) -> float:
        """When a wait that starts now gives up (``--wait``)."""
        return time.monotonic() + self.options.wait_seconds


@dataclass(slots=True)
class Candidates(Generic[K]):
    """Keys that differed in the scan: each with the legacy row the scan read (``None``
    when the legacy table had no row with it) and how it differed, in scan order; and
    the highest WAL position of the legacy reads that showed them."""

    rows: dict[K, tuple[Any, RowOutcome]] = field(default_factory=dict)
    lsn: int = 0

    def add(self, key: K, legacy_row: Any, outcome: RowOutcome, lsn: int) -> None:
        self.rows[key] = (legacy_row, outcome)
        self.lsn = max(self.lsn, lsn)


def recheck(
    candidates: Candidates[K],
    report: TableReport,
    *,
    legacy_rows: Callable[[list[K]], tuple[dict[K, Any], int]],
    catch_up: Callable[[int], CatchUp],
    other_rows: Callable[[list[K]], dict[K, Any]],
    compare: Callable[[Any, Any], RowOutcome],
    label: Callable[[K], str],
) -> None:
    """Re-read the keys that differed, on both sides, until they agree or the rounds run
    out; record in ``report`` those that still differ.

    Each round waits until the compared side has caught up to the position L of the
    last legacy read of the keys (the scan's, at first), reads the compared side's rows,
    then the legacy rows again (at L', for the next round). A key is settled (equal)
    when the compared side's row equals the legacy row at L, or at L': the compared side
    was read once it held every change up to L and before the read at L', so a row
    changed once in between shows one of the two. Only a key written twice or more
    within every round's window, or a real difference, stays unsettled; after
    :data:`RECHECK_ROUNDS` rounds it is a difference, reported with its comparison at L.
    If the compared side does not catch up in time, the keys left keep their last
    outcome and the report says so.

    Args:
        candidates: what the scan found.
        legacy_rows: the legacy rows of keys (absent ones left out) and the position.
        catch_up: waits for the compared side to reach a position.
        other_rows: the compared side's rows of keys (absent ones left out).
        compare: legacy row (or None), other row (or None) -> outcome.
        label: the key as JSON text, for the report.
    """
    pending = {key: outcome for key, (_, outcome) in candidates.rows.items()}
    mine = {key: row for key, (row, _) in candidates.rows.items() if row is not None}
    lsn = candidates.lsn
    for round_number in range(1, RECHECK_ROUNDS + 1):
        if not pending:
            break
        report.recheck_rounds = round_number
        caught = catch_up(lsn)
        if not caught.caught_up:
            report.catch_up = caught
            break
        keys = list(pending)
        theirs = other_rows(keys)
        later, later_lsn = legacy_rows(keys)
        for key in keys:
            other = theirs.get(key)
            outcome = compare(mine.get(key), other)
            if outcome.kind is not None:
                settled = compare(later.get(key), other)
                if settled.kind is not None:
                    pending[key] = outcome
                    continue
                outcome = settled
            del pending[key]
            report.add_unverifiable(outcome.unverifiable)
        mine, lsn = later, later_lsn
    for key, outcome in pending.items():
        report.add_difference(label(key), outcome)


T = TypeVar("T")


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in slices of ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def verify_connector(
    daemon: DaemonConfig,
    connector: ConnectorConfig,
    options: VerifyOptions | None = None,
    *,
    log: Any = None,
) -> VerifyReport:
    """Compare ``connector``'s legacy tables with their compacted topics, or with the
    target database ``options.target_dsn``.

    Raises:
        ConfigError: a ``--table`` is not one of the connector's tables, or the
            publication publishes none.
        CdcError: a database or Kafka could not be read (the message names the table).
    """
    options = options or VerifyOptions()
    if log is None:
        log = structlog.get_logger("cdc.verify").bind(connector=connector.name, slot=connector.slot)
    legacy_reader = VerifyReader(
        connector.postgres.dsn.get_secret_value(),
        application_name=f"cdc:verify:{connector.name}",
        role="the legacy database (postgres.dsn)",
    )
    target_reader: VerifyReader | None = None
    try:
        admin = KafkaAdmin(
            daemon.kafka.bootstrap_servers,
            daemon.kafka.properties,
            client_id=f"cdc-verify-{connector.name}",
            log=log,
        )
        legacy = LegacyTables(
            reader=legacy_reader,
            daemon=daemon,
            connector=connector,
            options=options,
            admin=admin,
            log=log,
        )
        tables = connector_tables(connector, legacy_reader, options.tables)
        comparer: Comparer
        if options.target_dsn is not None:
            # Imported here: each mode loads only its own comparer.
            from cdc.verify.target import TargetComparer  # noqa: PLC0415

            target_reader = VerifyReader(
                options.target_dsn,
                application_name=f"cdc:verify:{connector.name}:target",
                role="the target database (--target-dsn)",
            )
            comparer = TargetComparer(legacy, target_reader)
            report = VerifyReport(connector.name, "target_database")
        else:
            from cdc.verify.topic import TopicComparer  # noqa: PLC0415

            comparer = TopicComparer(legacy)
            report = VerifyReport(connector.name, "compacted_topic")
        for qualified in tables:
            schema, _, table = qualified.partition(".")
            try:
                report.tables.append(comparer.verify_table(schema, table))
            except ConfigError:
                raise
            except CdcError as exc:
                raise CdcError(f"verifying table {qualified}: {exc}") from exc
        return report
    finally:
        if target_reader is not None:
            target_reader.close()
        legacy_reader.close()


def connector_tables(
    connector: ConnectorConfig, reader: VerifyReader, wanted: Sequence[str]
) -> list[str]:
    """The tables to compare: ``wanted`` (checked against the connector's tables), or all
    the connector captures (its ``tables``, or its publication's; never the signal or
    outbox table, which have no table topics).

    Raises:
        ConfigError: a wanted table is not captured, or the publication has none.
    """
    special = {t for t in (connector.snapshot.signal_table, connector.outbox.table) if t}
    if connector.tables is not None:
        configured = list(connector.tables)
    else:
        configured = reader.publication_tables(connector.publication)
        if not configured:
            raise ConfigError(
                f"publication {connector.publication!r} does not exist on the legacy database"
                " or publishes no table, so connector"
                f" {connector.name!r} captures nothing to verify",
                key="publication",
            )
    captured = [t for t in configured if t not in special]
    if not wanted:
        return captured
    chosen = list(dict.fromkeys(t if "." in t else f"public.{t}" for t in wanted))
    unknown = [t for t in chosen if t not in captured]
    if unknown:
        raise ConfigError(
            f"--table {', '.join(unknown)}: not captured by connector {connector.name!r}"
            f" (its tables: {', '.join(captured) or 'none'})",
            key="tables",
        )
    return chosen
