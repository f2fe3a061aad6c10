"""Position headers and Debezium's transaction metadata, on a real PostgreSQL and Kafka.

Every record of a table (both topics, snapshot rows too) carries ``cdc.lsn``/``cdc.seq``
in commit order; with ``provide_transaction_metadata: true`` each event says which
transaction it belongs to and ``<connector>.transaction`` frames each transaction with a
BEGIN and an END that counts its events.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from tests.integration.helpers import (
    Daemon,
    records_in,
    scratch_database,
    wait_until,
    write_config,
)

SCHEMA = """
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, status text);
INSERT INTO customers VALUES (1, 'before the connector');
"""


@dataclass(frozen=True)
class Consumed:
    """A committed record with its headers (what ``cdc replay`` reads)."""

    topic: str
    partition: int
    offset: int
    key: Any
    value: Any  # None: a tombstone
    headers: dict[str, bytes]

    @property
    def position(self) -> tuple[int, int]:
        return (int(self.headers["cdc.lsn"]), int(self.headers["cdc.seq"]))


def read_committed(bootstrap: str, topic: str) -> list[Consumed]:
    """Every record of ``topic`` a ``read_committed`` consumer sees now, in offset order
    per partition (from offset 0 to the end of each)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"tx-{uuid.uuid4().hex[:10]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=30).topics[topic]
        assert metadata.error is None, metadata.error
        partitions = list(metadata.partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        at_end: set[int] = set()
        records: list[Consumed] = []
        while len(at_end) < len(partitions):
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                error, partition, offset = msg.error(), msg.partition(), msg.offset()
                assert partition is not None
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, error
                    at_end.add(partition)
                    continue
                assert offset is not None
                at_end.discard(partition)
                key, value = msg.key(), msg.value()
                records.append(
                    Consumed(
                        topic,
                        partition,
                        offset,
                        None if key is None else orjson.loads(key),
                        None if value is None else orjson.loads(value),
                        _headers(msg.headers()),
                    )
                )
        return records
    finally:
        consumer.close()


def _headers(headers: Any) -> dict[str, bytes]:
    """A consumed message's headers (a list of (name, bytes) pairs) as a dict."""
    found: dict[str, bytes] = {}
    for name, raw in headers or []:
        assert isinstance(raw, bytes), (name, raw)
        found[name] = raw
    return found


def topic_exists(bootstrap: str, topic: str) -> bool:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe"})
    try:
        return topic in consumer.list_topics(timeout=30).topics
    finally:
        consumer.close()


@dataclass
class TxEnv:
    name: str
    dsn: str
    bootstrap: str
    config: Path
    connectors: Path
    log_path: Path
    daemons: list[Daemon]

    def topic(self, table: str, *, compacted: bool = False) -> str:
        return f"{self.name}.public.{table}" + (".latest" if compacted else "")

    def start(self) -> Daemon:
        daemon = Daemon.start(self.config, self.connectors, self.log_path)
        self.daemons.append(daemon)
        daemon.wait_for_log("streaming_started", timeout=120)
        return daemon

    def transaction(self, *statements: str) -> tuple[int, int, int]:
        """Run ``statements`` in one transaction: (xid, WAL before, WAL after its commit)."""
        with psycopg.connect(self.dsn) as conn:
            before = _scalar(conn, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
            xid = _scalar(conn, "SELECT txid_current() % 4294967296")
            for statement in statements:
                conn.execute(statement)
            conn.commit()
            after = _scalar(conn, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        return xid, before, after


def _scalar(conn: psycopg.Connection[Any], query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def _env(
    postgres_server: Any, kafka_server: Any, tmp_path: Path, **settings: Any
) -> Iterator[TxEnv]:
    with scratch_database(postgres_server, "txm", SCHEMA) as (name, dsn):
        connector = {
            "name": name,
            "postgres": {"dsn": dsn},
            "slot": name,
            "publication": name,
            "tables": ["public.customers", "public.orders"],
            "status_interval_seconds": 1,
            **settings,
        }
        config, connectors = write_config(tmp_path, kafka_server.bootstrap_servers, [connector])
        env = TxEnv(
            name, dsn, kafka_server.bootstrap_servers, config, connectors,
            tmp_path / "daemon.log", [],
        )  # fmt: skip
        try:
            yield env
        finally:
            for daemon in env.daemons:
                daemon.stop_quietly()


@pytest.fixture
def metadata_on(postgres_server: Any, kafka_server: Any, tmp_path: Path) -> Iterator[TxEnv]:
    yield from _env(postgres_server, kafka_server, tmp_path, provide_transaction_metadata=True)


@pytest.fixture
def metadata_off(postgres_server: Any, kafka_server: Any, tmp_path: Path) -> Iterator[TxEnv]:
    yield from _env(postgres_server, kafka_server, tmp_path)


# Two tables in one transaction: customers c, d + c (a key change), orders c, c, d.
FIRST = (
    "INSERT INTO customers VALUES (10, 'Ada')",
    "INSERT INTO orders VALUES (1, 10, 'new')",
    "INSERT INTO orders VALUES (2, 10, 'new')",
    "UPDATE customers SET id = 11 WHERE id = 10",
    "DELETE FROM orders WHERE id = 2",
)
SECOND = ("UPDATE orders SET status = 'paid' WHERE id = 1",)


def test_a_transaction_over_two_tables_is_framed_and_numbered_and_every_record_is_placed(
    metadata_on: TxEnv,
) -> None:
    env = metadata_on
    env.start()
    transaction_topic = f"{env.name}.transaction"
    first = env.transaction(*FIRST)
    second = env.transaction(*SECOND)
    wait_until(
        lambda: len(read_committed(env.bootstrap, transaction_topic)) >= 4,
        timeout=120,
        what="BEGIN and END of both transactions",
    )
    framing = read_committed(env.bootstrap, transaction_topic)
    assert {r.partition for r in framing} == {0}  # one partition: in commit order
    statuses = [(r.value["status"], r.value["id"]) for r in framing]
    ids = [statuses[0][1], statuses[2][1]]
    assert statuses == [("BEGIN", ids[0]), ("END", ids[0]), ("BEGIN", ids[1]), ("END", ids[1])]
    commit_lsns = []
    for (xid, before, after), tx_id in zip((first, second), ids, strict=True):
        tx_xid, commit_lsn = (int(part) for part in tx_id.split(":"))
        assert tx_xid == xid
        assert before < commit_lsn <= after
        commit_lsns.append(commit_lsn)
    for record in framing:
        assert record.key == {"id": record.value["id"]}
        assert int(record.headers["cdc.lsn"]) == int(record.value["id"].split(":")[1])
    assert framing[0].value == {
        "status": "BEGIN",
        "id": ids[0],
        "ts_ms": framing[0].value["ts_ms"],
        "event_count": None,
        "data_collections": None,
    }
    assert framing[1].value["event_count"] == 6
    assert sorted(
        (c["data_collection"], c["event_count"]) for c in framing[1].value["data_collections"]
    ) == [("public.customers", 3), ("public.orders", 3)]
    assert framing[3].value["event_count"] == 1
    assert framing[3].value["data_collections"] == [
        {"data_collection": "public.orders", "event_count": 1}
    ]

    customers = read_committed(env.bootstrap, env.topic("customers"))
    orders = read_committed(env.bootstrap, env.topic("orders"))
    events = customers + orders
    streamed = [r for r in events if r.value["op"] != "r"]
    assert len(streamed) == 7
    # Each event's transaction block, against its commit LSN header.
    for record in streamed:
        block = record.value["transaction"]
        assert block["id"] == ids[commit_lsns.index(record.position[0])]
        assert block["id"] == framing[0 if block["id"] == ids[0] else 2].value["id"]
        assert (
            record.value["source"]["ts_ms"]
            == framing[0 if block["id"] == ids[0] else 2].value["ts_ms"]
        )
    in_first = sorted(
        (r for r in streamed if r.value["transaction"]["id"] == ids[0]),
        key=lambda r: r.value["transaction"]["total_order"],
    )
    assert [r.value["transaction"]["total_order"] for r in in_first] == [1, 2, 3, 4, 5, 6]
    assert [(r.topic == env.topic("orders"), r.value["op"]) for r in in_first] == [
        (False, "c"),
        (True, "c"),
        (True, "c"),
        (False, "d"),
        (False, "c"),
        (True, "d"),
    ]
    per_table = {
        table: [r.value["transaction"]["data_collection_order"] for r in in_first if r.topic == t]
        for table, t in (("customers", env.topic("customers")), ("orders", env.topic("orders")))
    }
    assert per_table == {"customers": [1, 2, 3], "orders": [1, 2, 3]}
    # The headers' order is the commit order: the transaction's own order, then the next.
    positions = [r.position for r in in_first]
    assert positions == sorted(positions)
    assert positions[3] == positions[4]  # the d and c of the key change: one message
    assert all(p[0] == commit_lsns[0] for p in positions)
    (paid,) = [r for r in streamed if r.value["transaction"]["id"] == ids[1]]
    assert paid.position > positions[-1]

    # The snapshot row: as of the consistent point, before anything committed there.
    (snapshot_row,) = [r for r in customers if r.value["op"] == "r"]
    assert snapshot_row.headers["cdc.seq"] == b"-1"
    assert snapshot_row.position < min(positions)
    assert snapshot_row.value["transaction"] is None

    # Every record of a table's topics is placed, in offset order per partition, and a
    # compacted record names exactly the change of the retention event it mirrors.
    compacted = read_committed(env.bootstrap, env.topic("customers", compacted=True))
    compacted += read_committed(env.bootstrap, env.topic("orders", compacted=True))
    for place in {(r.topic, r.partition) for r in events + compacted}:
        in_partition = sorted(
            (r for r in events + compacted if (r.topic, r.partition) == place),
            key=lambda r: r.offset,
        )
        assert [r.position for r in in_partition] == sorted(r.position for r in in_partition)
    mirrored = {(orjson.dumps(r.key), r.position) for r in events}
    assert {(orjson.dumps(r.key), r.position) for r in compacted} == mirrored
    assert len(compacted) == len(events)


def test_without_transaction_metadata_no_block_and_no_transaction_topic(
    metadata_off: TxEnv,
) -> None:
    env = metadata_off
    daemon = env.start()
    env.transaction(*FIRST)
    wait_until(
        lambda: len(read_committed(env.bootstrap, env.topic("orders"))) >= 3,
        timeout=120,
        what="the orders events",
    )
    events = read_committed(env.bootstrap, env.topic("customers"))
    events += read_committed(env.bootstrap, env.topic("orders"))
    assert [r.value["transaction"] for r in events] == [None] * len(events)
    assert all(set(r.headers) == {"cdc.lsn", "cdc.seq"} for r in events)
    assert not topic_exists(env.bootstrap, f"{env.name}.transaction")
    assert daemon.process.poll() is None


@pytest.fixture
def small_kafka_transactions(
    postgres_server: Any, kafka_server: Any, tmp_path: Path
) -> Iterator[TxEnv]:
    yield from _env(
        postgres_server,
        kafka_server,
        tmp_path,
        provide_transaction_metadata=True,
        exactly_once={"max_records": 500},
    )


BIG = 20_000


def test_a_transaction_over_several_kafka_transactions_is_framed_once_across_a_sigkill(
    small_kafka_transactions: TxEnv,
) -> None:
    """BEGIN, the events and END travel in the Kafka transactions of the data: a source
    transaction of 20,001 events spans ~80 of them; SIGKILLed once its first records are
    in Kafka, the restarted daemon completes it. Whatever the kill interrupted, a
    read_committed consumer sees one BEGIN, every event once and one END counting them."""
    env = small_kafka_transactions
    daemon = env.start()
    xid, _, _ = env.transaction(
        "INSERT INTO customers VALUES (2, 'Brian')",
        f"INSERT INTO orders SELECT g, 2, 'new' FROM generate_series(1, {BIG}) g",
    )
    wait_until(
        lambda: records_in(env.bootstrap, env.topic("orders")) > 0,
        timeout=120,
        what="the first records of the big transaction",
    )
    daemon.kill()
    env.start()
    transaction_topic = f"{env.name}.transaction"
    wait_until(
        lambda: any(
            r.value["status"] == "END" for r in read_committed(env.bootstrap, transaction_topic)
        ),
        timeout=120,
        what="the END of the big transaction",
    )
    framing = [
        r
        for r in read_committed(env.bootstrap, transaction_topic)
        if r.value["id"].startswith(f"{xid}:")
    ]
    assert [r.value["status"] for r in framing] == ["BEGIN", "END"]
    assert framing[1].value["event_count"] == BIG + 1
    orders = read_committed(env.bootstrap, env.topic("orders"))
    assert sorted(r.key["id"] for r in orders) == list(range(1, BIG + 1))
    orders_and_customer = orders + [
        r for r in read_committed(env.bootstrap, env.topic("customers")) if r.value["op"] == "c"
    ]
    orders_total = sorted(r.value["transaction"]["total_order"] for r in orders_and_customer)
    assert orders_total == list(range(1, BIG + 2))
    assert {r.position[0] for r in orders_and_customer} == {
        int(framing[0].value["id"].split(":")[1])
    }
