"""End-to-end benchmark: PostgreSQL -> cdc -> Kafka (both topics), against pg_recvlogical.

Prints one JSON line per run. Not a test: numbers, never assertions. Workload (issue #2):
100,000 rows inserted in transactions of 1,000 rows into a six-column table (bigint key,
int, ~100-char text, numeric, timestamptz, small jsonb).

    .venv/bin/python -m bench.e2e [--rows 100000] [--tx-rows 1000] [--modes both] [--keep DIR]
        [--kafka-property KEY=VALUE ...]  # producer settings, daemon and Kafka-only alike
        [--connector-setting KEY=VALUE ...]  # e.g. max_in_flight_events=5000

Measures, on throwaway PostgreSQL and Kafka started beside the daemon, for each delivery
mode (``at_least_once`` and ``exactly_once``, in the same run, so they compare):
- backlog: rows written first, then the daemon starts; events/s from the daemon's start
  to the last record consumed back from both topics, and (``backlog_streaming``) from the
  first record consumed, without the start-up (``backlog_startup_s``);
- live: the daemon streams while the rows are written; events/s from the first commit to
  the last record consumed back from both topics;
- latency: commit -> consumed from Kafka, p50/p99, at a steady offered 10,000 rows/s;
- the daemon's CPU seconds per 100,000 events (start-up included) and, in the backlog, its
  CPU per event from the moment its slot is active (every thread: librdkafka's too), the
  same per thread name (``python``: every Python thread; ``rdk:*``: librdkafka's), the
  CPU per event of the servers beside it (PostgreSQL: its backends, the walsender among
  them; Kafka: the broker's JVM), and its peak RSS: on this machine the three share two
  cores, so their sum per event bounds the rate;
- large transaction (``--large-tx-rows``, 1,000,000 by default, 0 skips it): the daemon's
  peak RSS after streaming one transaction of 1,000 rows, then one of a tenth of that many
  rows, then one of that many, and the ratios (flat memory: no per-transaction
  buffering; the tenth shows what a full-speed stream costs whatever its size);
- Kafka alone: the backlog's records, read back and produced again as they are (same keys,
  values, headers and partitions; the daemon's producer settings; transactions of 50,000
  records in exactly_once) to fresh topics, and counted by the same consumer: the rate
  this machine's broker and consumer allow with no PostgreSQL and no daemon work at all;
and once, raw: pg_recvlogical (pgoutput, same publication) reading the same changes to
/dev/null, with PostgreSQL's CPU per event meanwhile. Rates are also given as ratios to
the raw rate of the same run (absolute figures on a shared machine vary by +-30 % from run
to run).

The consumers read ``read_committed`` (what a consumer of an exactly_once topic must do),
so the latency is commit -> visible, measured per record from the commit timestamp in
its envelope to the moment the consumer holds it (not interpolated from histograms).
Before any phase, the broker is warmed up: a transactional producer writes and a consumer
reads back 200,000 records, so the JVM has compiled its hot paths and the transaction
coordinator is loaded, as on any broker that has been running for a while (on a broker
started seconds before, the first phase would otherwise measure the JVM's warm-up).
Consumption time bounds acknowledgement time from above, so the rates are conservative.
Each phase checks itself before it reports a rate: every row must be on both topics, once
per key on the retention topic in exactly_once mode; otherwise the phase reports an error
instead of numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import psycopg
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cdc.kafka.client import PRODUCER_DEFAULTS, PRODUCER_REQUIRED
from cdc.testing import free_port
from cdc.testing.kafka import start_kafka
from cdc.testing.postgres import find_postgres_bin_dir, start_postgres

TABLE = """
CREATE TABLE bench (
    id bigint PRIMARY KEY,
    qty integer NOT NULL,
    note text NOT NULL,
    price numeric(12,2) NOT NULL,
    created_at timestamptz NOT NULL,
    attrs jsonb NOT NULL
)
"""

INSERT = """
INSERT INTO bench
SELECT g, g %% 1000, repeat(md5(g::text), 3) || 'abcd', (g %% 100000) / 100.0, now(),
       jsonb_build_object('k', g, 'ok', true, 'tag', 'bench')
