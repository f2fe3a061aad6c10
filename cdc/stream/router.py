"""What each replication message produces, and at which position. No I/O.

The one job: turn the decoded pgoutput stream of one connector into effects, in order:
the records a table change, a truncate, an outbox row, a signal row, a watermark, a
schema change or a logical message produce (``Publish``), where each source transaction
ends (``SourceCommit``), the state records that must be stored with them (``SaveState``),
and the rare requests the edge carries out (``EnsureTopics``, ``StartSnapshot``,
``InvalidateType``) or reports (``ChunkPublished``, ``SchemaAnnounced``). The pipeline's
edge loop hands ``Publish``, ``SourceCommit`` and ``SaveState`` to the sink, in order.

Positions (``cdc.positions.Position``): every message of a source transaction has the
identity ``(commit LSN, index)``; after it, the stream has reached ``(commit LSN, index +
1)``, and after the Commit ``(commit LSN, COMPLETE)``. A non-transactional logical message
is a unit of its own at its LSN. After a restart in ``exactly_once`` mode, messages whose
identity is before the stored position were published by a committed Kafka transaction:
their records are dropped here (the TOAST memory, schema history and snapshot window are
still fed, so what follows is encoded exactly as it was the first time).

Position headers: every record of a table change (both topics) carries ``cdc.lsn`` (the
commit LSN) and ``cdc.seq`` (the message's index: its identity's ``seq``; all records of
one message share them, the ``d`` and ``c`` of a key change too), built once per message.

Transaction metadata (``provide_transaction_metadata``, ``cdc.stream.transactions``): the
envelope numbers each data event in its ``transaction`` block as it encodes it; the BEGIN
record goes out with the transaction's first data event, in the same ``Publish``, and the
END record at the Commit, as the Commit message's own unit (identity ``(commit LSN,
messages)``), so a resumed stream publishes each exactly once, and END comes in the Kafka
transaction that ends the source transaction. Snapshot rows of a chunk (published at a
HIGH watermark) are no data events of the watermark's transaction.

Which tables are captured: every table in the stream but the signal table and the outbox
table, whose rows are routed instead (and whose TRUNCATE produces nothing). The edge
resolves what needs the catalog when a Relation arrives (``RelationInfo``: the event key,
SQL type names, NOT NULL, custom types, partition count), and the snapshot driver what a
chunk's table needs (``ChunkWindow.descriptions``), so nothing here calls out but the TOAST
memory (``toast.mode: fill``), a small ``Protocol``.

Schema-change events precede the first data event of each new shape, streamed or read by
an incremental snapshot: the first chunk of a table whose shape the history does not
know carries its event (``source.lsn`` the chunk rows'), in the same ``Publish``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import NamedTuple, Protocol, cast

import orjson

from cdc.envelope import (
    SEQ_HEADERS,
    EnvelopeEncoder,
    Headers,
    Record,
    TxContext,
    lsn_header,
    seq_header,
)
from cdc.errors import SourceError
from cdc.lsn import format_lsn
from cdc.positions import COMPLETE, Position
from cdc.protocol.messages import (
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    PgoutputMessage,
    Relation,
    Truncate,
    Type,
    Update,
)
from cdc.protocol.replication import PG_EPOCH_UNIX_US
from cdc.protocol.typeinfo import TypeInfo
from cdc.snapshots.state import STATE_KEY, SnapshotProgress
from cdc.snapshots.window import (
    SIGNAL_PREFIX,
    WATERMARK_PREFIX,
    ChunkClosed,
    ChunkWindow,
    parse_signal,
)
from cdc.stream.routing import MessageRouter, OutboxRouter
from cdc.stream.schema_changes import SCHEMA_STATE_KEY, SchemaChanges
from cdc.stream.schema_history import SchemaChange
from cdc.stream.transactions import TransactionOrder, TransactionTopic

__all__ = [
    "ChangeRouter",
    "ChunkPublished",
    "Effect",
    "EnsureTopics",
    "InvalidateType",
    "Publish",
    "RelationInfo",
    "SaveState",
    "SchemaAnnounced",
    "SourceCommit",
    "StartSnapshot",
]

# Records a key change produces (d + tombstone + c + row): counted as a delete and a create.
KEY_CHANGE_RECORDS = 4
# Indexes whose cdc.seq header is prebuilt (SEQ_HEADERS): the hot path only looks it up.
_SEQ_CACHED = len(SEQ_HEADERS)


class Publish(NamedTuple):
    """Produce these records, in order; once durable, the stream has reached ``reached``.

    ``records`` is a list, except for a snapshot chunk: an iterator that encodes one row
    at a time as it is produced (a whole chunk encoded at once would sit in memory)."""

    records: Iterable[Record]
    reached: Position


class SourceCommit(NamedTuple):
    """A source transaction (or a non-transactional message) ended: its ``end_lsn`` may
    be confirmed once all it published is durable."""

    reached: Position
    end_lsn: int
    commit_ts_us: int


class SaveState(NamedTuple):
    """Store this state record with what was published up to here."""

    key: bytes
    value: bytes


class EnsureTopics(NamedTuple):
    """Make these topics (that keep every record) before the records that follow."""

    topics: tuple[str, ...]


class StartSnapshot(NamedTuple):
    """A signal asked for an incremental snapshot of ``tables`` (empty: all)."""

    tables: tuple[str, ...]
    via: str  # "logical_message" or "signal_table"
    lsn: int


class InvalidateType(NamedTuple):
    """A custom type was (re)defined: the catalog's cached description is stale."""

    oid: int


