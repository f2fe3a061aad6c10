"""The replay's pure core: record parsing, commit-order merging, per-key folding, DDL."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc.replay.batch import ApplyError, TableBatch, copy_value
from cdc.replay.ddl import DdlError, Target, alter_table, create_table, create_types
from cdc.replay.ordering import ChangeQueue, Until
from cdc.replay.records import Change, ChangeKind, RecordError, parse_change


def event(op: str, *, after: Any = None, before: Any = None, lsn: int = 100, **extra: Any) -> bytes:
    return orjson.dumps(
        {
            "before": before,
            "after": after,
            "source": {"schema": "public", "table": "t", "lsn": lsn, "ts_us": 5_000_000,
                       "snapshot": extra.pop("snapshot", "false")},
            "op": op,
            "transaction": extra.pop("transaction", None),
            **extra,
        }
    )  # fmt: skip


def headers(lsn: int, seq: int) -> list[tuple[str, bytes | None]]:
    return [("cdc.lsn", str(lsn).encode()), ("cdc.seq", str(seq).encode())]


def change(
    op: str = "c",
    *,
    key: int = 1,
    lsn: int = 100,
    seq: int = 0,
    partition: int = 0,
    offset: int = 0,
    row: dict[str, Any] | None = None,
    unavailable: list[str] | None = None,
    tx: str | None = None,
) -> Change:
    extra: dict[str, Any] = {}
    if unavailable:
        extra["unavailable_columns"] = unavailable
    if tx:
        extra["transaction"] = {"id": tx, "total_order": 1, "data_collection_order": 1}
    value = event(
        op,
        after=(row or {"id": key, "v": "x"}) if op in "cur" else None,
        before={"id": key, "v": None} if op == "d" else None,
        lsn=lsn,
        **extra,
    )
    return parse_change(
        "topic", partition, offset, orjson.dumps({"id": key}), value, headers(lsn, seq)
    )


# --- records ------------------------------------------------------------------------


def test_an_insert_record_becomes_an_upsert_at_its_position() -> None:
    c = change("c", key=3, lsn=200, seq=4)
    assert (c.kind, c.row, c.position, c.change_lsn) == (
        ChangeKind.UPSERT,
        {"id": 3, "v": "x"},
        (200, 4),
        200,
    )


def test_a_delete_record_carries_its_key() -> None:
    c = change("d", key=9)
    assert (c.kind, c.key_bytes) == (ChangeKind.DELETE, b'{"id":9}')


def test_unavailable_columns_are_kept() -> None:
    assert change("u", unavailable=["body"]).unavailable == ("body",)


def test_a_record_without_position_headers_is_refused_with_the_fix() -> None:
    with pytest.raises(RecordError, match=r"cdc\.lsn/cdc\.seq"):
        parse_change("t", 0, 5, b'{"id":1}', event("c", after={"id": 1}), None)


def test_a_record_that_is_not_json_is_refused_naming_topic_partition_offset() -> None:
    with pytest.raises(RecordError, match=r"t\[0\]@5"):
        parse_change("t", 0, 5, None, b"{nope", None)


def test_a_null_value_is_skipped() -> None:
    assert parse_change("t", 0, 5, None, None, None).kind is ChangeKind.SKIP


def test_initial_snapshot_reads_are_marked() -> None:
    c = parse_change("t", 0, 0, b'{"id":1}', event("r", after={"id": 1}, snapshot="true"),
                     headers(100, 0))  # fmt: skip
    assert c.initial_snapshot


# --- ordering -------------------------------------------------------------------------


def test_changes_are_merged_across_partitions_in_commit_order() -> None:
    queue = ChangeQueue(ordered=True)
    queue.add(change(lsn=300, partition=0, offset=0))
    queue.add(change(lsn=100, partition=1, offset=0))
    queue.add(change(lsn=200, partition=1, offset=1))
    queue.set_watermark((1000, 0))
    assert [c.lsn for c in queue.take(10)] == [100, 200, 300]


def test_nothing_at_or_after_the_watermark_is_taken() -> None:
    queue = ChangeQueue(ordered=True)
    queue.add(change(lsn=100, seq=0, partition=0, offset=0))
    queue.add(change(lsn=100, seq=1, partition=0, offset=1))
    queue.set_watermark((100, 1))
    assert [c.seq for c in queue.take(10)] == [0]
    assert len(queue) == 1


def test_without_a_watermark_only_initial_snapshot_rows_are_taken() -> None:
    queue = ChangeQueue(ordered=True)
    queue.add(
        parse_change(
            "topic", 0, 0, b'{"id":1}', event("r", after={"id": 1}, snapshot="true"), headers(50, 0)
        )
    )
    queue.add(change(lsn=100, partition=0, offset=1))  # fmt: skip
    assert [c.lsn for c in queue.take(10)] == [50]


def test_an_unordered_queue_takes_in_partition_order_without_a_watermark() -> None:
    queue = ChangeQueue(ordered=False)
    queue.add(change(lsn=300, partition=0, offset=0))
    queue.add(change(lsn=100, partition=1, offset=0))
    assert sorted(c.lsn for c in queue.take(10)) == [100, 300]


def test_until_an_lsn_stops_after_that_commit() -> None:
    queue = ChangeQueue(ordered=True, until=Until(lsn=200))
    for i, lsn in enumerate([100, 200, 300]):
        queue.add(change(lsn=lsn, offset=i))
    queue.set_watermark((1000, 0))
    assert [c.lsn for c in queue.take(10)] == [100, 200]
    assert queue.finished


def test_until_a_time_stops_at_the_first_later_commit() -> None:
    queue = ChangeQueue(ordered=True, until=Until(ts_us=4_000_000))
    queue.add(change(lsn=100))
    queue.set_watermark((1000, 0))
    assert queue.take(10) == []
    assert queue.finished


def test_a_transactional_queue_holds_a_transaction_until_its_end_count_is_met() -> None:
    queue = ChangeQueue(ordered=True, transactional=True)
    queue.add(change(lsn=100, seq=0, partition=0, offset=0, tx="7:100"))
    queue.set_watermark((1000, 0))
    queue.expect(100, 2)
    assert queue.take(10) == []
    queue.add(change(lsn=100, seq=1, partition=1, offset=0, tx="7:100"))
    assert [c.seq for c in queue.take(10)] == [0, 1]


def test_a_transactional_batch_ends_between_transactions() -> None:
    queue = ChangeQueue(ordered=True, transactional=True)
    for i in range(3):
        queue.add(change(lsn=100, seq=i, offset=i, tx="7:100"))
    queue.add(change(lsn=200, seq=0, offset=3, tx="8:200"))
    queue.expect(100, 3)
    queue.expect(200, 1)
    queue.set_watermark((1000, 0))
    assert [c.lsn for c in queue.take(2)] == [100, 100, 100]
    assert [c.lsn for c in queue.take(2)] == [200]


@dataclass
class _Stream:
    changes: list[tuple[int, int]] = field(default_factory=list)  # (partition, lsn)


@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=60),
    st.integers(1, 7),
    st.randoms(use_true_random=False),
)
def test_any_interleaving_of_partitions_is_taken_in_commit_order_as_queue_prefixes(
    partitions: list[int], limit: int, rnd: random.Random
) -> None:
    """Whatever order partitions are consumed in, take() hands out the global commit order
    and each partition's taken changes are a prefix of it (so offsets stay exact)."""
    per_partition: dict[int, list[Change]] = {}
    for lsn, p in enumerate(partitions, start=1):
        offset = len(per_partition.setdefault(p, []))
        per_partition[p].append(change(lsn=lsn * 10, partition=p, offset=offset, key=lsn))
    queue = ChangeQueue(ordered=True)
    cursors = dict.fromkeys(per_partition, 0)
    taken: list[Change] = []
    while any(cursors[p] < len(per_partition[p]) for p in per_partition):
        p = rnd.choice([p for p in per_partition if cursors[p] < len(per_partition[p])])
        queue.add(per_partition[p][cursors[p]])
        cursors[p] += 1
    queue.set_watermark((10**9, 0))
    while len(queue):
        taken.extend(queue.take(limit))
    assert [c.lsn for c in taken] == sorted(c.lsn for c in taken)
    for p, items in per_partition.items():
        assert [c.offset for c in taken if c.partition == p] == [c.offset for c in items]