FROM generate_series(%s::bigint, %s::bigint) AS g
"""


def _insert(conn: psycopg.Connection[Any], first: int, count: int) -> None:
    with conn.transaction():
        conn.execute(INSERT, (first, first + count - 1))


def _reader(bootstrap: str, topics: list[str], settings: dict[str, Any] | None = None) -> Consumer:
    """A read_committed consumer assigned every partition of ``topics`` from the start."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            **(settings or {}),
        }
    )
    assignments = []
    for wanted in topics:
        meta = consumer.list_topics(wanted, timeout=30).topics[wanted]
        assignments += [TopicPartition(wanted, p, 0) for p in meta.partitions]
    consumer.assign(assignments)
    return consumer


class TopicCounter(threading.Thread):
    """Consumes both topics from the beginning; records when each reaches a target."""

    def __init__(self, bootstrap: str, topics: list[str], target: int) -> None:
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.topics = topics
        self.target = target
        self.counts = dict.fromkeys(topics, 0)
        self.done_at: dict[str, float] = {}
        self.latencies_us: list[int] = []
        self.produce_latencies_us: list[int] = []  # commit -> the daemon's produce() call
        self.collect_latency = False
        self.stop = threading.Event()
        self.keys: dict[bytes, int] = {}  # retention topic: records per key
        self.first_at: float | None = None  # when the first record was consumed

    def run(self) -> None:
        consumer = _reader(
            self.bootstrap, self.topics, {"fetch.wait.max.ms": 5, "fetch.min.bytes": 1}
        )
        retention = self.topics[0]
        while not self.stop.is_set() and len(self.done_at) < len(self.topics):
            batch = consumer.consume(num_messages=1000, timeout=0.005)
            now = time.time()
            if batch and self.first_at is None:
                self.first_at = now
            for msg in batch:
                if msg.error():
                    continue
                topic, payload = msg.topic(), msg.value()
                if topic is None:
                    continue
                self.counts[topic] += 1
                if topic == retention:
                    key = msg.key() or b""
                    self.keys[key] = self.keys.get(key, 0) + 1
                if self.collect_latency and topic == retention and payload is not None:
                    value = orjson.loads(payload)
                    self.latencies_us.append(int(now * 1e6) - value["source"]["ts_us"])
                    # librdkafka stamps CreateTime when the daemon calls produce()
                    produced_ms = msg.timestamp()[1]
                    self.produce_latencies_us.append(produced_ms * 1000 - value["source"]["ts_us"])
            for name, count in self.counts.items():
                if count >= self.target and name not in self.done_at:
                    self.done_at[name] = now
        consumer.close()


# --kafka-property KEY=VALUE: producer settings for this run, given to the daemon
# (kafka.properties) and to the Kafka-only ceiling alike, so the ratio stays like for like.
KAFKA_PROPERTIES: dict[str, Any] = {}
# Connector settings of every daemon the bench starts (--connector-setting), e.g.
# max_in_flight_events, whose window is most of the memory a full-speed stream uses.
CONNECTOR_SETTINGS: dict[str, Any] = {}


def _warm_up(bootstrap: str, records: int = 200_000) -> None:
    """Write and read back ``records`` transactional records: the broker's JIT and its
    transaction coordinator are warm before anything is measured."""
    topic = "bench-warm-up"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 6, 1)]).values():
        future.result()
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": "bench-warm-up",
            "compression.type": "lz4",
            "linger.ms": 5,
            "batch.size": 1_000_000,
        }
    )
    producer.init_transactions(60)
    value = b"x" * 700
    counter = TopicCounter(bootstrap, [topic], records)
    counter.start()
    producer.begin_transaction()
    for i in range(records):
        producer.produce(topic, value, b"%d" % i, headers=[("h", b"1")])
        if i % 20_000 == 19_999:
            producer.commit_transaction(60)
            producer.begin_transaction()
    producer.commit_transaction(60)
    counter.join(120)
    counter.stop.set()


def _ensure_topics(bootstrap: str, topics: list[str], timeout: float = 60) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(t in admin.list_topics(timeout=10).topics for t in topics):
            return
        time.sleep(0.1)
    raise RuntimeError(f"topics {topics} not created within {timeout}s")