class ChunkPublished(NamedTuple):
    """A chunk of the running incremental snapshot was published (for metrics and logs)."""

    table: str | None
    rows: int
    progress: SnapshotProgress
    finished: bool


class SchemaAnnounced(NamedTuple):
    """A schema-change event was published (for the log)."""

    change: SchemaChange


Effect = (
    Publish
    | SourceCommit
    | SaveState
    | EnsureTopics
    | StartSnapshot
    | InvalidateType
    | ChunkPublished
    | SchemaAnnounced
)


class ToastPositions(Protocol):
    """The TOAST memory's view of the stream: the position of the changes that follow."""

    def at(self, position: Position | None) -> None: ...


@dataclass(frozen=True, slots=True)
class RelationInfo:
    """What the edge read from the catalog when a Relation message arrived."""

    # The event key when pgoutput's key flags do not name it (REPLICA IDENTITY FULL or
    # NOTHING: the primary key); None: the flagged columns.
    key_columns: tuple[str, ...] | None = None
    # format_type() of each column, for schema-change events.
    type_names: tuple[str, ...] = ()
    # Whether each column is NOT NULL (None: unknown), for schema-change events.
    not_null: tuple[bool | None, ...] = ()
    # Every non-built-in type the columns use, transitively (None: no longer exists).
    types: Mapping[int, TypeInfo | None] = field(default_factory=dict)
    # Partitions of the table's retention topic (in-band schema changes need it).
    partitions: int = 1


