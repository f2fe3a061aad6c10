"""``cdc replay``: a connector's topics, applied to a target PostgreSQL database.

The one job: wire the replay's parts and run its loop. Read the control topics (the
daemon's committed position, the table shapes, transaction END counts); read the
retention partitions from the offsets the target stores, up to that position; take the
changes whose turn has come, in commit order (``cdc.replay.ordering``); fold them per
table and key (``cdc.replay.batch``); write them, with any DDL their shape needs
(``cdc.replay.ddl``) and the offsets they came from, in one target transaction
(``cdc.postgres.target``). Repeat until the topics' ends as of the start (one-shot), a
point in time (``--until``), or a stop (``--follow`` until SIGTERM).

Everything the replay needs is in Kafka: the legacy database is never contacted.
"""

from __future__ import annotations

import bisect
import gc
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import structlog

from cdc.config import ConnectorConfig, DaemonConfig, ReplayConfig
from cdc.errors import CdcError, ConfigError, SinkError
from cdc.kafka.consumer import ConsumedRecord, PartitionReader, TopicTail
from cdc.kafka.sink import POSITION_KEY
from cdc.kafka.topics import KafkaAdmin, state_topic_name
from cdc.lsn import parse_lsn
from cdc.positions import StoredPosition
from cdc.postgres.target import ReplayState, TargetDatabase
from cdc.protocol.typeinfo import TypeInfo
from cdc.protocol.values import ValueOptions
from cdc.replay.batch import ApplyError, TableBatch
from cdc.replay.bootstrap import TableTopics, bootstrap_from_compacted
from cdc.replay.ddl import Target, alter_table, create_table, create_types, literal, qualified
from cdc.replay.fetch import Fetcher
from cdc.replay.ordering import ChangeQueue, Until
from cdc.replay.records import Change, ChangeKind, TableId
from cdc.replay.values import text_converter_for
from cdc.replay.writer import Unit, Writer
from cdc.stream.schema_changes import (
    TableShape,
    parse_schema_event,
    schema_topic_name,
    type_infos,
)
from cdc.stream.transactions import transaction_topic_name

__all__ = ["Progress", "Replay", "ReplayReport", "ReplayRequest", "parse_until", "request_for"]

# Changes per target transaction: large enough that per-batch costs (a staging table per
# table, the offsets) vanish, small enough to hold in memory and commit often.
DEFAULT_BATCH_CHANGES: Final = 20_000
# Changes read ahead of the apply: bounds memory when partitions are read unevenly.
MAX_QUEUED: Final = 2 * DEFAULT_BATCH_CHANGES
# How often progress is reported (terminal line or replay_progress log).
PROGRESS_INTERVAL_S: Final = 5.0
# The cyclic collector's young-generation threshold in a `cdc replay` process.
_GC_YOUNG_THRESHOLD: Final = 200_000
# How often a following replay looks for topics that appeared (one metadata request).
_TABLE_CHECK_S: Final = 2.0
# How long an idle follow waits for new records per read.
IDLE_WAIT_S: Final = 0.2


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What to replay where: one connector's topics into one target database."""

    connector: ConnectorConfig
    daemon: DaemonConfig
    target_dsn: str
    tables: tuple[str, ...] | None = None  # "schema.table"; None: every table in the log
    mapping: Mapping[str, str] = field(default_factory=dict)  # "s.t" -> "s2.t2" in the target
    until: Until | None = None
    follow: bool = False
    transactional: bool = False
    rebuild: bool = False
    from_compacted: bool = False  # load the compacted topics first, then follow
    batch_changes: int = DEFAULT_BATCH_CHANGES


@dataclass(slots=True)
class Progress:
    """What a progress line or a ``replay_progress`` log says."""

    changes: int
    rate: float  # changes per second since the start
    lag: int | None  # records in the topics not yet applied (None: unknown)
    position: tuple[int, int] | None


@dataclass(slots=True)
class ReplayReport:
    changes: int = 0  # changes applied by this run
    batches: int = 0
    seconds: float = 0.0
    position: tuple[int, int] | None = None  # the last applied (commit LSN, index)
    held_back: int = 0  # consumed but not applicable yet (after --until, or uncovered)
    tables: list[str] = field(default_factory=list)