# --- folding --------------------------------------------------------------------------


def batch() -> TableBatch:
    return TableBatch(table="public.t", columns=["id", "v"], key_columns=["id"],
                      converters=[lambda v: None if v is None else str(v)] * 2)  # fmt: skip


def test_the_last_change_of_a_key_wins() -> None:
    b = batch()
    b.add(change("c", key=1, row={"id": 1, "v": "a"}))
    b.add(change("u", key=1, row={"id": 1, "v": "b"}))
    assert b.writes().upserts == ["1\tb"]


def test_a_delete_after_an_insert_leaves_a_delete() -> None:
    b = batch()
    b.add(change("c", key=1))
    b.add(change("d", key=1))
    w = b.writes()
    assert (w.upserts, w.deletes) == ([], [("1",)])


def test_an_unchanged_toast_value_is_filled_from_the_same_batch() -> None:
    b = batch()
    b.add(change("c", key=1, row={"id": 1, "v": "big"}))
    b.add(change("u", key=1, row={"id": 1, "v": "__debezium_unavailable_value"},
                 unavailable=["v"]))  # fmt: skip
    assert b.writes().upserts == ["1\tbig"]


def test_an_unchanged_toast_value_not_in_the_batch_becomes_a_partial_update() -> None:
    b = batch()
    b.add(change("u", key=1, row={"id": 1, "v": "__debezium_unavailable_value"},
                 unavailable=["v"]))  # fmt: skip
    w = b.writes()
    assert (w.upserts, w.partial) == ([], {("id",): [("1",)]})