class ChangeRouter:
    """One connector's stream, message by message. Not thread-safe; one per run.

    Call ``relation`` for each Relation message (with what the edge resolved) and
    ``feed`` for every other message, in stream order.
    """

    def __init__(
        self,
        *,
        encoder: EnvelopeEncoder,
        window: ChunkWindow,
        messages: MessageRouter,
        outbox: OutboxRouter,
        signal_table: str | None,
        schema_changes: SchemaChanges | None,
        retention_topic: Callable[[str, str], str],
        known_topics: set[str],
        keys: dict[int, tuple[str, ...] | None],
        types: dict[int, TypeInfo | None],
        resume: Position | None = None,
        toast: ToastPositions | None = None,
        transactions: TransactionTopic | None = None,
    ) -> None:
        """Args:
        encoder: the stream's envelope encoder; built over ``keys`` and ``types``.
        window: the incremental snapshot's stream side.
        messages: routes logical decoding messages.
        outbox: routes the rows of the outbox table (``outbox.table``), if there is one.
        signal_table: ``schema.table`` of the signal table, if any.
        schema_changes: builds schema-change events (None: off).
        retention_topic: ``(schema, table) -> topic`` of a table's events.
        known_topics: topics that keep every record and already exist (grows here).
        keys: the event key of each relation OID (filled here from ``RelationInfo``).
        types: custom types by OID (filled here from ``RelationInfo``).
        resume: ``exactly_once``: the position a committed Kafka transaction reached;
            what is before it is not published again.
        toast: the TOAST memory, told the position of each unit (``toast.mode: fill``).
        transactions: ``provide_transaction_metadata``: the transaction topic's records
            (None: off, every event's ``transaction`` is null).
        """
        self._encoder = encoder
        self._window = window
        self._messages = messages
        self._outbox = outbox
        self._outbox_table = outbox.table
        self._signal_table = signal_table
        self._schema = schema_changes
        self._retention_topic = retention_topic
        self._known_topics = known_topics
        self._keys = keys
        self._types = types
        self._resume = resume
        self._toast = toast
        self._transactions = transactions
        self._outbox_oid: int | None = None
        self._outbox_json: tuple[str, ...] = ()
        self._signal_oid: int | None = None
        # Shapes from Relation messages by OID, compared with the schema history at the
        # table's next data event (the event then carries that event's position).
        self._shapes: dict[int, tuple[Relation, RelationInfo]] = {}
        # The last Relation of each OID: compared again after a snapshot chunk announced
        # another shape of its table (the stream's next event has the Relation's shape).
        self._relations: dict[int, tuple[Relation, RelationInfo]] = {}
        self._tx: TxContext | None = None
        # The data events of the transaction in hand (transaction metadata on).
        self._order: TransactionOrder | None = None
        self._order_lsn = 0
        # The cdc.lsn header of the transaction in hand, built once at its Begin.
        self._lsn_header = lsn_header(0)
        self._index = 0
        self._last_commit_lsn: int | None = None
        #: Events published by operation, and transactions and messages seen (metrics).
        self.events = {"c": 0, "u": 0, "d": 0, "t": 0}
        self.transactions = 0
        self.logical_messages = 0
        self.last_commit_ts_us = 0

    @property
    def in_transaction(self) -> bool:
        """Between a Begin and its Commit: keepalives must not be confirmed now."""
        return self._tx is not None

    # --- relations ----------------------------------------------------------------------

    def relation(self, relation: Relation, info: RelationInfo) -> None:
        """A Relation message (a table's shape, before its first change in a session and
        after DDL): remember how to key and convert it; hold a schema-change event for a
        new shape until the table's next data event, whose LSN the event carries."""
        qualified = f"{relation.namespace}.{relation.name}"
        self._types.update(info.types)
        if qualified == self._signal_table:
            self._signal_oid = relation.oid
            return
        if qualified == self._outbox_table:
            self._outbox_oid = relation.oid
            self._outbox_json = tuple(c.name for c in relation.columns if c.type_oid in _JSON)
            return
        self._keys[relation.oid] = info.key_columns
        if self._schema is not None:
            self._shapes[relation.oid] = self._relations[relation.oid] = (relation, info)

    # --- the stream ---------------------------------------------------------------------

    def feed(self, msg: PgoutputMessage, lsn: int, now_us: int) -> list[Effect]:
        """The effects of one message (``lsn``: its XLogData's WAL start), in order.

        Raises:
            SourceError: the stream is out of order, or holds a kind cdc never asks for.
            ConversionError: a value cannot be converted exactly.
        """
        kind = type(msg)
        if kind is Insert or kind is Update or kind is Delete:
            return self._change(cast(Insert | Update | Delete, msg), lsn, now_us)
        if kind is Begin:
            begin = cast(Begin, msg)
            commit_ts_us = begin.commit_ts + PG_EPOCH_UNIX_US
            order = None
            if self._transactions is not None:
                order = self._order = TransactionOrder(begin.xid, begin.final_lsn, commit_ts_us)
            self._tx = TxContext(
                xid=begin.xid,
                commit_lsn=begin.final_lsn,
                commit_ts_us=commit_ts_us,
                last_commit_lsn=self._last_commit_lsn,
                order=None if order is None else order.next,
            )
            self._order_lsn = begin.final_lsn
            self._lsn_header = lsn_header(begin.final_lsn)
            self._index = 0
            return []
        if kind is Commit:
            return self._commit(cast(Commit, msg), lsn)
        if kind is Truncate:
            return self._truncate(cast(Truncate, msg), lsn, now_us)
        if kind is LogicalMessage:
            return self._message(cast(LogicalMessage, msg), lsn, now_us)
        if kind is Type:
            oid = cast(Type, msg).oid
            self._types.pop(oid, None)
            return [InvalidateType(oid)]
        if kind is Origin:
            return []  # origins carry nothing to publish
        if kind is Relation:
            raise TypeError("Relation messages go to ChangeRouter.relation, with their info")
        raise SourceError(
            f"unexpected pgoutput message {kind.__name__} at LSN {format_lsn(lsn)}:"
            " cdc does not request streaming or two-phase transactions",
            retryable=False,
        )

    def _unit(self, lsn: int) -> tuple[TxContext, Position, bool]:
        """The transaction, the position reached after this message, and whether it was
        published before (a committed Kafka transaction holds it)."""
        tx = self._tx
        if tx is None:
            raise SourceError(
                f"a change or transactional message outside a transaction at LSN"
                f" {format_lsn(lsn)}: the replication stream is out of order"
            )
        index = self._index
        self._index = index + 1
        order_lsn = self._order_lsn
        if self._resume is None and self._toast is None:  # the hot path: no identity needed
            return tx, Position(order_lsn, index + 1), False
        identity = Position(order_lsn, index)
        published = self._published(identity)
        if self._toast is not None:
            self._toast.at(identity)
        return tx, Position(order_lsn, index + 1), published

    def _headers(self) -> Headers:
        """The position headers of the message ``_unit`` just numbered (its identity)."""
        seq = self._index - 1
        if seq < _SEQ_CACHED:
            return (self._lsn_header, SEQ_HEADERS[seq])
        return (self._lsn_header, seq_header(seq))

    def _published(self, identity: Position) -> bool:
        """Whether the message ``identity`` is in a committed Kafka transaction already;
        the first one that is not ends the skipping (nothing later was published)."""
        resume = self._resume
        if resume is None:
            return False
        if identity < resume:
            return True
        self._resume = None
        return False

    def _change(self, msg: Insert | Update | Delete, lsn: int, now_us: int) -> list[Effect]:
        tx, reached, published = self._unit(lsn)
        oid = msg.relation.oid
        if oid == self._outbox_oid:
            return self._outbox_row(msg, reached, published)
        if oid == self._signal_oid:
            return self._signal_row(msg, tx, lsn, now_us, reached, published)
        order = self._order
        first = order is not None and not order.total
        seq = self._index - 1  # _headers(), inlined: the hot path
        headers = [self._lsn_header, SEQ_HEADERS[seq] if seq < _SEQ_CACHED else seq_header(seq)]
        records = self._encoder.encode(msg, tx, lsn, now_us, headers)
        window = self._window
        if window.window_table is not None:
            relation = msg.relation
            table = f"{relation.namespace}.{relation.name}"
            if table == window.window_table:
                window.change(table, records)
        events = self.events
        if not records:
            pass  # a row filter cdc evaluates kept the row out: no event, no BEGIN yet
        elif msg.__class__ is Insert:
            events["c"] += 1
        elif msg.__class__ is Update:
            if len(records) == KEY_CHANGE_RECORDS:  # published as a d and a c
                events["d"] += 1
                events["c"] += 1
            else:  # an update (one a row filter turned into a d or a c counts here too)
                events["u"] += 1
        else:
            events["d"] += 1
        if first and records:
            records = self._with_begin(records)
        if self._shapes and oid in self._shapes:
            return self._with_schema([oid], records, tx, lsn, now_us, reached, published=published)
        if published:
            return []
        return [Publish(records, reached)]

    def _truncate(self, msg: Truncate, lsn: int, now_us: int) -> list[Effect]:
        tx, reached, published = self._unit(lsn)
        special = (self._outbox_oid, self._signal_oid)
        relations = [r for r in msg.relations if r.oid not in special]
        if not relations:
            return []  # the outbox or signal table: nothing of it is published
        order = self._order
        first = order is not None and not order.total
        headers = self._headers()
        records = [self._encoder.table(r).truncate(tx, lsn, now_us, headers) for r in relations]
        window = self._window
        if window.window_table is not None:
            for relation in relations:
                window.truncate(f"{relation.namespace}.{relation.name}")
        self.events["t"] += len(records)
        if first:
            records = self._with_begin(records)
        if self._shapes:
            oids = [r.oid for r in relations]
            return self._with_schema(oids, records, tx, lsn, now_us, reached, published=published)
        if published:
            return []
        return [Publish(records, reached)]

    def _commit(self, commit: Commit, lsn: int) -> list[Effect]:
        if self._tx is None:
            raise SourceError(
                f"commit without a transaction at LSN {format_lsn(lsn)}:"
                " the replication stream is out of order"
            )
        self._tx = None
        self._last_commit_lsn = commit.commit_lsn
        commit_ts_us = commit.commit_ts + PG_EPOCH_UNIX_US
        self.last_commit_ts_us = commit_ts_us
        self.transactions += 1
        reached = Position(self._order_lsn, COMPLETE)
        effects: list[Effect] = []
        order, self._order = self._order, None
        if order is not None and order.total:
            # END is the Commit's own unit: published unless a committed Kafka transaction
            # already reached the end of this source transaction.
            assert self._transactions is not None
            if not self._published(Position(self._order_lsn, self._index)):
                effects.append(Publish([self._transactions.end(order)], reached))
        if self._resume is not None and reached >= self._resume:
            self._resume = None  # what follows was never published
        effects.append(SourceCommit(reached, commit.end_lsn, commit_ts_us))
        return effects

    def _with_begin(self, records: list[Record]) -> list[Record]:
        """The transaction's first data event's records, after its BEGIN record."""
        assert self._transactions is not None
        assert self._order is not None
        return [self._transactions.begin(self._order), *records]

    # --- schema changes -----------------------------------------------------------------

    def _with_schema(  # noqa: PLR0917 - private, called from two places
        self,
        oids: list[int],
        records: list[Record],
        tx: TxContext,
        lsn: int,
        now_us: int,
        reached: Position,
        *,
        published: bool,
    ) -> list[Effect]:
        """The data records of these relations, after the schema-change events of the
        shapes their Relation messages announced; the history is stored with them."""
        schema = self._schema
        assert schema is not None
        at = Position(reached.lsn, reached.seq - 1)  # this data event's identity
        announced: list[Effect] = []
        schema_records: list[Record] = []
        for oid in oids:
            shape = self._shapes.pop(oid, None)
            if shape is None:
                continue
            relation, info = shape
            key_columns = info.key_columns
            if key_columns is None:
                key_columns = tuple(c.name for c in relation.columns if c.is_key)
            pending = schema.observe(
                relation,
                key_columns,
                type_names=list(info.type_names),
                retention_topic=self._retention_topic(relation.namespace, relation.name),
                partitions=info.partitions,
                at=at,
                types=info.types,
                not_null=info.not_null,
            )
            if pending is not None:
                schema_records.extend(schema.records(pending, tx, lsn, now_us))
                announced.append(SchemaAnnounced(pending.change))
        if published:
            return []
        if not announced:
            return [Publish(records, reached)]
        return [
            Publish([*schema_records, *records], reached),
            SaveState(SCHEMA_STATE_KEY, schema.history.to_json()),
            *announced,
        ]

    # --- routed rows and messages -------------------------------------------------------

    def _outbox_row(
        self, msg: Insert | Update | Delete, reached: Position, published: bool
    ) -> list[Effect]:
        """A row of the outbox table: an insert is routed; updates and deletes are not
        (the pattern inserts events, and often deletes them right away)."""
        if msg.__class__ is not Insert:
            return []
        records = self._outbox.records(msg, self._outbox_json)
        if published:
            return []
        return [*self._ensure(records), Publish(records, reached)]

    def _signal_row(  # noqa: PLR0917 - private
        self,
        msg: Insert | Update | Delete,
        tx: TxContext,
        lsn: int,
        now_us: int,
        reached: Position,
        published: bool,
    ) -> list[Effect]:
        """A row inserted into the signal table (Debezium's id, type, data columns): a
        snapshot request, or a watermark written there (PostgreSQL < 14)."""
        if msg.__class__ is not Insert:
            return []
        names = [c.name for c in msg.relation.columns]
        values = dict(zip(names, msg.new, strict=True))
        signal_type, data = values.get("type"), values.get("data")
        if signal_type in ("snapshot-window-open", "snapshot-window-close"):
            if not isinstance(data, str) or not data:
                return []
            closed = self._window.watermark(data.encode(), tx, lsn, now_us)
            return self._chunk(closed, tx, lsn, now_us, reached, published)
        if signal_type == "execute-snapshot" and not published:
            signal = {"type": signal_type, "data": data if isinstance(data, str) else "{}"}
            tables = parse_signal(orjson.dumps(signal))
            if tables is not None:
                return [StartSnapshot(tuple(tables), "signal_table", lsn)]
        return []

    def _message(self, msg: LogicalMessage, lsn: int, now_us: int) -> list[Effect]:
        self.logical_messages += 1
        if not msg.transactional:
            return self._standalone_message(msg, lsn, now_us)
        tx, reached, published = self._unit(lsn)
        if msg.prefix == WATERMARK_PREFIX:
            closed = self._window.watermark(msg.content, tx, lsn, now_us)
            return self._chunk(closed, tx, lsn, now_us, reached, published)
        if msg.prefix == SIGNAL_PREFIX:
            tables = parse_signal(msg.content)
            if tables is None or published:
                return []
            return [StartSnapshot(tuple(tables), "logical_message", lsn)]
        record = self._messages.record(msg, tx, lsn, now_us)
        if record is None or published:
            return []
        return [*self._ensure([record]), Publish([record], reached)]

    def _standalone_message(self, msg: LogicalMessage, lsn: int, now_us: int) -> list[Effect]:
        """A non-transactional message: a unit of its own at its LSN (the walsender sends
        it as it decodes it, so in order with the commits around it), "committed" as it
        arrives (so the commit-to-durable histogram measures its delivery)."""
        lsn = msg.lsn
        reached = Position(lsn, COMPLETE)
        published = self._published(Position(lsn, 0))
        record = self._messages.record(msg, None, lsn, now_us)
        if published:
            return []
        effects: list[Effect] = []
        if record is not None:
            effects.extend(self._ensure([record]))
            effects.append(Publish([record], reached))
        effects.append(SourceCommit(reached, lsn, now_us))
        return effects

    def _chunk(  # noqa: PLR0917 - private
        self,
        closed: ChunkClosed | None,
        tx: TxContext,
        lsn: int,
        now_us: int,
        reached: Position,
        published: bool,
    ) -> list[Effect]:
        """A watermark: at a HIGH that closes the chunk in flight, its rows right here,
        after the schema-change event of their table if the history does not know the
        shape they were read with."""
        if closed is None or published:
            # Published before: only a stale watermark of a chunk the stored progress
            # already counts can be here, and the window ignores those.
            return []
        progress: list[Effect] = [
            SaveState(STATE_KEY, closed.state.to_json()),
            ChunkPublished(closed.table, closed.rows, closed.progress, closed.finished),
        ]
        announced = self._chunk_schema(closed.table, tx, lsn, now_us, reached)
        if announced is None:
            return [Publish(closed.records, reached), *progress]
        schema_records, change, history = announced
        return [
            Publish(chain(schema_records, closed.records), reached),
            SaveState(SCHEMA_STATE_KEY, history),
            *progress,
            SchemaAnnounced(change),
        ]

    def _chunk_schema(
        self, table: str | None, tx: TxContext, lsn: int, now_us: int, reached: Position
    ) -> tuple[list[Record], SchemaChange, bytes] | None:
        """The schema-change records of a chunk's table (``source.lsn``: the rows'), the
        change and the history to store, when the chunk's shape is new to the history."""
        schema = self._schema
        if schema is None or table is None:
            return None
        description = self._window.descriptions.get(table)
        if description is None:
            return None
        announced = schema.announce(
            description,
            at=Position(reached.lsn, reached.seq - 1),  # the watermark's identity
            tx=tx,
            lsn=lsn,
            now_us=now_us,
            snapshot="incremental",
        )
        if announced is None:
            return None
        last = self._relations.get(description.relation.oid)
        if last is not None:
            # The table's next streamed event has the last Relation's shape, which may not
            # be the chunk's: it is compared with the history again then.
            self._shapes.setdefault(description.relation.oid, last)
        return announced[0], announced[1], schema.history.to_json()

    def _ensure(self, records: Sequence[Record]) -> list[Effect]:
        new = tuple(dict.fromkeys(r.topic for r in records if r.topic not in self._known_topics))
        if not new:
            return []
        self._known_topics.update(new)
        return [EnsureTopics(new)]


# json and jsonb: an outbox payload of these types is published as the JSON it is.
_JSON = frozenset({114, 3802})
