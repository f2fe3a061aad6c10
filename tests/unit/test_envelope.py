"""Debezium-compatible envelope and compacted records (cdc.envelope)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc import __version__, native
from cdc.envelope import (
    SNAPSHOT_SEQ,
    EnvelopeEncoder,
    Record,
    TxContext,
    lsn_header,
    seq_header,
)
from cdc.errors import ConversionError
from cdc.protocol.messages import (
    UNCHANGED_TOAST,
    Column,
    Delete,
    Insert,
    Relation,
    ReplicaIdentity,
    Truncate,
    Update,
)
from cdc.protocol.values import UNAVAILABLE_VALUE_PLACEHOLDER, ValueOptions

SAMPLE = Path("/work/shared/debezium-sample-event.json")

TX = TxContext(
    xid=12933, commit_lsn=3748886600, commit_ts_us=1795777711720845, last_commit_lsn=None
)
LSN = 3748886512
NOW_US = 1795777711936065


def relation(
    identity: ReplicaIdentity = ReplicaIdentity.DEFAULT,
    *,
    oid: int = 16384,
    name: str = "items",
    key_flags: Sequence[int] = (1, 0, 0),
) -> Relation:
    return Relation(
        xid=None,
        oid=oid,
        namespace="public",
        name=name,
        replica_identity=identity,
        columns=(
            Column(key_flags[0], "id", 20, -1),
            Column(key_flags[1], "note", 25, -1),
            Column(key_flags[2], "amount", 1700, ((12 << 16) | 2) + 4),
        ),
    )


ITEMS = relation()
ITEMS_FULL = relation(ReplicaIdentity.FULL, key_flags=(1, 1, 1))
NO_KEY = relation(ReplicaIdentity.NOTHING, oid=16390, name="log", key_flags=(0, 0, 0))


def encoder(**kwargs: Any) -> EnvelopeEncoder:
    return EnvelopeEncoder(
        connector="shop",
        database="postgres",
        retention_topic=lambda schema, table: f"shop.{schema}.{table}",
        compacted_topic=lambda schema, table: f"shop.{schema}.{table}.latest",
        options=ValueOptions(),
        **kwargs,
    )


def source(table: str = "items", lsn: int = LSN, sequence: str | None = None) -> dict[str, Any]:
    return {
        "version": __version__,
        "connector": "postgresql",
        "name": "shop",
        "ts_ms": 1795777711720,
        "snapshot": "false",
        "db": "postgres",
        "sequence": sequence or f'[null,"{lsn}"]',
        "ts_us": 1795777711720845,
        "ts_ns": 1795777711720845000,
        "schema": "public",
        "table": table,
        "txId": 12933,
        "lsn": lsn,
        "xmin": None,
        "origin": None,
        "origin_lsn": None,
    }


def event(
    op: str, before: dict[str, Any] | None, after: dict[str, Any] | None, table: str = "items"
) -> dict[str, Any]:
    return {
        "before": before,
        "after": after,
        "source": source(table),
        "transaction": None,
        "op": op,
        "ts_ms": 1795777711936,
        "ts_us": NOW_US,
        "ts_ns": NOW_US * 1000,
    }


def decoded(records: list[Record]) -> list[tuple[str, Any, Any]]:
    """Records as (topic, key, value) with JSON parsed, for readable comparisons."""
    return [
        (
            r.topic,
            None if r.key is None else orjson.loads(r.key),
            None if r.value is None else orjson.loads(r.value),
        )
        for r in records
    ]


ROW = {"id": 1, "note": "zürich ☃", "amount": "-0.00"}
ROW2 = {"id": 1, "note": "new", "amount": "12.50"}


# --- insert --------------------------------------------------------------------------


def test_insert_exact_bytes() -> None:
    records = encoder().encode(
        Insert(xid=None, relation=ITEMS, new=("1", "zürich ☃", "-0.00")), TX, LSN, NOW_US
    )
    assert records == [
        Record(
            "shop.public.items",
            b'{"id":1}',
            b'{"before":null,"after":{"id":1,"note":"z\xc3\xbcrich \xe2\x98\x83","amount":"-0.00"},'
            b'"source":{"version":"' + __version__.encode() + b'","connector":"postgresql",'
            b'"name":"shop","ts_ms":1795777711720,"snapshot":"false","db":"postgres",'
            b'"sequence":"[null,\\"3748886512\\"]","ts_us":1795777711720845,'
            b'"ts_ns":1795777711720845000,"schema":"public","table":"items","txId":12933,'
            b'"lsn":3748886512,"xmin":null,"origin":null,"origin_lsn":null},'
            b'"transaction":null,"op":"c","ts_ms":1795777711936,"ts_us":1795777711936065,'
            b'"ts_ns":1795777711936065000}',
        ),
        Record(
            "shop.public.items.latest",
            b'{"id":1}',
            b'{"id":1,"note":"z\xc3\xbcrich \xe2\x98\x83","amount":"-0.00"}',
        ),
    ]


def test_event_has_the_keys_of_the_debezium_sample_in_its_order() -> None:
    sample = json.loads(SAMPLE.read_text())["value"]["payload"]
    [retention, _] = encoder().encode(
        Insert(xid=None, relation=ITEMS, new=("1", "x", "1.00")), TX, LSN, NOW_US
    )
    assert retention.value is not None
    ours = orjson.loads(retention.value)
    assert (list(ours), list(ours["source"])) == (list(sample), list(sample["source"]))
    assert {k: type(v) for k, v in ours["source"].items()} == {
        k: type(v) for k, v in sample["source"].items()
    }


def test_sequence_carries_the_last_commit_lsn() -> None:
    tx = TxContext(xid=1, commit_lsn=200, commit_ts_us=0, last_commit_lsn=100)
    [retention, _] = encoder().encode(
        Insert(xid=None, relation=ITEMS, new=("1", "x", "1.00")), tx, 150, NOW_US
    )
    assert retention.value is not None
    assert orjson.loads(retention.value)["source"]["sequence"] == '["100","150"]'


# --- update --------------------------------------------------------------------------


def test_update_without_old_tuple_has_null_before() -> None:
    records = encoder().encode(
        Update(xid=None, relation=ITEMS, old_kind=None, old=None, new=("1", "new", "12.50")),
        TX,
        LSN,
        NOW_US,
    )
    assert decoded(records) == [
        ("shop.public.items", {"id": 1}, event("u", None, ROW2)),
        ("shop.public.items.latest", {"id": 1}, ROW2),
    ]


def test_update_with_full_identity_has_the_old_row_as_before() -> None:
    records = encoder(key_columns=lambda _r: ["id"]).encode(
        Update(
            xid=None,
            relation=ITEMS_FULL,
            old_kind="O",
            old=("1", "zürich ☃", "-0.00"),
            new=("1", "new", "12.50"),
        ),
        TX,
        LSN,
        NOW_US,
    )
    assert decoded(records) == [
        ("shop.public.items", {"id": 1}, event("u", ROW, ROW2)),
        ("shop.public.items.latest", {"id": 1}, ROW2),
    ]


def test_update_changing_the_key_is_a_delete_then_a_create() -> None:
    records = encoder().encode(
        Update(
            xid=None, relation=ITEMS, old_kind="K", old=("1", None, None), new=("2", "new", "1.00")
        ),
        TX,
        LSN,
        NOW_US,
    )
    new_row = {"id": 2, "note": "new", "amount": "1.00"}
    assert decoded(records) == [
        ("shop.public.items", {"id": 1}, event("d", {"id": 1, "note": None, "amount": None}, None)),
        ("shop.public.items.latest", {"id": 1}, None),
        ("shop.public.items", {"id": 2}, event("c", None, new_row)),
        ("shop.public.items.latest", {"id": 2}, new_row),
    ]
    assert records[1].value is None


def test_update_changing_the_key_under_full_identity_is_a_delete_then_a_create() -> None:
    records = encoder(key_columns=lambda _r: ["id"]).encode(
        Update(
            xid=None,
            relation=ITEMS_FULL,
            old_kind="O",
            old=("1", "zürich ☃", "-0.00"),
            new=("2", "zürich ☃", "-0.00"),
        ),
        TX,
        LSN,
        NOW_US,
    )
    assert [(r.topic, r.key, r.value is None) for r in records] == [
        ("shop.public.items", b'{"id":1}', False),
        ("shop.public.items.latest", b'{"id":1}', True),
        ("shop.public.items", b'{"id":2}', False),
        ("shop.public.items.latest", b'{"id":2}', False),
    ]
    assert [orjson.loads(r.value)["op"] for r in records[::2] if r.value] == ["d", "c"]


def test_update_with_unchanged_key_sent_as_old_key_is_an_update() -> None:
    """PostgreSQL also sends the old key when it holds external TOAST values."""
    records = encoder().encode(
        Update(
            xid=None, relation=ITEMS, old_kind="K", old=("1", None, None), new=("1", "new", "12.50")
        ),
        TX,
        LSN,
        NOW_US,
    )
    assert decoded(records) == [
        ("shop.public.items", {"id": 1}, event("u", {"id": 1, "note": None, "amount": None}, ROW2)),
        ("shop.public.items.latest", {"id": 1}, ROW2),
    ]


def test_unchanged_toast_becomes_the_debezium_placeholder() -> None:
    records = encoder().encode(
        Update(
            xid=None, relation=ITEMS, old_kind=None, old=None, new=("1", UNCHANGED_TOAST, "1.00")
        ),
        TX,
        LSN,
        NOW_US,
    )
    after = {"id": 1, "note": UNAVAILABLE_VALUE_PLACEHOLDER, "amount": "1.00"}
    listed = {**event("u", None, after), "unavailable_columns": ["note"]}
    assert decoded(records) == [
        ("shop.public.items", {"id": 1}, listed),
        ("shop.public.items.latest", {"id": 1}, after),
    ]
    assert b'"note":"__debezium_unavailable_value"' in (records[0].value or b"")


def test_unchanged_toast_key_without_old_key_is_refused() -> None:
    rel = relation(key_flags=(0, 1, 0))
    with pytest.raises(ConversionError, match="TOASTed key") as caught:
        encoder().encode(
            Update(
                xid=None, relation=rel, old_kind=None, old=None, new=("1", UNCHANGED_TOAST, "1")
            ),
            TX,
            LSN,
            NOW_US,
        )
    assert (caught.value.column, caught.value.lsn) == ("note", LSN)


def test_unchanged_toast_is_filled_from_the_old_row_when_sent() -> None:
    records = encoder(key_columns=lambda _r: ["id"]).encode(
        Update(
            xid=None,
            relation=ITEMS_FULL,
            old_kind="O",
            old=("1", "long text", "1.00"),
            new=("1", UNCHANGED_TOAST, "2.00"),
        ),
        TX,
        LSN,
        NOW_US,
    )
    assert decoded(records)[1] == (
        "shop.public.items.latest",
        {"id": 1},
        {"id": 1, "note": "long text", "amount": "2.00"},
    )


# --- delete --------------------------------------------------------------------------


def test_delete_by_key_has_key_columns_only_and_a_tombstone() -> None:
    records = encoder().encode(
        Delete(xid=None, relation=ITEMS, old_kind="K", old=("1", None, None)), TX, LSN, NOW_US
    )
    assert decoded(records) == [
        ("shop.public.items", {"id": 1}, event("d", {"id": 1, "note": None, "amount": None}, None)),
        ("shop.public.items.latest", {"id": 1}, None),
    ]
    assert records[1] == Record("shop.public.items.latest", b'{"id":1}', None)


def test_delete_with_full_identity_has_the_whole_old_row() -> None:
    records = encoder(key_columns=lambda _r: ["id"]).encode(
        Delete(xid=None, relation=ITEMS_FULL, old_kind="O", old=("1", "zürich ☃", "-0.00")),
        TX,
        LSN,
        NOW_US,
    )
    assert decoded(records) == [
        ("shop.public.items", {"id": 1}, event("d", ROW, None)),
        ("shop.public.items.latest", {"id": 1}, None),
    ]


# --- truncate ------------------------------------------------------------------------


def test_truncate_is_one_unkeyed_event_per_table_on_the_retention_topic() -> None:
    records = encoder().encode(
        Truncate(xid=None, options=0, relations=(ITEMS, NO_KEY)), TX, LSN, NOW_US
    )
    assert decoded(records) == [
        ("shop.public.items", None, event("t", None, None)),
        ("shop.public.log", None, event("t", None, None, table="log")),
    ]


# --- tables without a key ------------------------------------------------------------


def test_table_without_key_has_null_keys_and_no_compacted_records() -> None:
    enc = encoder()
    insert = enc.encode(Insert(xid=None, relation=NO_KEY, new=("1", "x", "1.00")), TX, LSN, NOW_US)
    update = enc.encode(
        Update(xid=None, relation=NO_KEY, old_kind=None, old=None, new=("1", "y", "1.00")),
        TX,
        LSN,
        NOW_US,
    )
    assert [(r.topic, r.key) for r in insert + update] == [
        ("shop.public.log", None),
        ("shop.public.log", None),
    ]
    assert not enc.table(NO_KEY).has_key


def test_table_without_key_full_identity_update_and_delete() -> None:
    rel = relation(ReplicaIdentity.FULL, oid=16391, name="log", key_flags=(1, 1, 1))
    enc = encoder(key_columns=lambda _r: [])
    update = enc.encode(
        Update(
            xid=None, relation=rel, old_kind="O", old=("1", "x", "1.00"), new=("1", "y", "1.00")
        ),
        TX,
        LSN,
        NOW_US,
    )
    delete = enc.encode(
        Delete(xid=None, relation=rel, old_kind="O", old=("1", "y", "1.00")), TX, LSN, NOW_US
    )
    assert [(r.topic, r.key, orjson.loads(r.value or b"")["op"]) for r in update + delete] == [
        ("shop.public.log", None, "u"),
        ("shop.public.log", None, "d"),
    ]


# --- keys ------------------------------------------------------------------------------


def test_composite_key_follows_column_order() -> None:
    rel = relation(key_flags=(1, 1, 0))
    [retention, compacted] = encoder().encode(
        Insert(xid=None, relation=rel, new=("1", "a", "1.00")), TX, LSN, NOW_US
    )
    assert (retention.key, compacted.key) == (b'{"id":1,"note":"a"}', b'{"id":1,"note":"a"}')


def test_full_identity_without_key_lookup_keys_on_every_flagged_column() -> None:
    """PostgreSQL flags every column of a REPLICA IDENTITY FULL table as identity."""
    [retention, _] = encoder().encode(
        Insert(xid=None, relation=ITEMS_FULL, new=("1", "a", "1.00")), TX, LSN, NOW_US
    )
    assert retention.key == b'{"id":1,"note":"a","amount":"1.00"}'


def test_key_lookup_naming_an_unknown_column_is_refused() -> None:
    with pytest.raises(ConversionError, match="no column nope"):
        encoder(key_columns=lambda _r: ["nope"]).table(ITEMS)


def test_old_key_tuple_without_the_configured_key_is_refused() -> None:
    rel = relation(ReplicaIdentity.INDEX, key_flags=(0, 1, 0))
    enc = encoder(key_columns=lambda _r: ["id"])
    with pytest.raises(ConversionError, match="REPLICA IDENTITY") as caught:
        enc.encode(Delete(xid=None, relation=rel, old_kind="K", old=(None, "a", None)), TX, LSN, 7)
    assert (caught.value.table, caught.value.lsn) == ("public.items", LSN)


# --- errors and caching --------------------------------------------------------------


def test_conversion_error_names_table_column_type_and_lsn() -> None:
    with pytest.raises(ConversionError) as caught:
        encoder().encode(Insert(xid=None, relation=ITEMS, new=("x", "x", "1.00")), TX, LSN, 0)
    error = caught.value
    assert (error.table, error.column, error.type_name, error.lsn) == (
        "public.items",
        "id",
        "bigint",
        LSN,
    )
    assert str(LSN) in str(error)


def test_table_encoder_is_cached_per_relation_object() -> None:
    calls: list[tuple[str, str]] = []

    def topic(schema: str, table: str) -> str:
        calls.append((schema, table))
        return f"{schema}.{table}"

    enc = EnvelopeEncoder(
        connector="c",
        database="d",
        retention_topic=topic,
        compacted_topic=topic,
        options=ValueOptions(),
    )
    first = enc.table(ITEMS)
    assert enc.table(ITEMS) is first
    replaced = enc.table(relation())
    assert replaced is not first
    assert (replaced.retention_topic, replaced.compacted_topic, replaced.has_key) == (
        "public.items",
        "public.items",
        True,
    )
    assert calls == [("public", "items")] * 4


# --- position headers and transaction blocks --------------------------------------------

HEADERS = (lsn_header(TX.commit_lsn), seq_header(3))


def _headers_of(records: list[Record]) -> list[Any]:
    return [r.headers for r in records]


def test_every_record_of_a_change_carries_its_message_s_position_headers() -> None:
    enc = encoder()
    changes: list[Insert | Update | Delete] = [
        Insert(xid=None, relation=ITEMS, new=("1", "x", "1.00")),
        Update(xid=None, relation=ITEMS, old_kind=None, old=None, new=("1", "y", "1.00")),
        Update(
            xid=None, relation=ITEMS, old_kind="K", old=("1", None, None), new=("2", "y", "1.00")
        ),
        Delete(xid=None, relation=ITEMS, old_kind="K", old=("2", None, None)),
        Insert(xid=None, relation=NO_KEY, new=("1", "x", "1.00")),
    ]
    records = [r for change in changes for r in enc.encode(change, TX, LSN, NOW_US, HEADERS)]
    truncate = enc.encode(Truncate(None, 0, (ITEMS, NO_KEY)), TX, LSN, NOW_US, HEADERS)
    assert len(records) == 2 + 2 + 4 + 2 + 1
    assert set(_headers_of(records + truncate)) == {(("cdc.lsn", b"3748886600"), ("cdc.seq", b"3"))}


def test_records_have_no_headers_unless_given() -> None:
    records = encoder().encode(Insert(xid=None, relation=ITEMS, new=("1", "x", "1.00")), TX, 1, 2)
    assert _headers_of(records) == [None, None]


def test_seq_headers_are_ascii_decimals_beyond_the_prebuilt_ones() -> None:
    assert [seq_header(i) for i in (0, 1023, 1024, 123456)] == [
        ("cdc.seq", b"0"),
        ("cdc.seq", b"1023"),
        ("cdc.seq", b"1024"),
        ("cdc.seq", b"123456"),
    ]
    assert lsn_header(24038104) == ("cdc.lsn", b"24038104")


def test_snapshot_reads_are_as_of_the_snapshot_point_before_anything_committed_there() -> None:
    snapshot = TxContext(xid=None, commit_lsn=5000, commit_ts_us=0, last_commit_lsn=None)
    table = encoder().table(ITEMS)
    records = table.read(("1", "x", "1.00"), snapshot, 5000, NOW_US, "first")
    unkeyed = encoder().table(NO_KEY).read(("1", "x", "1.00"), snapshot, 5000, NOW_US, "true")
    expected = (("cdc.lsn", b"5000"), ("cdc.seq", b"-1"))
    assert _headers_of(records + unkeyed) == [expected] * 3
    assert SNAPSHOT_SEQ == -1


def test_snapshot_read_headers_are_built_once_per_snapshot_point() -> None:
    table = encoder().table(ITEMS)
    row = table.row(("1", "x", "1.00"), 0)
    chunk = TxContext(xid=7, commit_lsn=6000, commit_ts_us=0, last_commit_lsn=None)
    first = table.read_row(row, chunk, 5990, NOW_US, "incremental")
    again = table.read_row(row, chunk, 5990, NOW_US, "incremental")
    assert first[0].headers is again[0].headers
    later = TxContext(xid=8, commit_lsn=7000, commit_ts_us=0, last_commit_lsn=None)
    assert table.read_row(row, later, 6990, NOW_US, "incremental")[0].headers == (
        ("cdc.lsn", b"7000"),
        ("cdc.seq", b"-1"),
    )


class Order:
    """A transaction block per data event, numbered as TransactionOrder does."""

    def __init__(self) -> None:
        self.tables: list[str] = []

    def __call__(self, table: str) -> dict[str, Any]:
        self.tables.append(table)
        return {"id": "7:100", "total_order": len(self.tables)}


def _transaction(records: list[Record]) -> list[Any]:
    return [orjson.loads(r.value)["transaction"] for r in records if r.value and b'"op"' in r.value]


def test_each_data_event_gets_the_next_transaction_block_in_publication_order() -> None:
    order = Order()
    tx = TxContext(xid=7, commit_lsn=100, commit_ts_us=0, last_commit_lsn=None, order=order)
    enc = encoder(key_columns=lambda r: ["id"] if r.oid == ITEMS_FULL.oid else None)
    changes: list[Insert | Update | Delete | Truncate] = [
        Insert(xid=None, relation=ITEMS, new=("1", "x", "1.00")),
        Update(xid=None, relation=ITEMS, old_kind=None, old=None, new=("1", "y", "1.00")),
        Update(
            xid=None, relation=ITEMS, old_kind="K", old=("1", None, None), new=("2", "y", "1.00")
        ),
        Delete(xid=None, relation=ITEMS, old_kind="K", old=("2", None, None)),
        Update(xid=None, relation=NO_KEY, old_kind=None, old=None, new=("1", "y", "1.00")),
        Update(
            xid=None, relation=NO_KEY, old_kind="O", old=("1", "y", "1.00"), new=("1", "z", "1")
        ),
        Update(
            xid=None,
            relation=ITEMS_FULL,
            old_kind="O",
            old=("3", "y", "1.00"),
            new=("3", "z", "1.00"),
        ),
        Truncate(None, 0, (ITEMS, NO_KEY)),
    ]
    records = [r for change in changes for r in enc.encode(change, tx, LSN, NOW_US)]
    events = [orjson.loads(r.value)["op"] for r in records if r.value and b'"op"' in r.value]
    assert events == ["c", "u", "d", "c", "d", "u", "u", "u", "t", "t"]
    assert [block["total_order"] for block in _transaction(records)] == list(range(1, 11))
    assert order.tables == [
        *["public.items"] * 5,
        "public.log",
        "public.log",
        "public.items",
        "public.items",
        "public.log",
    ]


def test_snapshot_reads_belong_to_no_transaction() -> None:
    order = Order()
    tx = TxContext(xid=7, commit_lsn=100, commit_ts_us=0, last_commit_lsn=None, order=order)
    records = encoder().table(ITEMS).read(("1", "x", "1.00"), tx, 90, NOW_US, "incremental")
    assert _transaction(records) == [None]
    assert order.tables == []


# --- the source block and the event assembled from JSON pieces ------------------------

names = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["~cdc-lsn-7f3a~", 'a"b', "back\\slash", '~cdc-lsn-7f3a~"0"']
)
lsns = st.integers(0, 2**64 - 1)


@given(
    connector=names,
    database=names,
    schema=names,
    table=names,
    xid=st.none() | st.integers(0, 2**32 - 1),
    last=st.none() | lsns,
    commit_ts_us=st.integers(0, 9 * 10**15),
    snapshot=st.sampled_from(["false", "true", "first", "last", "incremental"]),
    lsn_list=st.lists(lsns, min_size=1, max_size=3),
)
def test_source_block_is_the_dict_orjson_would_write(
    connector: str,
    database: str,
    schema: str,
    table: str,
    xid: int | None,
    last: int | None,
    commit_ts_us: int,
    snapshot: str,
    lsn_list: list[int],
) -> None:
    rel = Relation(
        xid=None,
        oid=1,
        namespace=schema,
        name=table,
        replica_identity=ReplicaIdentity.DEFAULT,
        columns=(Column(1, "id", 20, -1),),
    )
    table_encoder = EnvelopeEncoder(
        connector=connector,
        database=database,
        retention_topic=lambda s, t: "r",
        compacted_topic=lambda s, t: "c",
        options=ValueOptions(),
    ).table(rel)
    tx = TxContext(xid=xid, commit_lsn=1, commit_ts_us=commit_ts_us, last_commit_lsn=last)
    for lsn in lsn_list:  # the template is reused within the transaction
        expected = orjson.dumps(table_encoder._source_dict(tx, lsn, snapshot))
        assert table_encoder._source(tx, lsn, snapshot) == expected


@given(
    op=st.sampled_from(["c", "u", "d", "r", "t"]),
    before=st.none() | st.dictionaries(names, st.integers(-(2**63), 2**63 - 1) | names, max_size=3),
    after=st.none() | st.dictionaries(names, st.integers(-(2**63), 2**63 - 1) | names, max_size=3),
    now_us=st.integers(0, 9 * 10**15),
    unavailable=st.none() | st.lists(names, max_size=2),
    transaction=st.none()
    | st.fixed_dictionaries(
        {
            "id": names,
            "total_order": st.integers(1, 99),
            "data_collection_order": st.integers(1, 10**9),
        }
    ),
)
def test_event_is_the_dict_orjson_would_write(
    op: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    now_us: int,
    unavailable: list[str] | None,
    transaction: dict[str, Any] | None,
) -> None:
    table_encoder = encoder().table(ITEMS)
    source_json = table_encoder._source(TX, LSN)
    event: dict[str, Any] = {
        "before": before,
        "after": after,
        "source": orjson.loads(source_json),
        "transaction": transaction,
        "op": op,
        "ts_ms": now_us // 1000,
        "ts_us": now_us,
        "ts_ns": now_us * 1000,
    }
    if unavailable:
        event["unavailable_columns"] = unavailable
    built = table_encoder._event(op, before, after, source_json, now_us, unavailable, transaction)
    assert built == orjson.dumps(event)


@pytest.mark.skipif(not native.ACTIVE, reason="the compiled core is not built")
@given(
    connector=names,
    schema=names,
    xid=st.none() | st.integers(0, 2**32 - 1),
    last=st.none() | lsns,
    commit_ts_us=st.integers(0, 9 * 10**15),
    lsn=lsns,
    now_us=st.integers(0, 9 * 10**15),
    text=st.text(st.characters(codec="utf-8"), max_size=20),
)
def test_the_compiled_insert_event_equals_the_python_one(
    connector: str,
    schema: str,
    xid: int | None,
    last: int | None,
    commit_ts_us: int,
    lsn: int,
    now_us: int,
    text: str,
) -> None:
    """TableEncoder.insert's compiled fast path (one call for the whole event) writes the
    bytes of the general path (_convert and _event)."""
    rel = Relation(
        xid=None,
        oid=1,
        namespace=schema,
        name="t",
        replica_identity=ReplicaIdentity.DEFAULT,
        columns=(Column(1, "id", 20, -1), Column(0, "note", 25, -1)),
    )

    def table() -> Any:
        return EnvelopeEncoder(
            connector=connector,
            database="d",
            retention_topic=lambda s, t: "r",
            compacted_topic=lambda s, t: "c",
            options=ValueOptions(),
        ).table(rel)

    tx = TxContext(xid=xid, commit_lsn=1, commit_ts_us=commit_ts_us, last_commit_lsn=last)
    message = Insert(xid=None, relation=rel, new=("7", text))
    fast, general = table(), table()
    general._native_insert = None
    compiled = fast._native_insert
    assert compiled is not None
    calls: list[int] = []

    def counted(*args: Any) -> Any:
        calls.append(1)
        return compiled(*args)

    fast._native_insert = counted
    assert fast.insert(message, tx, lsn, now_us) == general.insert(message, tx, lsn, now_us)
    assert calls or "~cdc-lsn-7f3a~" in connector + schema  # the marker: whole-block path
