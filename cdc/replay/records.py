"""What one record of a connector's topics means to a replay. No I/O.

The one job: turn a consumed Kafka record (topic, partition, offset, key, value, headers)
into a ``Change`` (an upsert, a delete, a truncate of one table, or nothing to apply) with
its place in the stream: ``(lsn, seq)`` from the ``cdc.lsn``/``cdc.seq`` headers (the
commit LSN of its source transaction and its index there: the daemon's own order), the
change's own WAL position (``source.lsn``, which picks the table shape it was written in)
and its commit time (``source.ts_us``, for ``--until TIMESTAMP``).

It must not convert column values (``cdc.replay.values``) nor decide when a change may be
applied (``cdc.replay.ordering``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

import orjson

from cdc.errors import CdcError

__all__ = [
    "LSN_HEADER",
    "SEQ_HEADER",
    "Change",
    "ChangeKind",
    "RecordError",
    "TableId",
    "parse_change",
    "position_from_headers",
]

# The daemon's position headers (docs/events.md): commit LSN and index in the transaction.
LSN_HEADER: Final = "cdc.lsn"
SEQ_HEADER: Final = "cdc.seq"

# source.snapshot of initial snapshot reads: they precede every streamed change.
_INITIAL_SNAPSHOT: Final = frozenset({"first", "true", "last", "first_in_data_collection",
                                      "last_in_data_collection"})  # fmt: skip

TableId = tuple[str, str]  # (schema, table) in the legacy database


class ChangeKind(enum.Enum):
    UPSERT = "upsert"  # c, u, r: the row after the change
    DELETE = "delete"  # d: the key
    TRUNCATE = "truncate"  # t: every row of the table
    SCHEMA = "schema"  # op s in band: a table shape (read by the caller)
    SKIP = "skip"  # nothing to apply (a message, an outbox or heartbeat record)


class RecordError(CdcError):
    """A record of a connector's topic is not an event this version of ``cdc`` wrote."""

    def __init__(self, message: str, *, topic: str, partition: int, offset: int) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        super().__init__(f"{topic}[{partition}]@{offset}: {message}")


@dataclass(slots=True)
class Change:
    """One decoded record. ``row`` holds the JSON values of ``after`` (upserts) and
    ``key_bytes`` the record key, used as the row's identity while batching."""

    kind: ChangeKind
    table: TableId
    topic: str
    partition: int
    offset: int
    lsn: int  # commit LSN of the source transaction (ordering)
    seq: int  # index in the source transaction (ordering)
    change_lsn: int  # source.lsn: this change's WAL position (its table shape)
    commit_ts_us: int
    key_bytes: bytes | None
    key: dict[str, Any] | None  # parsed for deletes only (upserts carry it in ``row``)
    row: dict[str, Any] | None
    unavailable: tuple[str, ...] = ()
    before: dict[str, Any] | None = None  # the old row, under REPLICA IDENTITY FULL
    initial_snapshot: bool = False
    transaction_id: str | None = None
    value: bytes | None = None  # kept for SCHEMA records only

    @property
    def position(self) -> tuple[int, int]:
        return (self.lsn, self.seq)


def position_from_headers(
    headers: list[tuple[str, bytes | None]] | None,
) -> tuple[int | None, int | None]:
    """``(cdc.lsn, cdc.seq)`` of a record (None where a header is missing)."""
    return _headers(headers)


def _headers(headers: list[tuple[str, bytes | None]] | None) -> tuple[int | None, int | None]:
    if not headers:
        return None, None
    if len(headers) == 2:  # the daemon writes exactly these two, in this order
        (n1, v1), (n2, v2) = headers
        if n1 == LSN_HEADER and n2 == SEQ_HEADER and v1 is not None and v2 is not None:
            return int(v1), int(v2)
    lsn = seq = None
    for name, value in headers:
        if value is None:
            continue
        if name == LSN_HEADER:
            lsn = int(value)
        elif name == SEQ_HEADER:
            seq = int(value)
    return lsn, seq


_loads: Final = orjson.loads
_UPSERT: Final = ChangeKind.UPSERT
_UPSERT_OPS: Final = frozenset({"c", "u", "r"})