class _Shapes:
    """Every shape the log announced, per table, ordered by the LSN it starts at."""

    def __init__(self) -> None:
        self._by_table: dict[TableId, list[tuple[int, int, TableShape, bytes]]] = {}
        self._database: str | None = None

    def add(self, value: bytes) -> TableShape:
        shape = parse_schema_event(value)
        if self._database is None:
            db = (orjson.loads(value).get("source") or {}).get("db")
            if isinstance(db, str):
                self._database = db
        entries = self._by_table.setdefault((shape.schema, shape.table), [])
        if not any(v == shape.version for _, v, _, _ in entries):
            bisect.insort(entries, (shape.lsn, shape.version, shape, value), key=lambda e: e[:2])
        return shape

    def tables(self) -> list[TableId]:
        return list(self._by_table)

    def versions(self, table: TableId) -> list[TableShape]:
        return [e[2] for e in self._by_table.get(table, ())]

    def raw(self, table: TableId, version: int) -> bytes:
        return next(e[3] for e in self._by_table[table] if e[1] == version)

    def database(self) -> str | None:
        """The legacy database's name (``source.db``), for topic templates using it."""
        return self._database

    def shape_for(self, change: Change) -> tuple[TableShape, bytes]:
        entries = self._by_table.get(change.table)
        if entries is not None and len(entries) == 1:
            return entries[0][2], entries[0][3]
        if not entries:
            raise ApplyError(
                f"table {'.'.join(change.table)}: no schema-change event announces its shape,"
                f" so it cannot be created (first change at LSN {change.change_lsn}). The"
                " connector must run with schema_changes: topic or inband",
                table=".".join(change.table),
                lsn=change.change_lsn,
            )
        index = bisect.bisect_right([e[0] for e in entries], change.change_lsn) - 1
        index = max(index, 0)  # a change older than the first shape seen: its first shape
        _lsn, _version, shape, raw = entries[index]
        return shape, raw


class _Table:
    """A replayed table as it stands in the target: its shape and its batch."""

    def __init__(
        self, target: Target, shape: TableShape, raw: bytes, options: ValueOptions
    ) -> None:
        self.target = target
        self.shape = shape
        self.raw = raw
        infos = type_infos(shape)
        # Enum labels a change uses that the type's definition did not list (ALTER TYPE
        # ... ADD VALUE makes no new schema version): added before the batch commits.
        self.new_labels: set[tuple[str, str]] = set()
        converters = [
            self._watch_labels(
                text_converter_for(
                    c.type_oid, c.type_modifier, options, types=infos, column=c.name
                ),
                infos.get(c.type_oid),
            )
            for c in shape.columns
        ]
        self.batch = TableBatch(
            table=f"{shape.schema}.{shape.table}",
            columns=[c.name for c in shape.columns],
            key_columns=shape.key_columns,
            converters=converters,
        )

    def _watch_labels(
        self, convert: Callable[[Any], str | None], info: TypeInfo | None
    ) -> Callable[[Any], str | None]:
        if info is None or info.kind != "e":
            return convert
        known = set(info.labels)
        name = qualified(info.namespace, info.name)
        new = self.new_labels

        def watched(value: Any) -> str | None:
            if value is not None and value not in known:
                known.add(value)
                new.add((name, value))
            return convert(value)

        return watched

    def label_statements(self) -> list[str]:
        """``ALTER TYPE ... ADD VALUE`` for the labels seen since the last call."""
        statements = [
            f"ALTER TYPE {name} ADD VALUE IF NOT EXISTS {literal(label)}"
            for name, label in sorted(self.new_labels)
        ]
        self.new_labels.clear()
        return statements


def request_for(
    daemon: DaemonConfig, connector: ConnectorConfig, replay: ReplayConfig
) -> ReplayRequest:
    """The request of a replay declared in a connector file: it follows until stopped."""
    return ReplayRequest(
        connector=connector,
        daemon=daemon,
        target_dsn=replay.target_dsn.get_secret_value(),
        tables=replay.tables,
        mapping=dict(replay.map),
        follow=True,
        transactional=replay.transactional,
        batch_changes=replay.batch_changes,
    )


