"""Debezium's transaction metadata: blocks, BEGIN and END (cdc.stream.transactions)."""

from __future__ import annotations

import orjson

from cdc.stream.transactions import TransactionOrder, TransactionTopic, transaction_topic_name


def test_blocks_count_the_transaction_s_events_and_each_table_s_from_one() -> None:
    order = TransactionOrder(741, 24038104, 1_795_777_711_720_845)
    blocks = [order.next(t) for t in ("public.a", "public.b", "public.a")]
    assert blocks == [
        {"id": "741:24038104", "total_order": 1, "data_collection_order": 1},
        {"id": "741:24038104", "total_order": 2, "data_collection_order": 1},
        {"id": "741:24038104", "total_order": 3, "data_collection_order": 2},
    ]


def test_begin_and_end_are_debezium_s_records_keyed_by_the_transaction_id() -> None:
    topic = TransactionTopic(transaction_topic_name("inventory"))
    order = TransactionOrder(741, 24038104, 1_795_777_711_720_845)
    begin = topic.begin(order)
    for table in ("public.orders", "public.customers", "public.orders"):
        order.next(table)
    end = topic.end(order)
    assert (begin.topic, end.topic) == ("inventory.transaction", "inventory.transaction")
    assert begin.key == end.key == b'{"id":"741:24038104"}'
    assert orjson.loads(begin.value or b"") == {
        "status": "BEGIN",
        "id": "741:24038104",
        "ts_ms": 1_795_777_711_720,
        "event_count": None,
        "data_collections": None,
    }
    assert orjson.loads(end.value or b"") == {
        "status": "END",
        "id": "741:24038104",
        "ts_ms": 1_795_777_711_720,
        "event_count": 3,
        "data_collections": [
            {"data_collection": "public.orders", "event_count": 2},
            {"data_collection": "public.customers", "event_count": 1},
        ],
    }
    assert begin.headers == end.headers == (("cdc.lsn", b"24038104"),)
    assert (begin.partition, end.partition) == (-1, -1)