def parse_change(  # noqa: PLR0917 - one consumed record's parts, as the consumer has them
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | None]] | None,
) -> Change:
    """The change one retention-topic record holds.

    The common record (an upsert with both position headers) takes a fast path; anything
    else, or anything unexpected in it, takes the checked one, which says what is wrong.

    Raises:
        RecordError: the record is not JSON, or not an event of the shape ``cdc`` writes.
    """
    try:
        event = _loads(value)  # type: ignore[arg-type]
        op = event["op"]
        if op in _UPSERT_OPS and headers is not None and len(headers) == 2:
            source = event["source"]
            after = event["after"]
            (n1, v1), (n2, v2) = headers
            change_lsn = source["lsn"]
            commit_ts_us = source["ts_us"]
            if (
                n1 == LSN_HEADER
                and n2 == SEQ_HEADER
                and type(after) is dict
                and type(change_lsn) is int
                and type(commit_ts_us) is int
                and event["before"] is None
                and event["transaction"] is None
                and "unavailable_columns" not in event
            ):
                return Change(
                    _UPSERT, (source["schema"], source["table"]), topic, partition, offset,
                    int(v1), int(v2), change_lsn, commit_ts_us, key, None, after, (), None,  # type: ignore[arg-type]
                    op == "r" and source["snapshot"] in _INITIAL_SNAPSHOT, None,
                )  # fmt: skip
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        pass  # the checked path below says what is wrong
    return _parse_checked(topic, partition, offset, key, value, headers)


def _parse_checked(  # noqa: PLR0917
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | None]] | None,
) -> Change:
    """The change one retention-topic record holds.

    Raises:
        RecordError: the record is not JSON, or not an event of the shape ``cdc`` writes.
    """

    def fail(why: str) -> RecordError:
        return RecordError(why, topic=topic, partition=partition, offset=offset)

    if value is None:
        # Retention topics hold no tombstones; a null value is a heartbeat or foreign.
        return Change(
            ChangeKind.SKIP, ("", ""), topic, partition, offset, 0, 0, 0, 0, key, None, None
        )
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise fail(f"the value is not JSON ({exc})") from exc
    if not isinstance(event, dict):
        raise fail("the value is not a JSON object")
    op = event.get("op")
    source = event.get("source")
    if not isinstance(source, dict):
        raise fail("the event has no source block")
    table: TableId = (str(source.get("schema")), str(source.get("table")))
    change_lsn = source.get("lsn")
    if not isinstance(change_lsn, int):
        raise fail("source.lsn is not an integer")
    if op == "s":
        return Change(
            ChangeKind.SCHEMA, table, topic, partition, offset, change_lsn, -1, change_lsn,
            _int(source.get("ts_us"), source), key, None, None, value=value,
        )  # fmt: skip
    header_lsn, header_seq = _headers(headers)
    if header_lsn is None or header_seq is None:
        raise fail(
            "the record has no cdc.lsn/cdc.seq headers: it was written by a cdc older than"
            " 0.2 (replay needs them to order changes); re-snapshot the table with"
            " `cdc snapshot` so the log carries them"
        )
    commit_ts_us = _int(source.get("ts_us"), source)
    tx = event.get("transaction")
    transaction_id = tx.get("id") if isinstance(tx, dict) else None
    snapshot = source.get("snapshot")
    initial = op == "r" and snapshot in _INITIAL_SNAPSHOT
    if op in ("c", "u", "r"):
        after = event.get("after")
        if not isinstance(after, dict):
            raise fail(f"an op {op!r} event without an after row")
        unavailable = event.get("unavailable_columns") or ()
        return Change(
            ChangeKind.UPSERT, table, topic, partition, offset, header_lsn, header_seq, change_lsn,
            commit_ts_us, key, None, after, tuple(unavailable),
            before if isinstance(before := event.get("before"), dict) else None,
            initial, transaction_id,
        )  # fmt: skip
    if op == "d":
        key_obj = orjson.loads(key) if key is not None else None
        if key_obj is not None and not isinstance(key_obj, dict):
            raise fail("the key is not a JSON object")
        before = event.get("before")
        return Change(
            ChangeKind.DELETE, table, topic, partition, offset, header_lsn, header_seq, change_lsn,
            commit_ts_us, key, key_obj, None, (),
            before if isinstance(before, dict) else None, False, transaction_id,
        )  # fmt: skip
    if op == "t":
        return Change(
            ChangeKind.TRUNCATE, table, topic, partition, offset, header_lsn, header_seq,
            change_lsn, commit_ts_us, None, None, None, (), None, False, transaction_id,
        )  # fmt: skip
    raise fail(f"unknown op {op!r}")


def _int(value: object, source: dict[str, Any]) -> int:
    if isinstance(value, int):
        return value
    ts_ms = source.get("ts_ms")
    return ts_ms * 1000 if isinstance(ts_ms, int) else 0