class DaemonProcess:
    def __init__(
        self,
        workdir: Path,
        bootstrap: str,
        dsn: str,
        name: str,
        profile: Path | None = None,
        metrics_port: int | None = None,
        snapshot: dict[str, Any] | None = None,
        delivery: str = "exactly_once",
    ) -> None:
        (workdir / "connectors").mkdir(parents=True, exist_ok=True)
        (workdir / "cdc.yaml").write_text(
            yaml.safe_dump(
                {
                    "kafka": {"bootstrap_servers": bootstrap, "properties": KAFKA_PROPERTIES},
                    "topics": {"partitions": 6, "replication_factor": 1},
                    "log": {"level": "info", "format": "json"},
                    "metrics": {"port": metrics_port},
                }
            )
        )
        (workdir / "connectors" / f"{name}.yaml").write_text(
            yaml.safe_dump(
                {
                    "name": name,
                    "postgres": {"dsn": dsn},
                    "slot": name,
                    "publication": name,
                    "tables": ["public.bench"],
                    "snapshot": snapshot or {"mode": "never"},
                    "delivery": delivery,
                    **CONNECTOR_SETTINGS,
                }
            )
        )
        self.log = (workdir / f"{name}.log").open("ab")
        command = [
            sys.executable, "-m", "cdc", "run",
            "--config", str(workdir / "cdc.yaml"),
            "--connectors", str(workdir / "connectors"),
        ]  # fmt: skip
        if profile is not None:  # py-spy (pip install py-spy) samples the daemon's stacks
            command = [
                "py-spy", "record", "--format", "raw", "--rate", "250",
                "-o", str(profile), "--", *command,
            ]  # fmt: skip
        self.profiling = profile is not None
        self.process = subprocess.Popen(
            command,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.profiling:  # py-spy writes its profile on SIGINT and stops the daemon too
            self.process.send_signal(signal.SIGINT)
        else:
            self.process.terminate()
        self.process.wait(60)
        self.log.close()


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of a process (/proc/<pid>/task), threads of one name
    summed: where a process's CPU goes (Python's main thread, librdkafka's rdk:*)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        name = text[text.index("(") + 1 : text.rindex(")")]
        name = name.rstrip("0123456789")  # rdk:broker1, rdk:broker2 -> rdk:broker
        fields = text.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def _group_cpu(pid: int) -> float:
    """CPU seconds of a server so far: the process, its ended children (reaped: cutime,
    cstime) and its live ones (PostgreSQL's backends, the walsender among them, each in a
    session of its own)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(proc.name) == pid:
            total += sum(int(f) for f in fields[11:15]) / ticks
        elif int(fields[1]) == pid:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _histogram_quantiles(port: int, name: str, quantiles: tuple[float, ...]) -> list[float]:
    """Quantiles (ms) of a Prometheus histogram, interpolated inside its buckets."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    total = buckets[-1][1]
    results = []
    for q in quantiles:
        target = q * total
        previous_bound, previous_count = 0.0, 0.0
        for bound, count in buckets:
            if count >= target:
                if bound == float("inf"):
                    results.append(previous_bound * 1000)
                else:
                    share = (target - previous_count) / max(count - previous_count, 1e-9)
                    results.append((previous_bound + share * (bound - previous_bound)) * 1000)
                break
            previous_bound, previous_count = bound, count
    return results


def _wal_lsn(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def _check(counter: TopicCounter, rows: int, mode: str) -> str | None:
    """Why the phase's numbers cannot be trusted, or None: every row on both topics,
    and in exactly_once mode once per key on the retention topic."""
    if len(counter.done_at) < len(counter.topics):
        return f"not every row arrived: {counter.counts} of {rows}"
    if len(counter.keys) != rows:
        return f"{len(counter.keys)} distinct keys on the retention topic, not {rows}"
    repeated = sum(1 for n in counter.keys.values() if n > 1)
    if mode == "exactly_once" and repeated:
        return f"{repeated} keys appear more than once on the retention topic"
    return None


def _wait_streaming(dsn: str, slot: str, timeout: float = 120) -> None:
    """Until the daemon reads its slot: rows written before the slot exists are not in it."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,)
            ).fetchone()
            if row is not None and row[0]:
                return
            time.sleep(0.05)
    raise RuntimeError(f"the daemon did not start streaming from slot {slot} in {timeout}s")


def _write(dsn: str, rows: int, tx_rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for first in range(1, rows + 1, tx_rows):
            _insert(conn, first, min(tx_rows, rows - first + 1))


def _backlog(
    pg: Any, kafka: Any, base: Path, mode: str, rows: int, tx_rows: int, profile: Path | None
) -> dict[str, Any]:
    name = f"backlog_{mode}"
    dsn = pg.dsn(dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TABLE)
        conn.execute(f"CREATE PUBLICATION {name} FOR TABLE bench")
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
    _write(dsn, rows, tx_rows)
    topics = [f"{name}.public.bench", f"{name}.public.bench.latest"]
    counter = TopicCounter(kafka.bootstrap_servers, topics, rows)
    started_wall = time.time()  # the process start: its start-up counts
    daemon = DaemonProcess(
        base / name, kafka.bootstrap_servers, dsn, name, profile=profile, delivery=mode
    )
    _ensure_topics(kafka.bootstrap_servers, topics)
    counter.start()
    _wait_streaming(dsn, name)
    cpu_at_streaming = daemon.cpu_seconds()  # start-up done: imports, clients, state read
    threads_at_streaming = _thread_cpu(daemon.process.pid)
    servers_at_streaming = {"postgres": _group_cpu(pg.pid), "kafka": _group_cpu(kafka.pid)}
    counter.join(300)
    counter.stop.set()
    error = _check(counter, rows, mode)
    cpu = daemon.cpu_seconds()
    threads = _thread_cpu(daemon.process.pid)
    servers = {"postgres": _group_cpu(pg.pid), "kafka": _group_cpu(kafka.pid)}
    rss = daemon.peak_rss_mb()
    daemon.stop()
    if error:
        return {"backlog_error": error}
    backlog_s = max(counter.done_at.values()) - started_wall
    assert counter.first_at is not None
    streaming_s = max(counter.done_at.values()) - counter.first_at
    return {
        "backlog_events_per_s": round(rows / backlog_s),
        # The same without the daemon's start-up (process start to its first record).
        "backlog_streaming_events_per_s": round(rows / streaming_s),
        "backlog_startup_s": round(counter.first_at - started_wall, 2),
        "backlog_cpu_s_per_100k_events": round(cpu * 100_000 / rows, 2),
        # The daemon's CPU (every thread, librdkafka's included) from the moment its slot
        # is active to the last record consumed, per event: the per-event cost alone.
        "backlog_streaming_cpu_us_per_event": round((cpu - cpu_at_streaming) * 1e6 / rows, 2),
        # The same per thread of the daemon, and for the servers beside it on this machine
        # (PostgreSQL: every backend, the walsender included; Kafka: the broker's JVM).
        "backlog_streaming_thread_cpu_us_per_event": {
            n: round((t - threads_at_streaming.get(n, 0.0)) * 1e6 / rows, 2)
            for n, t in sorted(threads.items())
            if t - threads_at_streaming.get(n, 0.0) > 0
        },
        "backlog_streaming_server_cpu_us_per_event": {
            n: round((servers[n] - servers_at_streaming[n]) * 1e6 / rows, 2) for n in servers
        },
        "backlog_peak_rss_mb": round(rss, 1),
    }


def _live(pg: Any, kafka: Any, base: Path, mode: str, rows: int, tx_rows: int) -> dict[str, Any]:
    name = f"live_{mode}"
    dsn = pg.dsn(dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TABLE)
    daemon = DaemonProcess(base / name, kafka.bootstrap_servers, dsn, name, delivery=mode)
    topics = [f"{name}.public.bench", f"{name}.public.bench.latest"]
    _ensure_topics(kafka.bootstrap_servers, topics)
    _wait_streaming(dsn, name)
    counter = TopicCounter(kafka.bootstrap_servers, topics, rows)
    counter.start()
    with psycopg.connect(dsn, autocommit=True) as conn:
        first_commit = None
        for first in range(1, rows + 1, tx_rows):
            _insert(conn, first, min(tx_rows, rows - first + 1))
            if first_commit is None:
                first_commit = time.time()
        writes_done = time.time()
    counter.join(300)
    counter.stop.set()
    assert first_commit is not None
    error = _check(counter, rows, mode)
    cpu = daemon.cpu_seconds()
    rss = daemon.peak_rss_mb()
    daemon.stop()
    if error:
        return {"live_error": error}
    live_s = max(counter.done_at.values()) - first_commit
    return {
        "live_events_per_s": round(rows / live_s),
        "live_write_rows_per_s": round(rows / (writes_done - first_commit)),
        "live_cpu_s_per_100k_events": round(cpu * 100_000 / rows, 2),
        "live_peak_rss_mb": round(rss, 1),
    }


def _latency(pg: Any, kafka: Any, base: Path, mode: str) -> dict[str, Any]:
    """Commit -> visible to a read_committed consumer, at a steady 10,000 rows/s."""
    name = f"latency_{mode}"
    dsn = pg.dsn(dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TABLE)
    metrics_port = free_port()
    daemon = DaemonProcess(
        base / name, kafka.bootstrap_servers, dsn, name, metrics_port=metrics_port, delivery=mode
    )
    topics = [f"{name}.public.bench", f"{name}.public.bench.latest"]
    _ensure_topics(kafka.bootstrap_servers, topics)
    _wait_streaming(dsn, name)
    rate, seconds, batch = 10_000, 10, 100
    total = rate * seconds
    counter = TopicCounter(kafka.bootstrap_servers, topics, total)
    counter.collect_latency = True
    counter.start()
    with psycopg.connect(dsn, autocommit=True) as conn:
        start = time.perf_counter()
        for i, first in enumerate(range(1, total + 1, batch)):
            due = start + i * batch / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            _insert(conn, first, batch)
        offered_s = time.perf_counter() - start
    counter.join(120)
    error = _check(counter, total, mode)
    if error:
        daemon.stop()
        return {"latency_error": error}
    latencies = sorted(counter.latencies_us)
    p50, p99 = _histogram_quantiles(metrics_port, "cdc_commit_to_ack_seconds", (0.5, 0.99))
    commits: dict[str, Any] = {}
    if mode == "exactly_once":  # the floor of the latency: each Kafka commit's duration
        c50, c99 = _histogram_quantiles(metrics_port, "cdc_kafka_commit_seconds", (0.5, 0.99))
        commits = {
            "latency_kafka_commit_p50_ms": round(c50, 1),
            "latency_kafka_commit_p99_ms": round(c99, 1),
        }
    produced = sorted(counter.produce_latencies_us)
    daemon.stop()
    return {
        **commits,
        "latency_offered_rows_per_s": round(total / offered_s),
        "latency_p50_ms": round(latencies[len(latencies) // 2] / 1000, 1),
        "latency_p99_ms": round(latencies[int(len(latencies) * 0.99)] / 1000, 1),
        "latency_max_ms": round(latencies[-1] / 1000, 1),
        "latency_commit_to_durable_p50_ms": round(p50, 1),
        "latency_commit_to_durable_p99_ms": round(p99, 1),
        "latency_commit_to_produce_p50_ms": round(produced[len(produced) // 2] / 1000, 1),
        "latency_commit_to_produce_p99_ms": round(produced[int(len(produced) * 0.99)] / 1000, 1),
    }


def _read_all(bootstrap: str, topics: list[str], count: int) -> list[tuple[Any, ...]]:
    """Every record of ``topics`` (``count`` per topic): (topic index, partition, key,
    value, headers)."""
    consumer = _reader(bootstrap, topics)
    records: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + 300
    while len(records) < count * len(topics) and time.monotonic() < deadline:
        for msg in consumer.consume(num_messages=10_000, timeout=0.5):
            if msg.error() is None:
                index = topics.index(msg.topic() or "")
                records.append((index, msg.partition(), msg.key(), msg.value(), msg.headers()))
    consumer.close()
    records.sort(key=lambda r: r[0])  # retention records first, as in a daemon's unit
    return records


def _kafka_only(kafka: Any, source_topics: list[str], mode: str, rows: int) -> dict[str, Any]:
    """The backlog's records produced again with nothing else to do: the ceiling."""
    bootstrap = kafka.bootstrap_servers
    records = _read_all(bootstrap, source_topics, rows)
    if len(records) != 2 * rows:
        return {"kafka_only_error": f"read {len(records)} records back, not {2 * rows}"}
    # Interleave the two topics per event, as the daemon produces them.
    retention, compacted = records[:rows], records[rows:]
    by_key = {r[2]: r for r in compacted}
    stamp = time.time_ns()
    topics = [f"kafka-only-{stamp}", f"kafka-only-{stamp}.latest"]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, 6, 1) for t in topics]).values():
        future.result()
    settings: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        **PRODUCER_DEFAULTS,
        **KAFKA_PROPERTIES,
        **PRODUCER_REQUIRED,
    }
    exactly_once = mode == "exactly_once"
    if exactly_once:
        settings["transactional.id"] = f"bench-kafka-only-{stamp}"
    producer = Producer(settings)
    if exactly_once:
        producer.init_transactions(60)
    counter = TopicCounter(bootstrap, topics, rows)
    counter.start()
    time.sleep(1)  # the consumer is assigned before the clock starts
    started = time.time()
    if exactly_once:
        producer.begin_transaction()
    produce = producer.produce
    produced = 0
    for _, partition, key, value, headers in retention:
        twin = by_key[key]
        produce(topics[0], value, key, partition=partition, headers=headers)
        produce(topics[1], twin[3], key, partition=twin[1], headers=twin[4])
        produced += 2
        if produced % 50_000 == 0:
            if exactly_once:
                producer.commit_transaction(60)
                producer.begin_transaction()
            else:
                producer.poll(0)
        while len(producer) >= 40_000:
            producer.poll(0.001)
    if exactly_once:
        producer.commit_transaction(60)
    producer.flush(60)
    counter.join(300)
    counter.stop.set()
    error = _check(counter, rows, mode)
    if error:
        return {"kafka_only_error": error}
    return {"kafka_only_events_per_s": round(rows / (max(counter.done_at.values()) - started))}