def test_an_unchanged_toast_value_of_a_deleted_row_is_refused() -> None:
    b = batch()
    b.add(change("d", key=1))
    with pytest.raises(ApplyError, match="deleted"):
        b.add(change("u", key=1, row={"id": 1, "v": "x"}, unavailable=["v"]))


def test_copy_values_escape_what_copy_text_format_needs() -> None:
    assert [copy_value(v) for v in (None, "a\\b", "t\tn\nr\r", "plain")] == [
        "\\N", "a\\\\b", "t\\tn\\nr\\r", "plain",
    ]  # fmt: skip


# --- DDL ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Col:
    name: str
    type: str
    type_oid: int = 25
    type_modifier: int = -1


@dataclass(frozen=True)
class Shape:
    columns: tuple[Col, ...]
    key_columns: tuple[str, ...]
    version: int = 1
    change: dict[str, Any] = field(default_factory=dict)
    schema: str = "public"
    table: str = "t"
    lsn: int = 10
    types: tuple[Any, ...] = ()


def test_a_table_is_created_with_its_key() -> None:
    shape = Shape((Col("id", "bigint", 20), Col("v", "text")), ("id",))
    assert create_table(shape, Target("svc", "t"))[-1] == (
        'CREATE TABLE IF NOT EXISTS "svc"."t" ("id" bigint, "v" text, PRIMARY KEY ("id"))'
    )


def test_consecutive_versions_become_rename_drop_add_retype_and_key_statements() -> None:
    old = Shape((Col("id", "bigint", 20), Col("a", "text"), Col("b", "text"),
                 Col("n", "numeric(5,2)", 1700, 327686)), ("id",))  # fmt: skip
    new = Shape(
        (Col("id", "bigint", 20), Col("a2", "text"), Col("n", "numeric(9,2)", 1700, 589830),
         Col("c", "integer", 23)),
        ("id", "a2"),
        version=2,
        change={"renamed": [{"from": "a", "to": "a2"}]},
    )  # fmt: skip
    assert alter_table(old, new, Target("public", "t")) == [
        'ALTER TABLE "public"."t" RENAME COLUMN "a" TO "a2"',
        'ALTER TABLE "public"."t" DROP COLUMN "b"',
        'ALTER TABLE "public"."t" ADD COLUMN "c" integer',
        'ALTER TABLE "public"."t" ALTER COLUMN "n" TYPE numeric(9,2) USING "n"::numeric(9,2)',
        'ALTER TABLE "public"."t" DROP CONSTRAINT IF EXISTS "t_pkey"',
        'ALTER TABLE "public"."t" ADD CONSTRAINT "t_pkey" PRIMARY KEY ("id", "a2")',
    ]


def test_a_possible_rename_across_skipped_versions_is_refused_with_the_ddl() -> None:
    old = Shape((Col("id", "bigint", 20), Col("a", "text")), ("id",))
    new = Shape((Col("id", "bigint", 20), Col("b", "text")), ("id",), version=3)
    with pytest.raises(DdlError, match="RENAME COLUMN"):
        alter_table(old, new, Target("public", "t"))


def test_types_are_created_only_when_missing() -> None:
    statements = create_types([{"kind": "e", "schema": "public", "name": "mood",
                                "labels": ["sad", "o'k"], "extension": None}])  # fmt: skip
    assert "CREATE TYPE \"public\".\"mood\" AS ENUM ('sad', 'o''k')" in statements[1]
    assert "to_regtype" in statements[1]
    assert statements[2:] == [
        'ALTER TYPE "public"."mood" ADD VALUE IF NOT EXISTS \'sad\'',
        "ALTER TYPE \"public\".\"mood\" ADD VALUE IF NOT EXISTS 'o''k'",
    ]


def test_extension_types_create_their_extension_once() -> None:
    statements = create_types([
        {"kind": "b", "schema": "public", "name": "hstore", "extension": "hstore"},
        {"kind": "b", "schema": "public", "name": "_hstore", "extension": "hstore"},
    ])  # fmt: skip
    assert statements == ['CREATE EXTENSION IF NOT EXISTS "hstore"']


def test_a_transaction_handed_out_whole_drops_its_end_count() -> None:
    """END counts are kept only until their transaction is taken: a following replay's
    memory does not grow with the transactions it has applied."""
    queue = ChangeQueue(ordered=True, transactional=True)
    queue.add(change(lsn=100, seq=0, tx="7:100"))
    queue.expect(100, 1)
    queue.expect(200, 1)  # not read yet
    queue.set_watermark((1000, 0))
    assert [c.lsn for c in queue.take(10)] == [100]
    assert queue._expected == {200: 1}
