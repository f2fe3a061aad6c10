"""The change router: which records each message produces, and at which position.

Driven with the pgoutput stream captured from a real PostgreSQL (tests/fixtures/pgoutput)
and with messages built here for the tables that are routed instead of captured (outbox,
signal table) and for the watermarks of incremental snapshots.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from cdc.config import MessagesConfig, OutboxConfig
from cdc.envelope import EnvelopeEncoder, TableEncoder
from cdc.errors import SourceError
from cdc.masking import TableControls
from cdc.positions import COMPLETE, Position
from cdc.protocol.messages import (
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    PgoutputMessage,
    Relation,
    ReplicaIdentity,
    StreamStart,
    Truncate,
    Update,
)
from cdc.protocol.pgoutput import PgoutputDecoder
from cdc.protocol.replication import PG_EPOCH_UNIX_US
from cdc.protocol.values import ValueOptions
from cdc.snapshots.state import STATE_KEY, ConnectorState, SnapshotProgress
from cdc.snapshots.window import ChunkRow, ChunkWindow
from cdc.stream.router import (
    ChangeRouter,
    ChunkPublished,
    Effect,
    EnsureTopics,
    InvalidateType,
    Publish,
    RelationInfo,
    SaveState,
    SchemaAnnounced,
    SourceCommit,
    StartSnapshot,
)
from cdc.stream.routing import MessageRouter, OutboxRouter
from cdc.stream.schema_changes import SCHEMA_STATE_KEY, SchemaChanges, TableDescription
from cdc.stream.schema_history import SchemaHistory
from cdc.stream.transactions import TransactionTopic

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "pgoutput"
NOW_US = 1_800_000_000_000_000

# --- the router under test ---------------------------------------------------------------


def make_router(
    *,
    resume: Position | None = None,
    outbox_table: str | None = "public.outbox",
    signal_table: str | None = "public.signals",
    schema_changes: str | None = None,
    history: SchemaHistory | None = None,
    window: ChunkWindow | None = None,
    transactions: bool = False,
    controls: dict[str, TableControls] | None = None,
) -> ChangeRouter:
    keys: dict[int, tuple[str, ...] | None] = {}
    types: dict[int, Any] = {}
    encoder = EnvelopeEncoder(
        connector="c",
        database="db",
        retention_topic=lambda s, t: f"c.{s}.{t}",
        compacted_topic=lambda s, t: f"c.{s}.{t}.latest",
        options=ValueOptions(),
        key_columns=lambda relation: keys.get(relation.oid),
        types=types.get,
        controls=controls,
    )
    schema = (
        None
        if schema_changes is None
        else SchemaChanges(
            connector="c", database="db", mode=schema_changes, history=history or SchemaHistory()
        )
    )
    return ChangeRouter(
        encoder=encoder,
        window=window or ChunkWindow(ConnectorState()),
        messages=MessageRouter(MessagesConfig(), connector="c", database="db"),
        outbox=OutboxRouter(OutboxConfig(table=outbox_table), connector="c"),
        signal_table=signal_table,
        schema_changes=schema,
        retention_topic=lambda s, t: f"c.{s}.{t}",
        known_topics=set(),
        keys=keys,
        types=types,
        resume=resume,
        transactions=TransactionTopic("c.transaction") if transactions else None,
    )


def run(router: ChangeRouter, messages: Sequence[tuple[int, PgoutputMessage]]) -> list[Effect]:
    effects: list[Effect] = []
    for lsn, message in messages:
        if isinstance(message, Relation):
            router.relation(message, info(message))
        else:
            # A chunk's records come lazily: take them now, as the sink would.
            effects.extend(
                Publish(list(effect.records), effect.reached)
                if isinstance(effect, Publish)
                else effect
                for effect in router.feed(message, lsn, NOW_US)
            )
    return effects


def info(relation: Relation, partitions: int = 1) -> RelationInfo:
    """What the edge would resolve (type names for schema-change events)."""
    return RelationInfo(type_names=tuple("text" for _ in relation.columns), partitions=partitions)


def publishes(effects: list[Effect]) -> list[Publish]:
    return [e for e in effects if isinstance(e, Publish)]


def commits(effects: list[Effect]) -> list[SourceCommit]:
    return [e for e in effects if isinstance(e, SourceCommit)]


def values(publish: Publish) -> list[Any]:
    return [None if r.value is None else orjson.loads(r.value) for r in publish.records]


# --- the captured stream -------------------------------------------------------------------


def golden_stream(last_file: str = "050-commit.bin") -> list[tuple[int, PgoutputMessage]]:
    """The captured messages up to ``last_file`` (before the streamed transactions), each
    with an LSN of its own, in order."""
    expected = json.loads((FIXTURES / "expected.json").read_text())
    decoder = PgoutputDecoder(expected["protocol_version"])
    stream = []
    for index, entry in enumerate(expected["messages"]):
        stream.append(
            (22_000_000 + index * 8, decoder.decode((FIXTURES / entry["file"]).read_bytes()))
        )
        if entry["file"] == last_file:
            break
    return stream


GOLDEN = golden_stream()
BEGINS = [m for _, m in GOLDEN if isinstance(m, Begin)]
COMMITS = [m for _, m in GOLDEN if isinstance(m, Commit)]
# Non-transactional messages are units of their own, at their LSN.
STANDALONE = [m.lsn for _, m in GOLDEN if isinstance(m, LogicalMessage) and not m.transactional]


def test_every_change_of_the_captured_stream_is_published_at_its_position() -> None:
    effects = run(make_router(), GOLDEN)
    reached = [p.reached for p in publishes(effects)]
    assert reached == sorted(reached)
    assert len(set(reached)) == len(reached)
    assert {r.lsn for r in reached} <= {b.final_lsn for b in BEGINS} | set(STANDALONE)
    for publish in publishes(effects):
        assert publish.reached.seq >= 1


def test_every_source_transaction_ends_with_its_commit_lsn_and_time() -> None:
    ends = [c for c in commits(run(make_router(), GOLDEN)) if c.reached.lsn not in STANDALONE]
    assert [(c.reached, c.end_lsn) for c in ends] == [
        (Position(b.final_lsn, COMPLETE), c.end_lsn) for b, c in zip(BEGINS, COMMITS, strict=True)
    ]
    assert [c.commit_ts_us for c in ends] == [c.commit_ts + PG_EPOCH_UNIX_US for c in COMMITS]


def test_the_captured_changes_become_debezium_events_and_compacted_rows() -> None:
    first = publishes(run(make_router(), GOLDEN[:5]))  # BEGIN, RELATION, 2 INSERTs, COMMIT
    assert [[r.topic for r in p.records] for p in first] == [
        ["c.public.items", "c.public.items.latest"],
        ["c.public.items", "c.public.items.latest"],
    ]
    event, row = values(first[0])
    assert event["op"] == "c"
    assert event["after"] == row
    assert event["source"]["txId"] == BEGINS[0].xid
    assert event["source"]["lsn"] == GOLDEN[2][0]


def test_the_captured_truncate_is_one_event_per_table_on_the_retention_topic() -> None:
    effects = run(make_router(), GOLDEN)
    truncates = [p for p in publishes(effects) if values(p)[0]["op"] == "t"]
    assert [[r.topic for r in p.records] for p in truncates] == [
        ["c.public.items", "c.public.events"],
        ["c.public.moods"],
    ]


def test_the_router_counts_events_and_transactions() -> None:
    router = make_router()
    run(router, GOLDEN)
    assert router.transactions == len(COMMITS)
    assert router.logical_messages == 2
    assert router.events["t"] == 3
    assert router.events["c"] >= 5


def test_types_are_invalidated_and_origins_ignored() -> None:
    effects = run(make_router(), GOLDEN)
    assert len([e for e in effects if isinstance(e, InvalidateType)]) == 2


# --- exactly_once: resuming after a crash ----------------------------------------------------


def test_resume_skips_exactly_the_messages_a_committed_transaction_holds() -> None:
    whole = publishes(run(make_router(), GOLDEN))
    stored = whole[0].reached  # the first insert of the first transaction was committed
    resumed = run(make_router(resume=stored), GOLDEN)
    assert publishes(resumed) == whole[1:]
    assert commits(resumed) == commits(run(make_router(), GOLDEN))


def test_resume_past_whole_transactions_publishes_only_what_follows() -> None:
    whole = publishes(run(make_router(), GOLDEN))
    stored = Position(BEGINS[2].final_lsn, COMPLETE)
    resumed = publishes(run(make_router(resume=stored), GOLDEN))
    assert resumed == [p for p in whole if p.reached.lsn > stored.lsn]


def test_resume_at_a_standalone_message_skips_it() -> None:
    stream = [(22_300_000, LogicalMessage(None, False, 22_300_000, "app", b"x"))]
    assert run(make_router(resume=Position(22_300_000, COMPLETE)), stream) == []
    published = run(make_router(resume=Position(22_200_000, COMPLETE)), stream)
    assert [type(e) for e in published] == [EnsureTopics, Publish, SourceCommit]


def test_an_empty_transaction_after_the_resume_point_ends_the_skipping() -> None:
    router = make_router(resume=Position(100, COMPLETE))
    stream: list[tuple[int, PgoutputMessage]] = [
        (200, Begin(300, 0, 7)),
        (300, Commit(0, 300, 350, 0)),
        (400, Begin(500, 0, 8)),
        (410, _relation()),
        (420, _insert(1)),
        (500, Commit(0, 500, 550, 0)),
    ]
    assert [p.reached for p in publishes(run(router, stream))] == [Position(500, 1)]


# --- tables routed instead of captured -------------------------------------------------------

ITEMS_OID, OUTBOX_OID, SIGNALS_OID = 1, 2, 3


def _relation(
    oid: int = ITEMS_OID, name: str = "items", columns: tuple[str, ...] = ("id", "v")
) -> Relation:
    return Relation(
        None,
        oid,
        "public",
        name,
        ReplicaIdentity.DEFAULT,
        tuple(
            Column(1 if i == 0 else 0, c, 20 if i == 0 else 25, -1) for i, c in enumerate(columns)
        ),
    )


OUTBOX = _relation(OUTBOX_OID, "outbox", ("id", "aggregatetype", "aggregateid", "type", "payload"))
SIGNALS = _relation(SIGNALS_OID, "signals", ("id", "type", "data"))
ITEMS = _relation()


def _insert(key: int, relation: Relation = ITEMS) -> Insert:
    return Insert(None, relation, (str(key), f"v{key}"))


def _tx(*changes: PgoutputMessage, lsn: int = 1000) -> list[tuple[int, PgoutputMessage]]:
    return [
        (lsn, Begin(lsn + 100, 0, 42)),
        *((lsn + 10 + i, change) for i, change in enumerate(changes)),
        (lsn + 100, Commit(0, lsn + 100, lsn + 150, 0)),
    ]


def _with_relations(*messages: tuple[int, PgoutputMessage]) -> list[tuple[int, PgoutputMessage]]:
    return [(1, ITEMS), (2, OUTBOX), (3, SIGNALS), *messages]


def test_truncating_the_outbox_or_signal_table_publishes_nothing() -> None:
    """Regression: a TRUNCATE of these tables made a record for a topic never created:
    delivery failed, the connector restarted on the same TRUNCATE, forever."""
    effects = run(make_router(), _with_relations(*_tx(Truncate(None, 0, (OUTBOX, SIGNALS)))))
    assert publishes(effects) == []
    assert len(commits(effects)) == 1


def test_truncating_the_outbox_with_a_captured_table_publishes_only_the_captured_one() -> None:
    effects = run(make_router(), _with_relations(*_tx(Truncate(None, 0, (OUTBOX, ITEMS)))))
    (publish,) = publishes(effects)
    assert [r.topic for r in publish.records] == ["c.public.items"]


def test_an_outbox_insert_is_routed_and_its_topic_made_before_its_first_record() -> None:
    rows = [Insert(None, OUTBOX, ("1", "order", "o-1", "created", "{}")) for _ in range(2)]
    effects = run(make_router(), _with_relations(*_tx(*rows)))
    assert [type(e) for e in effects] == [EnsureTopics, Publish, Publish, SourceCommit]
    assert effects[0] == EnsureTopics(("outbox.event.order",))


def test_outbox_updates_and_deletes_are_not_routed() -> None:
    changes: list[PgoutputMessage] = [
        Update(None, OUTBOX, None, None, ("1", "order", "o-1", "created", "{}")),
        Delete(None, OUTBOX, "K", ("1", None, None, None, None)),
    ]
    assert publishes(run(make_router(), _with_relations(*_tx(*changes)))) == []


def test_a_signal_row_starts_a_snapshot() -> None:
    signal = Insert(None, SIGNALS, ("s1", "execute-snapshot", '{"data-collections": ["items"]}'))
    effects = run(make_router(), _with_relations(*_tx(signal)))
    assert StartSnapshot(("public.items",), "signal_table", 1010) in effects


@pytest.mark.parametrize(
    "row",
    [
        ("s1", "execute-snapshot", "not json"),
        ("s1", "log", "{}"),
        ("s1", "snapshot-window-open", None),
        ("s1", "snapshot-window-close", ""),
    ],
)
def test_other_signal_rows_do_nothing(row: tuple[str | None, ...]) -> None:
    effects = run(make_router(), _with_relations(*_tx(Insert(None, SIGNALS, row))))
    assert [e for e in effects if not isinstance(e, SourceCommit)] == []


def test_signal_table_updates_and_deletes_do_nothing() -> None:
    changes = [Delete(None, SIGNALS, "K", ("s1", None, None))]
    assert publishes(run(make_router(), _with_relations(*_tx(*changes)))) == []


def test_a_signal_already_published_does_not_start_a_snapshot_again() -> None:
    signal = Insert(None, SIGNALS, ("s1", "execute-snapshot", "{}"))
    stream = _with_relations(*_tx(signal))
    assert not [
        e
        for e in run(make_router(resume=Position(1100, 1)), stream)
        if isinstance(e, StartSnapshot)
    ]


# --- incremental snapshot chunks ---------------------------------------------------------


def _window_with_chunk(rows: int = 2) -> ChunkWindow:
    """A window whose snapshot of public.items has read chunk 0 (rows 1..rows)."""
    window = ChunkWindow(ConnectorState())
    window.begin(
        SnapshotProgress(snapshot_id="s", kind="incremental", tables=("public.items",)),
        chunk_rows=10,
    )
    assert window.snapshot is not None
    request = window.snapshot.next_chunk()
    assert request is not None
    encoder: TableEncoder = make_router().__dict__["_encoder"].table(ITEMS)
    window.encoders["public.items"] = encoder
    chunk: list[tuple[bytes, ChunkRow]] = []
    for key in range(1, rows + 1):
        row = encoder.row((str(key), f"r{key}"), 0)
        record_key = encoder.key(row)
        assert record_key is not None
        chunk.append((record_key, (record_key, row, None)))
    window.snapshot.chunk_read(request.chunk_id, chunk, None, exhausted=True)
    window.window_table = "public.items"
    return window


def _mark(kind: str) -> bytes:
    return orjson.dumps({"snapshot": "s", "chunk": 0, "kind": kind})


def test_a_high_watermark_publishes_the_chunk_rows_not_changed_in_the_window() -> None:
    window = _window_with_chunk(rows=2)
    stream = _with_relations(
        *_tx(
            LogicalMessage(1, True, 1, "cdc.watermark", _mark("low")),
            Update(None, ITEMS, None, None, ("2", "changed")),
            LogicalMessage(1, True, 2, "cdc.watermark", _mark("high")),
        )
    )
    effects = run(make_router(window=window), stream)
    chunk = [p for p in publishes(effects) if values(p)[0]["op"] == "r"]
    (publish,) = chunk
    assert [orjson.loads(r.key or b"") for r in publish.records] == [{"id": 1}, {"id": 1}]
    saved = [e for e in effects if isinstance(e, SaveState)]
    assert [s.key for s in saved] == [STATE_KEY]
    assert ConnectorState.from_json(saved[0].value).incremental is None  # finished
    (done,) = [e for e in effects if isinstance(e, ChunkPublished)]
    assert (done.table, done.rows, done.finished) == ("public.items", 1, True)


def test_watermarks_written_as_signal_rows_close_the_chunk_too() -> None:
    window = _window_with_chunk(rows=1)
    stream = _with_relations(
        *_tx(
            Insert(None, SIGNALS, ("w1", "snapshot-window-open", _mark("low").decode())),
            Insert(None, SIGNALS, ("w2", "snapshot-window-close", _mark("high").decode())),
        )
    )
    effects = run(make_router(window=window), stream)
    assert len([e for e in effects if isinstance(e, ChunkPublished)]) == 1


def test_a_truncate_in_the_window_drops_the_chunk() -> None:
    window = _window_with_chunk(rows=2)
    stream = _with_relations(
        *_tx(
            LogicalMessage(1, True, 1, "cdc.watermark", _mark("low")),
            Truncate(None, 0, (ITEMS,)),
            LogicalMessage(1, True, 2, "cdc.watermark", _mark("high")),
        )
    )
    effects = run(make_router(window=window), stream)
    (done,) = [e for e in effects if isinstance(e, ChunkPublished)]
    assert done.rows == 0


def test_a_chunk_already_published_is_not_published_again() -> None:
    window = _window_with_chunk(rows=1)
    stream = _with_relations(
        *_tx(
            LogicalMessage(1, True, 1, "cdc.watermark", _mark("low")),
            LogicalMessage(1, True, 2, "cdc.watermark", _mark("high")),
        )
    )
    assert publishes(run(make_router(window=window, resume=Position(1100, 2)), stream)) == []


def test_a_signal_message_starts_a_snapshot_and_a_stale_watermark_does_nothing() -> None:
    signal = orjson.dumps({"type": "execute-snapshot", "data": {"data-collections": []}})
    stream = _tx(
        LogicalMessage(1, True, 1, "cdc.signal", signal),
        LogicalMessage(1, True, 2, "cdc.signal", b"{}"),
        LogicalMessage(1, True, 3, "cdc.watermark", _mark("high")),
    )
    effects = run(make_router(), stream)
    assert [e for e in effects if not isinstance(e, SourceCommit)] == [
        StartSnapshot((), "logical_message", 1010)
    ]


def test_a_signal_message_already_published_is_not_acted_on_again() -> None:
    signal = orjson.dumps({"type": "execute-snapshot", "data": {}})
    stream = _tx(LogicalMessage(1, True, 1, "cdc.signal", signal))
    assert run(make_router(resume=Position(1100, 1)), stream) == [
        commits(run(make_router(), stream))[0]
    ]


# --- logical messages ------------------------------------------------------------------------


def test_a_transactional_message_is_published_in_order_with_the_data() -> None:
    stream = _tx(
        LogicalMessage(1, True, 1, "app", b"hello"),
        LogicalMessage(1, True, 2, "app", b"again"),
        LogicalMessage(1, True, 3, "cdc.internal", b"never"),
    )
    effects = run(make_router(), stream)
    assert [type(e) for e in effects] == [EnsureTopics, Publish, Publish, SourceCommit]
    assert [p.reached for p in publishes(effects)] == [Position(1100, 1), Position(1100, 2)]


def test_a_message_already_published_is_skipped_on_resume() -> None:
    stream = _tx(LogicalMessage(1, True, 1, "app", b"hello"))
    assert publishes(run(make_router(resume=Position(1100, 1)), stream)) == []


def test_a_standalone_message_is_a_unit_of_its_own() -> None:
    effects = run(make_router(), [(4990, LogicalMessage(None, False, 5000, "app", b"x"))])
    assert [type(e) for e in effects] == [EnsureTopics, Publish, SourceCommit]
    assert commits(effects) == [SourceCommit(Position(5000, COMPLETE), 5000, NOW_US)]


def test_a_standalone_message_not_published_still_ends_its_unit() -> None:
    effects = run(make_router(), [(5000, LogicalMessage(None, False, 5000, "cdc.x", b"x"))])
    assert effects == [SourceCommit(Position(5000, COMPLETE), 5000, NOW_US)]


# --- schema changes ------------------------------------------------------------------------


def test_a_new_shape_is_announced_before_its_first_data_event_and_stored_with_it() -> None:
    effects = run(make_router(schema_changes="topic"), [(1, ITEMS), *_tx(_insert(1), _insert(2))])
    first = effects[0]
    assert isinstance(first, Publish)
    assert [r.topic for r in first.records] == [
        "c.__schema",
        "c.public.items",
        "c.public.items.latest",
    ]
    assert isinstance(effects[1], SaveState)
    assert effects[1].key == SCHEMA_STATE_KEY
    assert isinstance(effects[2], SchemaAnnounced)
    assert len(publishes(effects)) == 2  # the second insert: no event again


def test_in_band_schema_events_go_to_every_partition_of_the_retention_topic() -> None:
    router = make_router(schema_changes="inband")
    router.relation(ITEMS, info(ITEMS, partitions=3))
    effects = run(router, _tx(_insert(1)))
    first = effects[0]
    assert isinstance(first, Publish)
    assert [(r.topic, r.partition) for r in list(first.records)[:3]] == [
        ("c.public.items", 0),
        ("c.public.items", 1),
        ("c.public.items", 2),
    ]


def test_a_shape_replayed_from_before_the_latest_announcement_is_not_a_change() -> None:
    """After a restart the stream replays from the slot, which may lie before shapes the
    stored history already holds: an older shape then is not a change back."""
    later = _relation(columns=("id", "v", "w"))
    announced = make_router(schema_changes="topic")
    run(
        announced,
        [
            (1, ITEMS),
            *_tx(_insert(1)),
            (2, later),
            *_tx(Insert(None, later, ("2", "a", "b")), lsn=3000),
        ],
    )
    history = announced.__dict__["_schema"].history
    replay = make_router(schema_changes="topic", history=SchemaHistory.from_json(history.to_json()))
    effects = run(replay, [(1, ITEMS), *_tx(_insert(1))])
    assert [e for e in effects if isinstance(e, SchemaAnnounced)] == []


def test_a_shape_already_published_is_not_announced_again_on_resume() -> None:
    effects = run(
        make_router(schema_changes="topic", resume=Position(1100, 1)),
        [(1, ITEMS), *_tx(_insert(1))],
    )
    assert publishes(effects) == []


def test_a_truncate_announces_a_new_shape_first() -> None:
    effects = run(
        make_router(schema_changes="topic"), [(1, ITEMS), *_tx(Truncate(None, 0, (ITEMS,)))]
    )
    assert isinstance(effects[2], SchemaAnnounced)


def test_schema_changes_off_announce_nothing() -> None:
    effects = run(make_router(schema_changes="off"), [(1, ITEMS), *_tx(_insert(1))])
    assert [e for e in effects if isinstance(e, SchemaAnnounced)] == []


# --- key changes, out-of-order streams ---------------------------------------------------------


def test_a_key_change_counts_as_a_delete_and_a_create() -> None:
    router = make_router()
    run(router, [(1, ITEMS), *_tx(Update(None, ITEMS, "K", ("1", None), ("2", "v")))])
    assert (router.events["d"], router.events["c"], router.events["u"]) == (1, 1, 0)


def test_deletes_are_counted() -> None:
    router = make_router()
    run(router, [(1, ITEMS), *_tx(Delete(None, ITEMS, "K", ("1", None)))])
    assert router.events["d"] == 1


@pytest.mark.parametrize(
    "message",
    [_insert(1), LogicalMessage(1, True, 1, "app", b"x"), Commit(0, 1, 2, 0)],
)
def test_a_change_outside_a_transaction_is_an_out_of_order_stream(message: PgoutputMessage) -> None:
    router = make_router()
    router.relation(ITEMS, RelationInfo())
    with pytest.raises(SourceError, match="out of order"):
        router.feed(message, 0x1000, NOW_US)


def test_streamed_transactions_are_refused() -> None:
    with pytest.raises(SourceError, match="does not request streaming"):
        make_router().feed(StreamStart(1, True), 1, NOW_US)


def test_relations_go_through_their_own_call() -> None:
    with pytest.raises(TypeError):
        make_router().feed(ITEMS, 1, NOW_US)


# --- the rest of the router's state -------------------------------------------------------------


def test_in_transaction_is_true_between_begin_and_commit() -> None:
    router = make_router()
    seen = []
    for lsn, message in _tx():
        router.feed(message, lsn, NOW_US)
        seen.append(router.in_transaction)
    assert seen == [True, False]


class Toast:
    def __init__(self) -> None:
        self.positions: list[Position | None] = []

    def at(self, position: Position | None) -> None:
        self.positions.append(position)


def test_the_toast_memory_is_told_the_position_of_each_unit() -> None:
    toast = Toast()
    router = make_router()
    router.__dict__["_toast"] = toast
    run(router, [(1, ITEMS), *_tx(_insert(1), _insert(2))])
    assert toast.positions == [Position(1100, 0), Position(1100, 1)]


def test_changes_of_another_table_do_not_touch_the_window() -> None:
    window = _window_with_chunk(rows=1)
    other = _relation(9, "other")
    stream = [
        (1, other),
        *_tx(
            LogicalMessage(1, True, 1, "cdc.watermark", _mark("low")),
            Insert(None, other, ("1", "x")),
            LogicalMessage(1, True, 2, "cdc.watermark", _mark("high")),
        ),
    ]
    effects = run(make_router(window=window), stream)
    (done,) = [e for e in effects if isinstance(e, ChunkPublished)]
    assert done.rows == 1


def test_a_truncate_already_published_is_skipped_on_resume() -> None:
    stream = [(1, ITEMS), *_tx(Truncate(None, 0, (ITEMS,)))]
    assert publishes(run(make_router(resume=Position(1100, 1)), stream)) == []


def test_a_truncate_of_tables_of_which_one_changed_shape_announces_that_one() -> None:
    other = _relation(9, "other")
    router = make_router(schema_changes="topic")
    run(router, [(1, ITEMS), *_tx(_insert(1))])
    effects = run(router, [(2, other), *_tx(Truncate(None, 0, (ITEMS, other)), lsn=3000)])
    assert [e.change.schema.table for e in effects if isinstance(e, SchemaAnnounced)] == [
        "public.other"
    ]


def test_the_edge_given_key_is_the_key_of_schema_events() -> None:
    router = make_router(schema_changes="topic")
    full = Relation(
        None,
        5,
        "public",
        "full",
        ReplicaIdentity.FULL,
        (Column(1, "id", 20, -1), Column(1, "v", 25, -1)),
    )
    router.relation(full, RelationInfo(key_columns=("id",), type_names=("bigint", "text")))
    effects = run(router, _tx(Insert(None, full, ("1", "x"))))
    (announced,) = [e for e in effects if isinstance(e, SchemaAnnounced)]
    assert announced.change.schema.key_columns == ("id",)


def test_an_outbox_row_already_published_is_skipped_on_resume() -> None:
    row = Insert(None, OUTBOX, ("1", "order", "o-1", "created", "{}"))
    assert run(make_router(resume=Position(1100, 1)), _with_relations(*_tx(row))) == [
        SourceCommit(Position(1100, COMPLETE), 1150, PG_EPOCH_UNIX_US)
    ]


# --- schema events of incremental snapshot chunks --------------------------------------------


def _described(window: ChunkWindow, relation: Relation = ITEMS) -> ChunkWindow:
    """The window, with the description the snapshot driver gives of the chunk's table."""
    window.descriptions["public.items"] = TableDescription(
        relation=relation,
        key_columns=("id",),
        type_names=tuple("bigint" if c.type_oid == 20 else "text" for c in relation.columns),
        not_null=tuple(c.is_key for c in relation.columns),
        retention_topic="c.public.items",
    )
    return window