class Replay:
    """One run of ``cdc replay`` (or one replay declared in a connector file)."""

    def __init__(
        self,
        request: ReplayRequest,
        *,
        stop: threading.Event | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self._request = request
        self._cfg = request.connector
        self._stop = stop or threading.Event()
        self._progress = progress
        self._log = structlog.get_logger("cdc.replay").bind(connector=self._cfg.name)
        self._options = self._cfg.values.options()
        self._topics = self._cfg.effective_topics(request.daemon)
        self._shapes = _Shapes()
        self._tables: dict[TableId, _Table] = {}
        self._applied: dict[TableId, tuple[Target, bytes]] = {}
        self._ordered = self._cfg.delivery == "exactly_once"
        self._position: tuple[int, int] | None = None
        self._topic_table: dict[str, TableId] = {}
        self._selected: set[str] | None = None  # "schema.table" replayed (known after start)
        self._unsorted_ends: list[tuple[int, dict[str, int]]] = []
        self._wanted: list[TableId] | None = None  # None: every table of the log
        self._next_table_check = 0.0
        self._deferred: tuple[int, int] | None = None  # a position read after the data
        if request.transactional and not self._cfg.provide_transaction_metadata:
            raise ConfigError(
                "a transactional replay needs the transaction topic: set"
                " provide_transaction_metadata: true in the connector file (events written"
                " before that carry no transaction boundaries)",
                key="provide_transaction_metadata",
            )
        if request.follow and request.until is not None:
            raise ConfigError("--until rebuilds a past moment and stops: it cannot --follow")

    # --- set-up ---------------------------------------------------------------------

    def run(self) -> ReplayReport:
        """Replay until done (one-shot, ``--until``) or stopped (``--follow``).

        Raises:
            CdcError: Kafka or the target refused something (``retryable`` says whether a
                rerun can heal it), or a change cannot be applied (names table and LSN).
        """
        request, cfg = self._request, self._cfg
        daemon = request.daemon
        admin = KafkaAdmin(
            daemon.kafka.bootstrap_servers,
            daemon.kafka.properties,
            client_id=f"cdc-replay-{cfg.name}",
            log=self._log,
        )
        target = TargetDatabase(request.target_dsn, connector=cfg.name)
        control: TopicTail | None = None
        reader: PartitionReader | None = None
        try:
            target.ensure_state()
            if not target.lock():
                raise CdcError(
                    f"another replay of connector {cfg.name!r} is running on this target"
                    " database (it holds the replay lock); stop it first"
                )
            control_topics = [state_topic_name(cfg.name)]
            if cfg.schema_changes == "topic":
                control_topics.append(schema_topic_name(cfg.name))
            if request.transactional:
                control_topics.append(transaction_topic_name(cfg.name))
            control = TopicTail(admin, control_topics, group_id=f"cdc-replay-{cfg.name}")
            queue = ChangeQueue(
                ordered=self._ordered, transactional=request.transactional, until=request.until
            )
            self._read_control(control.drain(), queue)
            tables = self._select_tables()
            if request.rebuild:
                state = target.load_state()
                target.reset(t for t, _ in state.tables.values())
            state = target.load_state()
            if request.from_compacted:
                state = self._bootstrap(admin, target, tables, state)
            self._check_until(state)
            self._applied = dict(state.tables)
            self._position = state.position
            reader = PartitionReader(admin, group_id=f"cdc-replay-{cfg.name}")
            partitions = self._assign(reader, tables, state)
            fetcher = Fetcher(reader)
            fetcher.start()
            self._selected = {".".join(t) for t in self._topic_table.values()}
            for lsn, counts in self._unsorted_ends:
                queue.expect(lsn, sum(counts.get(t, 0) for t in self._selected))
            self._unsorted_ends.clear()
            try:
                return self._loop(target, control, reader, fetcher, queue, partitions, state)
            finally:
                fetcher.stop()
        finally:
            if reader is not None:
                reader.close()
            if control is not None:
                control.close()
            target.close()

    def _bootstrap(
        self,
        admin: KafkaAdmin,
        target: TargetDatabase,
        tables: Sequence[TableId],
        state: ReplayState,
    ) -> ReplayState:
        """``--from-compacted``: load the compacted topics into an empty target."""
        if state.offsets or state.tables:
            raise ConfigError(
                "--from-compacted loads an empty target: this one already holds a replay of"
                f" connector {self._cfg.name!r}; leave the option out to continue it, or add"
                " --rebuild to start over"
            )
        database = self._shapes.database() or ""
        plans: list[TableTopics] = []
        for table in tables:
            versions = self._shapes.versions(table)
            if not versions:
                continue  # no shape: the retention replay says so if it has changes
            name = ".".join(table)
            raw = self._shapes.raw(table, versions[-1].version)
            plans.append(
                TableTopics(
                    table,
                    versions,
                    raw,
                    retention=self._topics.retention_topic(
                        self._cfg.name, database, table[0], table[1]
                    ),
                    compacted=self._topics.compacted_topic(
                        self._cfg.name, database, table[0], table[1]
                    ),
                    target=Target(*_table_id(self._request.mapping.get(name, name))),
                )
            )
        toast = self._cfg.toast
        bootstrap_from_compacted(
            admin,
            target,
            plans,
            options=self._options,
            placeholder=toast.placeholder if toast.mode == "placeholder" else None,
            group_id=f"cdc-replay-{self._cfg.name}",
        )
        return target.load_state()

    def _select_tables(self) -> list[TableId]:
        wanted: list[TableId] | None = None
        if self._request.tables:
            wanted = [_table_id(t) for t in self._request.tables]
        elif self._cfg.table_names is not None:
            wanted = list(self._cfg.table_names)
        self._wanted = wanted
        known = self._shapes.tables()
        if wanted is None:
            if self._cfg.schema_changes != "topic":
                raise ConfigError(
                    "with schema_changes: inband the replay cannot list the tables from the"
                    " schema topic: name them with --table or the connector's tables",
                    key="tables",
                )
            return sorted(known)
        return wanted

    def _retention_topic(self, table: TableId) -> str:
        database = self._shapes.database() or ""
        return self._topics.retention_topic(self._cfg.name, database, table[0], table[1])

    def _assign(
        self, reader: PartitionReader, tables: Sequence[TableId], state: ReplayState
    ) -> list[tuple[str, int]]:
        start: dict[tuple[str, int], int | None] = {}
        for table in tables:
            topic = self._retention_topic(table)
            partitions = reader.partitions(topic)
            if partitions is None:
                self._log.warning("replay_topic_missing", table=".".join(table), topic=topic)
                continue
            self._topic_table[topic] = table
            for p in partitions:
                start[(topic, p)] = state.offsets.get((topic, p))
        if not start and not self._request.follow:
            raise SinkError(
                f"none of the tables to replay has a retention topic in Kafka (looked for"
                f" {', '.join(self._retention_topic(t) for t in tables) or 'no tables'});"
                " check the connector name and topics.retention (while following, a"
                " connector that has not published yet heals this)",
                retryable=self._request.follow,
            )
        reader.assign(start)
        return list(start)

    def _check_until(self, state: ReplayState) -> None:
        until = self._request.until
        if until is None or state.position is None:
            return
        past = (until.lsn is not None and state.position[0] > until.lsn) or (
            until.ts_us is not None
            and state.commit_ts_us is not None
            and state.commit_ts_us > until.ts_us
        )
        if past:
            raise CdcError(
                f"the target already holds changes after the --until point (it is at commit"
                f" LSN {state.position[0]}): a point-in-time replay needs an empty target,"
                " or --rebuild to drop the replayed tables first"
            )

    # --- control topics ----------------------------------------------------------------

    def _read_control(
        self, records: list[ConsumedRecord], queue: ChangeQueue, *, defer: bool = False
    ) -> None:
        """Shapes, END counts and the daemon's position from the control topics.

        ``defer``: this read follows a data read, so the position it finds is kept for
        the next round (the partitions have not been read up to it yet); the shapes are
        needed now: data that was visible to the data read has its schema events visible
        to this one (they were committed with it or before).
        """
        if self._deferred is not None and not defer:
            queue.set_watermark(self._deferred)
            self._deferred = None
        cfg = self._cfg
        state_topic = state_topic_name(cfg.name)
        tx_topic = transaction_topic_name(cfg.name)
        for record in records:
            if record.value is None:
                continue
            if record.topic == state_topic:
                if record.key == POSITION_KEY:
                    try:
                        stored = StoredPosition.from_json(record.value)
                    except ValueError as exc:
                        raise CdcError(f"the connector's position is unreadable: {exc}") from exc
                    reached = (stored.reached.lsn, stored.reached.seq)
                    if defer:
                        self._deferred = reached
                    else:
                        queue.set_watermark(reached)
            elif record.topic == tx_topic:
                self._read_transaction(record.value, queue)
            else:
                self._shapes.add(record.value)

    def _read_transaction(self, value: bytes, queue: ChangeQueue) -> None:
        event = orjson.loads(value)
        if event.get("status") != "END":
            return
        tx_id = str(event.get("id", ""))
        _, _, lsn_text = tx_id.partition(":")
        if not lsn_text.isdigit():
            return
        counts = {
            str(entry.get("data_collection")): int(entry.get("event_count") or 0)
            for entry in event.get("data_collections") or ()
        }
        if self._selected is None:
            self._unsorted_ends.append((int(lsn_text), counts))
        else:
            queue.expect(int(lsn_text), sum(counts.get(t, 0) for t in self._selected))

    # --- the loop ----------------------------------------------------------------------

    def _loop(  # noqa: PLR0917 - the replay's one loop and its parts
        self,
        target: TargetDatabase,
        control: TopicTail,
        reader: PartitionReader,
        fetcher: Fetcher,
        queue: ChangeQueue,
        partitions: list[tuple[str, int]],
        state: ReplayState,
    ) -> ReplayReport:
        report = ReplayReport(tables=[".".join(t) for t in self._topic_table.values()])
        started = time.monotonic()
        saved: dict[tuple[str, int], int] = dict(state.offsets)
        writer = Writer(target)
        try:
            self._run_batches(
                writer, control, reader, fetcher, queue, partitions, state, report, saved
            )
            writer.drain()
        finally:
            writer.close()
        report.seconds = time.monotonic() - started
        report.position = self._position
        report.held_back = len(queue)
        total = state.changes + report.changes
        self._report(report, started, total, reader, partitions, saved, final=True)
        return report

    def _run_batches(  # noqa: PLR0917
        self,
        writer: Writer,
        control: TopicTail,
        reader: PartitionReader,
        fetcher: Fetcher,
        queue: ChangeQueue,
        partitions: list[tuple[str, int]],
        state: ReplayState,
        report: ReplayReport,
        saved: dict[tuple[str, int], int],
    ) -> None:
        request = self._request
        started = time.monotonic()
        last_progress = started
        total = state.changes
        stop_at = None if request.follow else reader.end_offsets(partitions)
        while not self._stop.is_set():
            self._read_control(control.drain(), queue)
            if request.follow:
                self._follow_new_tables(reader, fetcher, partitions, state)
            self._read_data(reader, fetcher, queue, partitions)
            self._read_control(control.drain(), queue, defer=True)
            batch = queue.take(request.batch_changes)
            if batch:
                total += self._apply(writer, batch, queue, fetcher, partitions, saved, total)
                report.changes += len(batch)
                report.batches += 1
            elif stop_at is not None and (
                queue.finished or all(fetcher.at_end(tp, stop_at[tp]) for tp in partitions)
            ):
                self._save_offsets_only(writer, queue, fetcher, partitions, saved, total)
                break
            elif queue.finished:
                break
            now = time.monotonic()
            if now - last_progress >= PROGRESS_INTERVAL_S:
                last_progress = now
                self._report(report, started, total, reader, partitions, saved)

    def _follow_new_tables(
        self,
        reader: PartitionReader,
        fetcher: Fetcher,
        partitions: list[tuple[str, int]],
        state: ReplayState,
    ) -> None:
        """A table whose topic appeared while following (its first schema event, or the
        connector's first records): read its topic too."""
        known = set(self._topic_table.values())
        now = time.monotonic()
        if now < self._next_table_check:
            return
        self._next_table_check = now + _TABLE_CHECK_S
        for table in self._wanted if self._wanted is not None else self._shapes.tables():
            if table in known:
                continue
            topic = self._retention_topic(table)
            numbers = reader.partitions(topic)
            if numbers is None:
                continue  # announced, its first records not committed yet
            self._topic_table[topic] = table
            assert self._selected is not None
            self._selected.add(".".join(table))
            start = {(topic, p): state.offsets.get((topic, p)) for p in numbers}
            fetcher.add(start)
            partitions.extend(start)
            self._log.info("replay_table_added", table=".".join(table), topic=topic)

    def _read_data(
        self,
        reader: PartitionReader,
        fetcher: Fetcher,
        queue: ChangeQueue,
        partitions: list[tuple[str, int]],
    ) -> None:
        """Take what the fetch thread read until every partition is past the watermark
        or at its end (or the queue is full); without a watermark, what is there."""
        ends: dict[tuple[str, int], int] | None = None
        first = True
        while True:
            if len(queue) >= MAX_QUEUED:
                return
            if not first:
                lagging = [tp for tp in partitions if queue.needs_more(tp)]
                if not lagging:
                    return
                if ends is None:
                    ends = reader.end_offsets(lagging)
                lagging = [tp for tp in lagging if not fetcher.at_end(tp, ends[tp])]
                if not lagging:
                    return
            changes = fetcher.take(IDLE_WAIT_S if first else 0.05)
            first = False
            shapes = self._shapes
            add = queue.add
            for change in changes:
                if change.kind is ChangeKind.SCHEMA:
                    assert change.value is not None
                    shapes.add(change.value)
                add(change)
            if not changes and not self._ordered:
                return
            if self._stop.is_set():
                return

    def _apply(  # noqa: PLR0917
        self,
        writer: Writer,
        batch: list[Change],
        queue: ChangeQueue,
        fetcher: Fetcher,
        partitions: list[tuple[str, int]],
        saved: dict[tuple[str, int], int],
        total: int,
    ) -> int:
        """Record one target transaction (the batch's DDL, rows, offsets and position)
        and hand it to the writer; the next batch is folded while it runs."""
        unit = Unit()
        # New types (and enum labels) must be committed before rows use them.
        for name in {c.table for c in batch if c.kind is not ChangeKind.SKIP}:
            current = self._tables.get(name)
            for shape in self._shapes.versions(name):
                if shape.types and (current is None or shape.version > current.shape.version):
                    unit.run_outside(create_types(shape.types), what="creating types")
        applied = 0
        last: Change | None = None
        for change in batch:
            kind = change.kind
            if kind is ChangeKind.SKIP or kind is ChangeKind.SCHEMA:
                continue
            table = self._table(unit, change)
            if kind is ChangeKind.TRUNCATE:
                self._flush(unit, table)
                unit.truncate(table.target)
            else:
                table.batch.add(change)
            applied += 1
            last = change
        for table in self._tables.values():
            self._flush(unit, table)
            labels = table.label_statements()
            if labels:  # committed before the batch's transaction, which uses them
                unit.run_outside(labels, what=f"adding enum labels for {table.target.sql}")
        if last is not None:
            self._position = last.position
        changed = self._changed_offsets(queue, fetcher, partitions, saved)
        unit.save(
            changed, self._position, None if last is None else last.commit_ts_us, total + applied
        )
        writer.submit(unit)
        saved.update(changed)  # as handed over: each unit stores what changed since
        return applied

    def _save_offsets_only(  # noqa: PLR0917
        self,
        writer: Writer,
        queue: ChangeQueue,
        fetcher: Fetcher,
        partitions: list[tuple[str, int]],
        saved: dict[tuple[str, int], int],
        total: int,
    ) -> None:
        changed = self._changed_offsets(queue, fetcher, partitions, saved)
        if changed:
            unit = Unit()
            unit.save(changed, self._position, None, total)
            writer.submit(unit)
            saved.update(changed)

    @staticmethod
    def _changed_offsets(
        queue: ChangeQueue,
        fetcher: Fetcher,
        partitions: list[tuple[str, int]],
        saved: Mapping[tuple[str, int], int],
    ) -> dict[tuple[str, int], int]:
        """Where each partition continues (its first change not applied, or what was
        read), for the partitions where that differs from what was stored."""
        offsets: dict[tuple[str, int], int] = {}
        for tp in partitions:
            head = queue.head(tp)
            if head is not None:
                offset = head.offset
            else:
                offset = max(fetcher.next.get(tp, -1), fetcher.eof.get(tp, -1))
                if offset < 0:
                    continue
            if saved.get(tp) != offset:
                offsets[tp] = offset
        return offsets

    def _table(self, target: Unit, change: Change) -> _Table:
        """The change's table in the target, created or altered to the change's shape."""
        shape, raw = self._shapes.shape_for(change)
        table = self._tables.get(change.table)
        if table is not None and table.shape.version == shape.version:
            return table
        name = ".".join(change.table)
        if table is None:
            stored = self._applied.get(change.table)
            if stored is not None:
                previous_raw = stored[1]
                previous = parse_schema_event(previous_raw)
                table = _Table(stored[0], previous, previous_raw, self._options)
                if previous.version == shape.version:
                    self._tables[change.table] = table
                    return table
        if table is None:
            mapped = self._request.mapping.get(name, name)
            where = Target(*_table_id(mapped))
            target.execute(create_table(shape, where), what=f"creating table {where.sql}")
        else:
            if shape.version < table.shape.version:
                return table  # an older shape's change after a newer one: keep the newer
            self._flush(target, table)
            where = table.target
            statements = alter_table(table.shape, shape, where)
            target.execute(
                statements,
                what=f"applying schema version {shape.version} of {name} (from LSN"
                f" {shape.lsn}) to {where.sql}",
            )
        table = _Table(where, shape, raw, self._options)
        target.save_table(change.table, where, shape.version, raw)
        self._tables[change.table] = table
        self._log.info("replay_table_shape", table=name, target=where.sql, version=shape.version)
        return table

    @staticmethod
    def _flush(target: Unit, table: _Table) -> None:
        if len(table.batch):
            target.write(
                table.target,
                table.batch.columns,
                table.batch.key_columns,
                table.batch.writes(),
            )

    def _report(  # noqa: PLR0917
        self,
        report: ReplayReport,
        started: float,
        total: int,
        reader: PartitionReader,
        partitions: list[tuple[str, int]],
        saved: Mapping[tuple[str, int], int],
        *,
        final: bool = False,
    ) -> None:
        elapsed = max(time.monotonic() - started, 1e-9)
        lag: int | None
        try:
            ends = reader.end_offsets(partitions)
            lag = sum(max(0, ends[tp] - saved.get(tp, 0)) for tp in partitions)
        except CdcError:
            lag = None
        info = Progress(report.changes, report.changes / elapsed, lag, self._position)
        if self._progress is not None:
            self._progress(info)
        self._log.info(
            "replay_finished" if final else "replay_progress",
            changes=report.changes,
            total_changes=total,
            rate=round(info.rate),
            lag=lag,
            lsn=None if self._position is None else self._position[0],
        )


def _table_id(text: str) -> TableId:
    schema, dot, table = text.partition(".")
    if not dot:
        return ("public", schema)
    return (schema, table)


def parse_until(text: str) -> Until:
    """``--until``: an LSN (``16/B374D848`` or decimal) or an ISO-8601 timestamp."""
    text = text.strip()
    if "/" in text:
        return Until(lsn=parse_lsn(text))
    if text.isdigit():
        return Until(lsn=int(text))
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(
            f"--until {text!r} is neither an LSN (16/B374D848) nor an ISO-8601 time"
            " (2026-11-30T12:00:00Z)"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return Until(ts_us=int(moment.timestamp() * 1_000_000))


def run_replay_command(request: ReplayRequest) -> int:
    """``cdc replay``: run one replay in the foreground; SIGTERM/SIGINT stop it between
    two batches (everything applied is committed). Returns the exit status: 0 done or
    stopped, 1 a failure (the message says what to do), 2 a configuration error."""
    stop = threading.Event()
    # A replay allocates millions of short-lived, acyclic dicts (the parsed events): the
    # cyclic collector's default young-generation threshold (700 allocations) would scan
    # them over and over, for nothing. This process does nothing else.
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, 20, 100)

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    terminal = sys.stderr.isatty()

    def show(info: Progress) -> None:
        if not terminal:
            return
        lag = "?" if info.lag is None else f"{info.lag:,}"
        sys.stderr.write(f"\r{info.changes:,} changes  {info.rate:,.0f}/s  lag {lag} records  ")
        sys.stderr.flush()

    log = structlog.get_logger("cdc.replay").bind(connector=request.connector.name)
    try:
        report = Replay(request, stop=stop, progress=show).run()
    except ConfigError as exc:
        sys.stderr.write(f"\ncdc: configuration error: {exc}\n")
        return 2
    except CdcError as exc:
        log.error("replay_failed", error=str(exc), retryable=exc.retryable)  # noqa: TRY400 - the message is the report
        sys.stderr.write(f"\ncdc: replay failed: {exc}\n")
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if terminal:
        sys.stderr.write("\n")
    print(
        f"replayed {report.changes:,} changes of {len(report.tables)} tables in"
        f" {report.seconds:.1f}s ({report.changes / max(report.seconds, 1e-9):,.0f}/s)"
        + ("" if report.position is None else f"; at commit LSN {report.position[0]}")
        + (f"; {report.held_back:,} changes after --until not applied" if report.held_back else "")
    )
    return 0