def _large_transaction(pg: Any, kafka: Any, base: Path, mode: str, rows: int) -> dict[str, Any]:
    """Peak RSS after a 1,000-row transaction, then after one of ``rows`` rows."""
    name = f"large_{mode}"
    dsn = pg.dsn(dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TABLE)
    daemon = DaemonProcess(base / name, kafka.bootstrap_servers, dsn, name, delivery=mode)
    topics = [f"{name}.public.bench", f"{name}.public.bench.latest"]
    _ensure_topics(kafka.bootstrap_servers, topics)
    _wait_streaming(dsn, name)
    small, medium = 1_000, max(1, rows // 10)
    counter = TopicCounter(kafka.bootstrap_servers, topics, small + medium + rows)
    counter.start()
    with psycopg.connect(dsn, autocommit=True) as conn:
        _insert(conn, 1, small)
        while min(counter.counts.values()) < small:
            time.sleep(0.05)
        rss_small = daemon.peak_rss_mb()
        # A tenth of the large one, at full speed too: memory that grows with the
        # transaction's size would show between this one and the large one.
        _insert(conn, small + 1, medium)
        while min(counter.counts.values()) < small + medium:
            time.sleep(0.05)
        rss_medium = daemon.peak_rss_mb()
        committed = time.time()
        _insert(conn, small + medium + 1, rows)
    counter.join(600)
    counter.stop.set()
    error = _check(counter, small + medium + rows, mode)
    rss_large = daemon.peak_rss_mb()
    daemon.stop()
    if error:
        return {"large_tx_error": error}
    return {
        "large_tx_rows": rows,
        "large_tx_rows_per_s": round(rows / (max(counter.done_at.values()) - committed)),
        "large_tx_peak_rss_mb_after_1k_rows_tx": round(rss_small, 1),
        "large_tx_peak_rss_mb_after_tenth_tx": round(rss_medium, 1),
        "large_tx_peak_rss_mb_after_large_tx": round(rss_large, 1),
        "large_tx_rss_ratio": round(rss_large / rss_small, 2),
        "large_tx_rss_ratio_to_tenth": round(rss_large / rss_medium, 2),
    }


def _raw_rate(pg: Any, rows: int, tx_rows: int) -> tuple[float, float]:
    """pg_recvlogical reading the same kind of changes to /dev/null: events/s, and
    PostgreSQL's CPU per event meanwhile (the walsender decoding them), in µs."""
    dsn = pg.dsn(dbname="raw")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TABLE)
        conn.execute("CREATE PUBLICATION raw FOR TABLE bench")
        conn.execute("SELECT pg_create_logical_replication_slot('raw', 'pgoutput')")
    _write(dsn, rows, tx_rows)
    with psycopg.connect(dsn, autocommit=True) as conn:
        end_lsn = _wal_lsn(conn)
    recvlogical = shutil.which("pg_recvlogical") or str(find_postgres_bin_dir() / "pg_recvlogical")
    started = time.perf_counter()
    cpu_before = _group_cpu(pg.pid)
    subprocess.run(
        [
            recvlogical, "-d", dsn, "--slot", "raw", "--start", "--endpos", end_lsn,
            "-o", "proto_version=1", "-o", "publication_names=raw", "-f", "/dev/null",
            "--no-loop",
        ],
        check=True,
    )  # fmt: skip
    rate = rows / (time.perf_counter() - started)
    return rate, (_group_cpu(pg.pid) - cpu_before) * 1e6 / rows


