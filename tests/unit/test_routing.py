"""Logical messages and outbox rows to their records: pure."""

from __future__ import annotations

import base64

import orjson

from cdc.config import MessagesConfig, OutboxConfig
from cdc.envelope import TxContext
from cdc.protocol.messages import Column, Insert, LogicalMessage, Relation, ReplicaIdentity
from cdc.stream.routing import MessageRouter, OutboxRouter

TX = TxContext(xid=7, commit_lsn=100, commit_ts_us=1_700_000_000_000_000, last_commit_lsn=None)


def test_message_becomes_a_debezium_style_message_event() -> None:
    router = MessageRouter(MessagesConfig(), connector="inv", database="db")
    record = router.record(LogicalMessage(7, True, 90, "audit", b"hello"), TX, 90, 5_000_000)
    assert record is not None
    assert record.topic == "inv.messages"
    assert orjson.loads(record.key or b"") == {"prefix": "audit"}
    value = orjson.loads(record.value or b"")
    assert value["op"] == "m"
    assert base64.b64decode(value["message"]["content"]) == b"hello"
    assert (value["source"]["txId"], value["source"]["lsn"]) == (7, 90)


def test_internal_and_unlisted_prefixes_are_not_published() -> None:
    router = MessageRouter(MessagesConfig(prefixes=("audit",)), connector="inv", database="db")
    assert router.record(LogicalMessage(None, False, 1, "cdc.watermark", b"{}"), None, 1, 1) is None
    assert router.record(LogicalMessage(None, False, 1, "other", b""), None, 1, 1) is None
    off = MessageRouter(MessagesConfig(topic=None), connector="inv", database="db")
    assert off.record(LogicalMessage(None, False, 1, "audit", b""), None, 1, 1) is None


def test_prefix_in_the_topic_is_made_legal() -> None:
    router = MessageRouter(
        MessagesConfig(topic="{connector}.{prefix}"), connector="inv", database="db"
    )
    record = router.record(LogicalMessage(None, False, 1, "a/b c", b""), None, 1, 1)
    assert record is not None
    assert record.topic == "inv.a_b_c"


OUTBOX = Relation(
    None,
    1,
    "public",
    "outbox",
    ReplicaIdentity.DEFAULT,
    (
        Column(1, "id", 2950, -1),
        Column(0, "aggregatetype", 25, -1),
        Column(0, "aggregateid", 25, -1),
        Column(0, "type", 25, -1),
        Column(0, "payload", 3802, -1),
    ),
)


def test_outbox_row_is_routed_by_aggregate_type_with_headers() -> None:
    router = OutboxRouter(OutboxConfig(table="public.outbox"), connector="inv")
    row = ("e1", "Order", "9", "OrderPlaced", '{"total": 5}')
    [record] = router.records(Insert(None, OUTBOX, row), ("payload",))
    assert record.topic == "outbox.event.Order"
    assert record.key == b'"9"'
    assert record.value == b'{"total": 5}'
    assert record.headers == (("id", b"e1"), ("type", b"OrderPlaced"))


def test_outbox_text_payload_is_a_json_string() -> None:
    router = OutboxRouter(OutboxConfig(table="public.outbox"), connector="inv")
    [record] = router.records(Insert(None, OUTBOX, ("e1", "Order", "9", "T", "plain")), ())
    assert record.value == b'"plain"'