def _chunk_stream(*, lsn: int = 1000) -> list[tuple[int, PgoutputMessage]]:
    """LOW and HIGH of chunk 0, in one transaction; the HIGH watermark at lsn + 11."""
    return _tx(
        LogicalMessage(lsn, True, 1, "cdc.watermark", _mark("low")),
        LogicalMessage(lsn, True, 2, "cdc.watermark", _mark("high")),
        lsn=lsn,
    )


def test_a_chunk_of_a_table_the_stream_never_touched_is_announced_before_its_rows() -> None:
    window = _described(_window_with_chunk(rows=2))
    stream = [(2, OUTBOX), (3, SIGNALS), *_chunk_stream()]
    effects = run(make_router(schema_changes="topic", window=window), stream)
    (publish,) = publishes(effects)
    records = list(publish.records)
    assert [r.topic for r in records] == [
        "c.__schema",
        *["c.public.items", "c.public.items.latest"] * 2,
    ]
    schema = orjson.loads(records[0].value or b"")
    rows = [orjson.loads(r.value or b"") for r in records[1::2]]
    assert (schema["schema_version"], schema["source"]["snapshot"]) == (1, "incremental")
    assert {r["source"]["lsn"] for r in rows} == {schema["source"]["lsn"]} == {1011}
    assert [c["not_null"] for c in schema["columns"]] == [True, False]
    kinds = [(type(e).__name__, getattr(e, "key", None)) for e in effects]
    assert kinds[1:4] == [
        ("SaveState", SCHEMA_STATE_KEY),
        ("SaveState", STATE_KEY),
        ("ChunkPublished", None),
    ]
    (announced,) = [e for e in effects if isinstance(e, SchemaAnnounced)]
    assert announced.change.version == 1

    # The stream's first change of the table afterwards has the same shape: no event.
    router = make_router(schema_changes="topic", window=_described(_window_with_chunk(rows=1)))
    effects = run(router, [*_chunk_stream(), (5, ITEMS), *_tx(_insert(9), lsn=2000)])
    assert [e.change.version for e in effects if isinstance(e, SchemaAnnounced)] == [1]


