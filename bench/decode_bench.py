"""Micro benchmark: pgoutput Insert messages decoded per second on one core.

Prints one JSON line. The row has six columns, a typical OLTP shape: bigint, int, a
~100-character text, numeric, timestamptz and a small jsonb, all in pgoutput's text form.
This is a script, not a test: numbers depend on the machine and are never asserted.

    .venv/bin/python bench/decode_bench.py [--messages N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import platform
import struct
import sys
import time

from cdc.native import native_core_status
from cdc.protocol.messages import Column, Relation, ReplicaIdentity, XLogData
from cdc.protocol.pgoutput import PgoutputDecoder
from cdc.protocol.replication import parse_copy_data

RELATION_OID = 16384
COLUMNS = (
    Column(1, "id", 20, -1),  # bigint
    Column(0, "quantity", 23, -1),  # int
    Column(0, "description", 25, -1),  # text
    Column(0, "price", 1700, (12 << 16 | 2) + 4),  # numeric(12,2)
    Column(0, "created_at", 1184, -1),  # timestamptz
    Column(0, "attributes", 3802, -1),  # jsonb
)
VALUES = (
    "9007199254740993",
    "42",
    "A sturdy oak side table with two drawers, brass handles and a hand-rubbed oil finish "
    "(ships flat).",
    "1234.56",
    "2024-05-01 12:34:56.789012+00",
    '{"color": "oak", "tags": ["furniture", "table"], "stock": 17}',
)


def relation_message() -> bytes:
    out = bytearray(b"R")
    out += struct.pack(">I", RELATION_OID) + b"public\0products\0" + b"d"
    out += struct.pack(">H", len(COLUMNS))
    for column in COLUMNS:
        out += bytes([column.flags]) + column.name.encode() + b"\0"
        out += struct.pack(">Ii", column.type_oid, column.type_modifier)
    return bytes(out)


def insert_message() -> bytes:
    out = bytearray(b"I") + struct.pack(">I", RELATION_OID) + b"N"
    out += struct.pack(">H", len(VALUES))
    for value in VALUES:
        encoded = value.encode()
        out += b"t" + struct.pack(">I", len(encoded)) + encoded
    return bytes(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5, help="best of R runs is reported")
    args = parser.parse_args()

    decoder = PgoutputDecoder(protocol_version=2)
    relation = decoder.decode(relation_message())
    assert isinstance(relation, Relation)
    assert relation.replica_identity is ReplicaIdentity.DEFAULT
    payload = insert_message()
    # As the source edge delivers it: a memoryview over one CopyData 'w' frame.
    frame = memoryview(b"w" + struct.pack(">QQq", 1, 2, 3) + payload)
    decode = decoder.decode
    n = args.messages
    assert isinstance(parse_copy_data(frame), XLogData)

    best_decode = best_framed = float("inf")
    for _ in range(args.repeat):
        start = time.perf_counter()
        for _ in range(n):
            decode(payload)
        best_decode = min(best_decode, time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(n):
            decode(parse_copy_data(frame).data)  # type: ignore[union-attr]
        best_framed = min(best_framed, time.perf_counter() - start)

    print(
        json.dumps(
            {
                "benchmark": "pgoutput_insert_6_columns",
                "message_bytes": len(payload),
                "messages": n,
                "decode_per_s": round(n / best_decode),
                "frame_and_decode_per_s": round(n / best_framed),
                "python": platform.python_version(),
                "implementation": sys.implementation.name,
                "core": native_core_status(),  # native, or python (CDC_NATIVE=0 / not built)
            }
        )
    )


if __name__ == "__main__":
    main()
