"""Micro benchmark of ``EnvelopeEncoder.encode`` on one core; prints one JSON line.

The row is the shape of the Debezium comparison table (bench.public.cdc_bench): bigint
key, int, ~100-character text, numeric(12,2), timestamptz and a small jsonb, inserted
with REPLICA IDENTITY DEFAULT, so each event yields a retention and a compacted record.
Each message gets its position headers built as the router builds them (the commit LSN's
once per transaction of 1,000 rows, the index's per message); ``--transaction-metadata``
also numbers every event's ``transaction`` block (``provide_transaction_metadata``).

    .venv/bin/python bench/envelope_bench.py [--seconds 3] [--transaction-metadata]
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson

from cdc.envelope import SEQ_HEADERS, EnvelopeEncoder, TxContext, lsn_header
from cdc.native import native_core_status
from cdc.protocol.messages import Column, Insert, Relation, ReplicaIdentity, Update
from cdc.protocol.values import ValueOptions
from cdc.stream.transactions import TransactionOrder

RELATION = Relation(
    xid=None,
    oid=16384,
    namespace="public",
    name="cdc_bench",
    replica_identity=ReplicaIdentity.DEFAULT,
    columns=(
        Column(1, "id", 20, -1),
        Column(0, "a", 23, -1),
        Column(0, "b", 25, -1),
        Column(0, "c", 1184, -1),
        Column(0, "d", 1700, ((12 << 16) | 2) + 4),
        Column(0, "e", 3802, -1),
    ),
)
TEXT = "c4ca4238a0b923820dcc509a6f75849b" * 3 + "c4ca"
TX = TxContext(
    xid=12933, commit_lsn=3748886600, commit_ts_us=1795777711720845, last_commit_lsn=None
)
ROWS_PER_TRANSACTION = 1000


def _messages(n: int) -> list[Insert]:
    # Distinct strings per row, as the decoder would hand them over (no cached hashes).
    return [
        Insert(
            xid=None,
            relation=RELATION,
            new=(
                str(i + 1),
                str(i % 1000),
                TEXT,
                f"2026-11-27 11:08:31.{i % 1000000:06d}+00",
                f"{i % 100000}.{i % 100:02d}",
                '{"k": 1, "ok": true, "tag": "bench"}',
            ),
        )
        for i in range(n)
    ]


def _rate(
    encode: object, messages: list[Insert] | list[Update], seconds: float, *, metadata: bool
) -> float:
    assert callable(encode)
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    lsn = 3748886512
    commit_lsn = TX.commit_lsn
    while True:
        for first in range(0, len(messages), ROWS_PER_TRANSACTION):
            # What the router does at a Begin, and per message.
            tx = TX
            if metadata:
                order = TransactionOrder(12933, commit_lsn, TX.commit_ts_us)
                tx = TxContext(12933, commit_lsn, TX.commit_ts_us, None, order.next)
            commit = lsn_header(commit_lsn)
            for index, message in enumerate(messages[first : first + ROWS_PER_TRANSACTION]):
                encode(message, tx, lsn, 1795777711936065, (commit, SEQ_HEADERS[index]))
        done += len(messages)
        if time.perf_counter() >= deadline:
            break
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--transaction-metadata", action="store_true")
    args = parser.parse_args()
    encoder = EnvelopeEncoder(
        connector="bench",
        database="postgres",
        retention_topic=lambda schema, table: f"bench.{schema}.{table}",
        compacted_topic=lambda schema, table: f"bench.{schema}.{table}.compacted",
        options=ValueOptions(),
    )
    inserts = _messages(10_000)
    updates = [
        Update(xid=None, relation=RELATION, old_kind=None, old=None, new=m.new) for m in inserts
    ]
    records = encoder.encode(inserts[0], TX, 3748886512, 1795777711936065)
    metadata = args.transaction_metadata
    insert_rate = _rate(encoder.encode, inserts, args.seconds, metadata=metadata)
    update_rate = _rate(encoder.encode, updates, args.seconds, metadata=metadata)
    print(
        orjson.dumps(
            {
                "bench": "envelope_encode",
                "python": sys.version.split()[0],
                "core": native_core_status(),  # native, or python (CDC_NATIVE=0 / not built)
                "transaction_metadata": metadata,
                "columns": len(RELATION.columns),
                "records_per_event": len(records),
                "value_bytes": len(records[0].value or b""),
                "insert_events_per_s": round(insert_rate),
                "update_events_per_s": round(update_rate),
                "us_per_insert": round(1e6 / insert_rate, 2),
            }
        ).decode()
    )


if __name__ == "__main__":
    main()