def test_a_chunk_of_a_shape_the_history_knows_is_not_announced() -> None:
    router = make_router(schema_changes="topic", window=_described(_window_with_chunk(rows=1)))
    effects = run(router, [(1, ITEMS), *_tx(_insert(1), lsn=500), *_chunk_stream()])
    assert [e.change.version for e in effects if isinstance(e, SchemaAnnounced)] == [1]
    chunk = publishes(effects)[-1]
    assert [r.topic for r in chunk.records] == ["c.public.items", "c.public.items.latest"]


def test_a_chunk_without_a_description_announces_nothing() -> None:
    effects = run(
        make_router(schema_changes="topic", window=_window_with_chunk(rows=1)), _chunk_stream()
    )
    assert [e for e in effects if isinstance(e, SchemaAnnounced)] == []
    assert [s.key for s in effects if isinstance(s, SaveState)] == [STATE_KEY]


def test_after_a_chunk_announced_another_shape_the_stream_s_next_event_is_compared_again() -> None:
    """The chunk rows were read with a shape other than the stream's last Relation (a DDL
    in between): each is announced before the events that have it."""
    wider = _relation(columns=("id", "v", "w"))
    router = make_router(schema_changes="topic", window=_described(_window_with_chunk(1), wider))
    effects = run(
        router,
        [(1, ITEMS), *_tx(_insert(1), lsn=500), *_chunk_stream(), *_tx(_insert(2), lsn=2000)],
    )
    announced = [e.change for e in effects if isinstance(e, SchemaAnnounced)]
    assert [(c.version, len(c.schema.columns)) for c in announced] == [(1, 2), (2, 3), (3, 2)]
    assert [e.change.added for e in effects if isinstance(e, SchemaAnnounced)][1] == ("w",)


