"""Micro benchmark: the daemon's whole per-event path on one core, without the services.

Prints one JSON line. CopyData frames of the six-column benchmark row (``bench.decode_bench``)
go through the real ``StreamLoop``: framing, the pgoutput decoder, the ``ChangeRouter``, the
envelope encoder and the ``KafkaSink`` in ``exactly_once`` mode, over a producer that only
counts what it is given (so librdkafka's own ~1-1.5 us per record is not included). This is
the Python (or native-core) work per event that the end-to-end rate depends on; a script,
not a test: numbers depend on the machine and are never asserted.

    .venv/bin/python -m bench.core_bench [--transactions 200] [--tx-rows 1000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import platform
import pstats
import struct
import threading
import time
from typing import Any

import structlog

from bench.decode_bench import insert_message, relation_message
from cdc import native
from cdc.config import MessagesConfig, OutboxConfig
from cdc.envelope import EnvelopeEncoder
from cdc.kafka.sink import KafkaSink
from cdc.positions import CommitPolicy
from cdc.protocol.messages import Relation
from cdc.protocol.pgoutput import PgoutputDecoder
from cdc.protocol.values import ValueOptions
from cdc.snapshots.state import ConnectorState
from cdc.snapshots.window import ChunkWindow
from cdc.stream.loop import StreamLoop, StreamTimings
from cdc.stream.router import ChangeRouter, RelationInfo
from cdc.stream.routing import MessageRouter, OutboxRouter


class CountingProducer:
    """Takes records and commits; keeps only counts."""

    def __init__(self) -> None:
        self.records = 0
        self.commits = 0

    def produce(self, *_args: Any, **_kwargs: Any) -> None:
        self.records += 1

    def poll(self, timeout: float = -1) -> int:
        return 0

    def flush(self, timeout: float = -1) -> int:
        return 0

    def purge(self, *_args: Any, **_kwargs: Any) -> None:
        return None

    def init_transactions(self, timeout: float = -1) -> None:
        return None

    def begin_transaction(self) -> None:
        return None

    def commit_transaction(self, timeout: float = -1) -> None:
        self.commits += 1

    def abort_transaction(self, timeout: float = -1) -> None:
        return None

    def close(self) -> bool:
        return True

    def __len__(self) -> int:
        return 0


def _xlog(lsn: int, payload: bytes) -> bytes:
    return b"w" + struct.pack(">QQQ", lsn, lsn, 0) + payload


def build_frames(transactions: int, tx_rows: int) -> list[bytes]:
    insert = insert_message()
    frames = [_xlog(1, relation_message())]
    lsn = 1000
    for xid in range(transactions):
        commit_lsn = lsn + tx_rows + 1
        frames.append(_xlog(lsn, b"B" + struct.pack(">QqI", commit_lsn, 0, 1000 + xid)))
        frames.extend(_xlog(lsn + i + 1, insert) for i in range(tx_rows))
        frames.append(
            _xlog(commit_lsn, b"C\0" + struct.pack(">QQq", commit_lsn, commit_lsn + 1, 0))
        )
        lsn = commit_lsn + 10
    return frames


class ListSource:
    def __init__(self, frames: list[bytes], stop: threading.Event) -> None:
        self._frames = iter(frames)
        self._stop = stop

    def read(self) -> bytes | None:
        frame = next(self._frames, None)
        if frame is None:
            self._stop.set()
        return frame

    def wait(self, timeout: float) -> None:
        return None

    def send(self, payload: bytes) -> None:
        return None


def run(transactions: int, tx_rows: int, profile: bool) -> dict[str, Any]:
    frames = build_frames(transactions, tx_rows)
    stop = threading.Event()
    producer = CountingProducer()
    log = structlog.get_logger("bench")
    sink = KafkaSink(
        producer,
        mode="exactly_once",
        state_topic="c.__cdc_state",
        max_in_flight=40_000,
        policy=CommitPolicy(interval_s=0.5, max_records=50_000),
        transactional_id="cdc-c",
        connector="c",
        log=log,
    )
    sink.start(confirmed=0, durable=None, system_id="sys", slot="s")
    encoder = EnvelopeEncoder(
        connector="c",
        database="db",
        retention_topic=lambda s, t: f"c.{s}.{t}",
        compacted_topic=lambda s, t: f"c.{s}.{t}.latest",
        options=ValueOptions(),
        key_columns=lambda _relation: None,
        types=lambda _oid: None,
    )
    router = ChangeRouter(
        encoder=encoder,
        window=ChunkWindow(ConnectorState()),
        messages=MessageRouter(MessagesConfig(), connector="c", database="db"),
        outbox=OutboxRouter(OutboxConfig(table=None), connector="c"),
        signal_table=None,
        schema_changes=None,
        retention_topic=lambda s, t: f"c.{s}.{t}",
        known_topics=set(),
        keys={},
        types={},
        resume=None,
        transactions=None,
    )

    def relation_info(relation: Relation) -> RelationInfo:
        return RelationInfo(type_names=tuple("text" for _ in relation.columns), partitions=6)

    loop = StreamLoop(
        source=ListSource(frames, stop),
        decoder=PgoutputDecoder(1),
        router=router,
        sink=sink,
        stop=stop,
        relation_info=relation_info,
        handle=lambda _effect: None,
        periodic=lambda: None,
        durable=None,
        observe_latency=lambda _completed: None,
        log=log,
        timings=StreamTimings(),
    )
    events = transactions * tx_rows
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    loop.run()
    if profiler is not None:
        profiler.disable()
    elapsed = time.perf_counter() - started
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    if producer.records < 2 * events:
        raise SystemExit(f"only {producer.records} records for {events} events")
    return {
        "bench": "core",
        "python": platform.python_version(),
        "native_core": native.native_core_active(),
        "events": events,
        "records": producer.records,
        "commits": producer.commits,
        "us_per_event": round(elapsed / events * 1e6, 2),
        "events_per_s": round(events / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transactions", type=int, default=200)
    parser.add_argument("--tx-rows", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary")
    args = parser.parse_args()
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    print(json.dumps(run(args.transactions, args.tx_rows, args.profile)), flush=True)


if __name__ == "__main__":
    main()
