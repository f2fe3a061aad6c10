"""cdc.dead_letters: records refused at delivery, found again by name on the replay."""

from __future__ import annotations

from cdc.dead_letters import Refusal, RefusedRecords
from cdc.envelope import Record

HEADERS = [("cdc.lsn", b"200"), ("cdc.seq", b"3")]
TOO_LARGE = Refusal("MSG_SIZE_TOO_LARGE", "Broker: Message size too large", too_large=True)


def record(key: bytes = b'{"id":1}', headers: list[tuple[str, bytes]] | None = None) -> Record:
    return Record("t", key, b"v", HEADERS if headers is None else headers)


def test_a_record_is_named_by_topic_key_and_position() -> None:
    refusals = RefusedRecords()
    assert refusals.add("t", b'{"id":1}', HEADERS, TOO_LARGE)
    assert refusals.take(record(key=b'{"id":2}')) is None  # another key
    assert refusals.take(record(headers=[("cdc.lsn", b"200"), ("cdc.seq", b"4")])) is None
    assert refusals.take(record()) == TOO_LARGE


def test_a_record_without_position_headers_cannot_be_remembered() -> None:
    refusals = RefusedRecords()
    assert not refusals.add("t", b"k", None, TOO_LARGE)
    assert not refusals.add("t", b"k", [("cdc.lsn", b"1")], TOO_LARGE)
    assert not refusals
    assert refusals.take(Record("t", b"k", b"v", None)) is None


def test_a_refusal_for_the_batch_is_tried_alone_once() -> None:
    refusals = RefusedRecords()
    refusals.add("t", b'{"id":1}', HEADERS, TOO_LARGE)
    first = refusals.take(record())
    assert first is not None
    assert not first.alone
    assert not refusals  # forgotten: the caller produces it alone
    refusals.trying(record())
    refusals.delivered(record())  # it went through alone
    refusals.add("t", b'{"id":1}', HEADERS, TOO_LARGE)  # a later, unrelated refusal
    again = refusals.take(record())
    assert again is not None
    assert not again.alone


def test_a_record_refused_alone_stays_remembered_for_every_replay() -> None:
    refusals = RefusedRecords()
    refusals.add("t", b'{"id":1}', HEADERS, TOO_LARGE)
    refusals.take(record())
    refusals.trying(record())
    refusals.add("t", b'{"id":1}', HEADERS, TOO_LARGE)  # refused alone
    for _ in range(2):  # a replay aborted after the dead-letter record: still known
        alone = refusals.take(record())
        assert alone is not None
        assert alone.alone
    assert len(refusals) == 1