# --- position headers ------------------------------------------------------------------------


def _positions(publish: Publish) -> list[tuple[int, int] | None]:
    """(cdc.lsn, cdc.seq) of each record, as a consumer parses them."""
    out: list[tuple[int, int] | None] = []
    for record in publish.records:
        headers = dict(record.headers or ())
        out.append(None if not headers else (int(headers["cdc.lsn"]), int(headers["cdc.seq"])))
    return out


def test_every_record_of_a_change_carries_the_commit_lsn_and_its_message_s_index() -> None:
    stream = [
        (1, ITEMS),
        *_tx(
            _insert(1),
            Update(None, ITEMS, "K", ("1", None), ("2", "v")),  # d + tombstone + c + row
            Delete(None, ITEMS, "K", ("2", None)),
            Truncate(None, 0, (ITEMS,)),
        ),
    ]
    published = publishes(run(make_router(), stream))
    assert [_positions(p) for p in published] == [
        [(1100, 0)] * 2,
        [(1100, 1)] * 4,
        [(1100, 2)] * 2,
        [(1100, 3)],
    ]
    assert [p.reached for p in published] == [Position(1100, i) for i in (1, 2, 3, 4)]


def test_position_headers_follow_commit_order_across_the_captured_stream() -> None:
    positions = [
        position
        for publish in publishes(run(make_router(), GOLDEN))
        for position in _positions(publish)
        if position is not None
    ]
    assert positions == sorted(positions)
    assert {lsn for lsn, _ in positions} <= {b.final_lsn for b in BEGINS}