def run(
    rows: int,
    tx_rows: int,
    base: Path,
    profile: Path | None = None,
    modes: tuple[str, ...] = ("at_least_once", "exactly_once"),
    large_tx_rows: int = 1_000_000,
) -> dict[str, Any]:
    pg = start_postgres(base / "pg")
    kafka = start_kafka(base / "kafka")
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            phases = ("backlog", "live", "latency", "large")
            for db in ("raw", *(f"{p}_{m}" for m in modes for p in phases)):
                conn.execute(f"CREATE DATABASE {db}")
        _warm_up(kafka.bootstrap_servers)
        raw, raw_pg_cpu_us = _raw_rate(pg, rows, tx_rows)
        result: dict[str, Any] = {
            "bench": "e2e",
            "rows": rows,
            "tx_rows": tx_rows,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "raw_pg_recvlogical_events_per_s": round(raw),
            # PostgreSQL's CPU per event while pg_recvlogical reads: the decoding's cost.
            "raw_postgres_cpu_us_per_event": round(raw_pg_cpu_us, 2),
        }
        if KAFKA_PROPERTIES:
            result["kafka_properties"] = KAFKA_PROPERTIES
        if CONNECTOR_SETTINGS:
            result["connector_settings"] = CONNECTOR_SETTINGS
        for mode in modes:
            backlog_topics = [f"backlog_{mode}.public.bench", f"backlog_{mode}.public.bench.latest"]
            figures = {
                **_backlog(pg, kafka, base, mode, rows, tx_rows, profile),
                **_kafka_only(kafka, backlog_topics, mode, rows),
                **_live(pg, kafka, base, mode, rows, tx_rows),
                **_latency(pg, kafka, base, mode),
            }
            if large_tx_rows:
                figures.update(_large_transaction(pg, kafka, base, mode, large_tx_rows))
            for phase in ("backlog", "backlog_streaming", "live"):
                if f"{phase}_events_per_s" in figures:
                    figures[f"{phase}_ratio_to_raw"] = round(
                        figures[f"{phase}_events_per_s"] / raw, 3
                    )
                    if "kafka_only_events_per_s" in figures:
                        figures[f"{phase}_ratio_to_kafka_only"] = round(
                            figures[f"{phase}_events_per_s"] / figures["kafka_only_events_per_s"],
                            3,
                        )
            result[mode] = figures
        return result
    finally:
        kafka.stop()
        pg.stop()


