"""``toast.mode: fill``: unchanged TOASTed values come back from memory, never wrong."""

from __future__ import annotations

from pathlib import Path

import orjson

from cdc.envelope import REMEMBER_FROM_BYTES, EnvelopeEncoder, TxContext
from cdc.positions import Position
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
from cdc.stream.toast_store import ToastStore

TX = TxContext(xid=1, commit_lsn=100, commit_ts_us=1_700_000_000_000_000, last_commit_lsn=None)
DOCS = Relation(
    None,
    16400,
    "public",
    "docs",
    ReplicaIdentity.DEFAULT,
    (Column(1, "id", 20, -1), Column(0, "title", 25, -1), Column(0, "body", 25, -1)),
)
BIG = "x" * (REMEMBER_FROM_BYTES * 40)


class Memory:
    """An in-memory ToastMemory."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, bytes], dict[str, str]] = {}

    def get(self, table: str, key: bytes) -> dict[str, str]:
        return self.rows.get((table, key), {})

    def put(self, table: str, key: bytes, values: dict[str, str]) -> None:
        if values:
            self.rows[(table, key)] = values
        else:
            self.rows.pop((table, key), None)

    def forget_table(self, table: str) -> None:
        self.rows = {k: v for k, v in self.rows.items() if k[0] != table}


def _encoder(memory: Memory | ToastStore | None) -> EnvelopeEncoder:
    return EnvelopeEncoder(
        connector="c",
        database="d",
        retention_topic=lambda s, t: f"c.{s}.{t}",
        compacted_topic=lambda s, t: f"c.{s}.{t}.latest",
        options=ValueOptions(),
        toast=memory,
    )


def _after(records: list) -> dict:  # type: ignore[type-arg]
    return orjson.loads(records[1].value)  # type: ignore[no-any-return]


def _update(title: str) -> Update:
    return Update(None, DOCS, None, None, ("1", title, UNCHANGED_TOAST))


def test_fill_mode_restores_the_unchanged_value() -> None:
    memory = Memory()
    enc = _encoder(memory)
    enc.encode(Insert(None, DOCS, ("1", "t", BIG)), TX, 1, 1)
    records = enc.encode(_update("t2"), TX, 2, 2)
    assert _after(records) == {"id": 1, "title": "t2", "body": BIG}
    assert "unavailable_columns" not in orjson.loads(records[0].value or b"")


def test_unknown_value_stays_a_listed_placeholder_never_null() -> None:
    enc = _encoder(Memory())
    records = enc.encode(_update("t2"), TX, 2, 2)
    assert _after(records)["body"] == UNAVAILABLE_VALUE_PLACEHOLDER
    assert orjson.loads(records[0].value or b"")["unavailable_columns"] == ["body"]
    assert enc.table(DOCS).unavailable_count == 1


def test_small_values_are_not_remembered() -> None:
    memory = Memory()
    _encoder(memory).encode(Insert(None, DOCS, ("1", "t", "short")), TX, 1, 1)
    assert memory.rows == {}


def test_delete_and_truncate_forget() -> None:
    memory = Memory()
    enc = _encoder(memory)
    enc.encode(Insert(None, DOCS, ("1", "t", BIG)), TX, 1, 1)
    enc.encode(Delete(None, DOCS, "K", ("1", None, None)), TX, 2, 2)
    assert memory.rows == {}
    enc.encode(Insert(None, DOCS, ("2", "t", BIG)), TX, 3, 3)
    enc.encode(Truncate(None, 0, (DOCS,)), TX, 4, 4)
    assert memory.rows == {}


def test_key_change_moves_what_is_remembered() -> None:
    memory = Memory()
    enc = _encoder(memory)
    enc.encode(Insert(None, DOCS, ("1", "t", BIG)), TX, 1, 1)
    moved = Update(None, DOCS, "K", ("1", None, None), ("5", "t", UNCHANGED_TOAST))
    records = enc.encode(moved, TX, 2, 2)
    assert orjson.loads(records[3].value or b"")["body"] == BIG
    assert list(memory.rows) == [("public.docs", b'{"id":5}')]


def test_placeholder_mode_has_no_memory() -> None:
    records = _encoder(None).encode(_update("t2"), TX, 2, 2)
    assert _after(records)["body"] == UNAVAILABLE_VALUE_PLACEHOLDER


def test_sqlite_store_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "toast.sqlite3"
    store = ToastStore(path)
    _encoder(store).encode(Insert(None, DOCS, ("1", "t", BIG)), TX, 1, 1)
    store.close()
    reopened = ToastStore(path)
    records = _encoder(reopened).encode(_update("t2"), TX, 2, 2)
    assert _after(records)["body"] == BIG
    reopened.close()


# --- what the store keeps across a crash -------------------------------------------------------


def test_changes_not_yet_durable_are_seen_by_the_stream_but_not_kept_by_a_crash(
    tmp_path: Path,
) -> None:
    """Regression: the store was committed ahead of the confirmed position, so an event
    replayed after a restart was filled with a value of a later transaction."""
    path = tmp_path / "t.sqlite3"
    store = ToastStore(path)
    store.at(None)
    store.put("public.t", b"1", {"body": "v1"})  # as of the durable position
    store.commit()
    store.at(Position(200, 1))
    store.put("public.t", b"1", {"body": "v2"})  # a later transaction, not durable
    assert store.get("public.t", b"1") == {"body": "v2"}
    store.close()  # the crash: only what was durable stays
    assert ToastStore(path).get("public.t", b"1") == {"body": "v1"}


def test_changes_become_durable_in_order_up_to_the_durable_position(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    store = ToastStore(path)
    store.at(Position(100, 1))
    store.put("public.t", b"1", {"body": "a"})
    store.at(Position(100, 2))
    store.forget_table("public.t")
    assert store.get("public.t", b"1") == {}
    store.at(Position(200, 1))
    store.put("public.t", b"2", {"body": "b"})
    store.put("public.t", b"3", {"body": "c"})
    store.put("public.t", b"3", {})
    store.durable(Position(100, 3))  # the truncate is durable, the rest not yet
    store.durable(Position(100, 3))  # nothing more to do
    assert store.get("public.t", b"2") == {"body": "b"}
    store.close()
    reopened = ToastStore(path)
    assert (reopened.get("public.t", b"1"), reopened.get("public.t", b"2")) == ({}, {})
    reopened.at(Position(200, 1))
    reopened.put("public.t", b"2", {"body": "b"})
    reopened.durable(Position(300, 0))
    reopened.close()
    assert ToastStore(path).get("public.t", b"2") == {"body": "b"}


def test_a_later_change_of_a_row_stays_visible_when_an_earlier_one_becomes_durable(
    tmp_path: Path,
) -> None:
    store = ToastStore(tmp_path / "t.sqlite3")
    store.at(Position(100, 1))
    store.put("public.t", b"1", {"body": "a"})
    store.at(Position(200, 1))
    store.put("public.t", b"1", {"body": "b"})
    store.forget_table("public.u")
    store.at(Position(300, 1))
    store.forget_table("public.u")
    store.durable(Position(250, 0))
    assert store.get("public.t", b"1") == {"body": "b"}
    assert store.get("public.u", b"1") == {}
    store.close()