def test_indexes_past_the_prebuilt_headers_are_built_as_needed() -> None:
    many = [_insert(i) for i in range(1025)]
    stream = [(1, ITEMS), *_tx(*many, Truncate(None, 0, (ITEMS,)))]
    published = publishes(run(make_router(), stream))
    assert _positions(published[1024]) == [(1100, 1024)] * 2
    assert _positions(published[1025]) == [(1100, 1025)]


def test_chunk_rows_are_as_of_before_the_high_watermark_s_commit() -> None:
    window = _window_with_chunk(rows=2)
    stream = _with_relations(
        *_tx(LogicalMessage(1, True, 1, "cdc.watermark", _mark("low"))),
        *_tx(LogicalMessage(1, True, 2, "cdc.watermark", _mark("high")), lsn=2000),
    )
    (chunk,) = publishes(run(make_router(window=window, transactions=True), stream))
    assert _positions(chunk) == [(2100, -1)] * 4
    assert [v["transaction"] for v in values(chunk)[::2]] == [None, None]


def test_routed_rows_and_messages_carry_only_their_own_headers() -> None:
    stream = _with_relations(
        *_tx(
            Insert(None, OUTBOX, ("1", "order", "o-1", "created", "{}")),
            LogicalMessage(1, True, 1, "app", b"x"),
        )
    )
    outbox, message = publishes(run(make_router(), stream))
    assert [r.headers for r in outbox.records] == [(("id", b"1"), ("type", b"created"))]
    assert [r.headers for r in message.records] == [None]