def _key_values(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` arguments as a dict; digits become an int."""
    pairs = (item.partition("=") for item in items)
    return {key: int(value) if value.isdigit() else value for key, _, value in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--tx-rows", type=int, default=1_000)
    parser.add_argument(
        "--large-tx-rows",
        type=int,
        default=1_000_000,
        help="rows of the large-transaction phase (0 skips it)",
    )
    parser.add_argument("--keep", type=Path, help="keep service data and logs in this folder")
    parser.add_argument(
        "--profile", type=Path, help="write a py-spy profile of the backlog run to this file"
    )
    parser.add_argument(
        "--modes",
        choices=["both", "exactly_once", "at_least_once"],
        default="both",
        help="delivery modes to measure (default: both, in the same run)",
    )
    parser.add_argument(
        "--kafka-property",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a producer setting for the daemon and the Kafka-only ceiling (repeatable)",
    )
    parser.add_argument(
        "--connector-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a top-level connector setting of the daemons, e.g. max_in_flight_events=5000",
    )
    args = parser.parse_args()
    KAFKA_PROPERTIES.update(_key_values(args.kafka_property))
    CONNECTOR_SETTINGS.update(_key_values(args.connector_setting))
    modes = ("at_least_once", "exactly_once") if args.modes == "both" else (args.modes,)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(args.rows, args.tx_rows, args.keep, args.profile, modes, args.large_tx_rows)
    else:
        with tempfile.TemporaryDirectory(prefix="cdc-bench-") as tmp:
            os.chmod(tmp, 0o755)
            result = run(
                args.rows, args.tx_rows, Path(tmp), args.profile, modes, args.large_tx_rows
            )
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