# --- transaction metadata ---------------------------------------------------------------------

ORDERS = _relation(4, "orders")


def _blocks(publish: Publish) -> list[Any]:
    return [v["transaction"] for v in values(publish) if v is not None and "op" in v]


def test_a_transaction_is_framed_by_begin_and_end_with_its_events_numbered() -> None:
    stream = [
        (1, ITEMS),
        (2, ORDERS),
        *_tx(
            _insert(1),
            Insert(None, ORDERS, ("7", "x")),
            Update(None, ITEMS, "K", ("1", None), ("2", "v")),  # a d and a c: two events
        ),
    ]
    effects = run(make_router(transactions=True), stream)
    first, second, key_change, end = publishes(effects)
    begin = first.records[0]  # type: ignore[index]
    assert (begin.topic, begin.key) == ("c.transaction", b'{"id":"42:1100"}')
    assert values(first)[0] == {
        "status": "BEGIN",
        "id": "42:1100",
        "ts_ms": PG_EPOCH_UNIX_US // 1000,
        "event_count": None,
        "data_collections": None,
    }
    assert begin.headers == (("cdc.lsn", b"1100"),)
    assert [r.topic for r in first.records][1:] == ["c.public.items", "c.public.items.latest"]
    blocks = _blocks(first) + _blocks(second) + _blocks(key_change)
    assert [(b["id"], b["total_order"], b["data_collection_order"]) for b in blocks] == [
        ("42:1100", 1, 1),
        ("42:1100", 2, 1),
        ("42:1100", 3, 2),
        ("42:1100", 4, 3),
    ]
    assert values(end) == [
        {
            "status": "END",
            "id": "42:1100",
            "ts_ms": PG_EPOCH_UNIX_US // 1000,
            "event_count": 4,
            "data_collections": [
                {"data_collection": "public.items", "event_count": 3},
                {"data_collection": "public.orders", "event_count": 1},
            ],
        }
    ]
    assert end.reached == Position(1100, COMPLETE)
    assert effects[-2:] == [end, SourceCommit(Position(1100, COMPLETE), 1150, PG_EPOCH_UNIX_US)]


def test_a_truncate_may_open_a_transaction_and_counts_an_event_per_table() -> None:
    stream = [(1, ITEMS), (2, ORDERS), *_tx(Truncate(None, 0, (ITEMS, ORDERS)), _insert(1))]
    truncate, insert, end = publishes(run(make_router(transactions=True), stream))
    assert [r.topic for r in truncate.records] == [
        "c.transaction",
        "c.public.items",
        "c.public.orders",
    ]
    assert [r.topic for r in insert.records] == ["c.public.items", "c.public.items.latest"]
    truncated = Truncate(None, 0, (ORDERS,))
    later = publishes(
        run(make_router(transactions=True), [(1, ITEMS), *_tx(_insert(1), truncated)])
    )
    assert [r.topic for r in later[1].records] == ["c.public.orders"]
    assert values(end)[0]["event_count"] == 3


def test_a_transaction_without_data_events_gets_no_begin_or_end() -> None:
    stream = _with_relations(
        *_tx(
            Insert(None, OUTBOX, ("1", "order", "o-1", "created", "{}")),
            LogicalMessage(1, True, 1, "app", b"x"),
        )
    )
    effects = run(make_router(transactions=True), stream)
    topics = [r.topic for p in publishes(effects) for r in p.records]
    assert topics == ["outbox.event.order", "c.messages"]


def test_a_new_shape_s_schema_event_goes_with_the_begin_and_the_first_event() -> None:
    effects = run(
        make_router(schema_changes="topic", transactions=True), [(1, ITEMS), *_tx(_insert(1))]
    )
    first = publishes(effects)[0]
    assert [r.topic for r in first.records] == [
        "c.__schema",
        "c.transaction",
        "c.public.items",
        "c.public.items.latest",
    ]


def test_without_transaction_metadata_the_block_is_null_and_nothing_frames_it() -> None:
    effects = run(make_router(), [(1, ITEMS), *_tx(_insert(1))])
    (publish,) = publishes(effects)
    assert _blocks(publish) == [None]


TWO = [(1, ITEMS), *_tx(_insert(1), _insert(2))]


def test_resuming_inside_a_transaction_publishes_end_but_not_begin_again() -> None:
    effects = run(make_router(transactions=True, resume=Position(1100, 1)), TWO)
    second, end = publishes(effects)
    assert [r.topic for r in second.records] == ["c.public.items", "c.public.items.latest"]
    assert _blocks(second)[0]["total_order"] == 2
    assert values(end)[0]["event_count"] == 2


def test_resuming_after_the_last_event_publishes_only_end() -> None:
    (end,) = publishes(run(make_router(transactions=True, resume=Position(1100, 2)), TWO))
    assert values(end)[0]["status"] == "END"


def test_resuming_after_a_whole_transaction_publishes_nothing_of_it() -> None:
    resumed = make_router(transactions=True, resume=Position(1100, COMPLETE))
    effects = run(resumed, [*TWO, *_tx(_insert(3), lsn=3000)])
    assert [values(p)[0].get("status") for p in publishes(effects)] == ["BEGIN", "END"]
    assert [p.reached.lsn for p in publishes(effects)] == [3100, 3100]


def test_a_row_kept_out_by_a_filter_cdc_evaluates_is_no_event_and_opens_no_transaction() -> None:
    """The first published event of a transaction gets its BEGIN record, not a row the
    filter dropped before it; the dropped row is not counted."""
    only_two = {
        "public.items": TableControls(table="public.items", row_filter="id = 2", filter_in_cdc=True)
    }
    router = make_router(transactions=True, controls=only_two)
    effects = run(router, [(1, ITEMS), *_tx(_insert(1), _insert(2))])
    published = publishes(effects)
    topics = [r.topic for p in published for r in p.records]
    assert topics.count("c.transaction") == 2  # one BEGIN, one END
    assert topics[:3] == ["c.transaction", "c.public.items", "c.public.items.latest"]
    assert router.events["c"] == 1
