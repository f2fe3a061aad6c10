"""The guard of the legacy server's disk: when the slot's retained WAL warns, recovers,
stops; its settings; and that it runs while the sink waits for Kafka."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from cdc import metrics
from cdc.config import ConnectorConfig, DaemonConfig, WalRetentionConfig
from cdc.errors import ConfigError, SlotError, SourceError
from cdc.kafka.sink import KafkaSink
from cdc.positions import CommitPolicy
from cdc.protocol.pgoutput import PgoutputDecoder
from cdc.stream.loop import StreamLoop, StreamTimings
from cdc.stream.pipeline import ConnectorPipeline
from cdc.stream.wal_guard import (
    REWARN_INTERVAL_S,
    SlotWal,
    WalGuard,
    WalLevel,
    WalVerdict,
    format_bytes,
    stop_error,
)

from .fakes import FakeProducer, FakeSource, frames
from .test_loop import STATE, stream, transaction
from .test_router import info, make_router

MiB = 1024 * 1024


def guard(warn: int | None = 10 * MiB, stop: int | None = 20 * MiB) -> WalGuard:
    return WalGuard(warn_bytes=warn, stop_bytes=stop, interval_s=30.0, now=0.0)


# --- the decision -------------------------------------------------------------------------


def test_below_the_warning_size_nothing_is_said() -> None:
    assert WalVerdict(WalLevel.OK) == guard().assess(SlotWal(MiB), 0.0)


def test_crossing_the_warning_size_warns_once() -> None:
    g = guard()
    assert WalVerdict(WalLevel.WARN, warn=True) == g.assess(SlotWal(10 * MiB), 0.0)
    assert WalVerdict(WalLevel.WARN) == g.assess(SlotWal(11 * MiB), 30.0)


def test_the_warning_is_repeated_every_ten_minutes_while_above() -> None:
    g = guard()
    g.assess(SlotWal(15 * MiB), 0.0)
    assert not g.assess(SlotWal(15 * MiB), REWARN_INTERVAL_S - 1).warn
    assert g.assess(SlotWal(15 * MiB), REWARN_INTERVAL_S).warn
    assert not g.assess(SlotWal(15 * MiB), REWARN_INTERVAL_S + 30).warn


def test_falling_below_says_so_once_and_a_new_crossing_warns_again() -> None:
    g = guard()
    g.assess(SlotWal(15 * MiB), 0.0)
    assert WalVerdict(WalLevel.OK, recovered=True) == g.assess(SlotWal(MiB), 30.0)
    assert WalVerdict(WalLevel.OK) == g.assess(SlotWal(MiB), 60.0)
    assert g.assess(SlotWal(12 * MiB), 90.0).warn


def test_at_the_stop_size_the_verdict_is_stop_with_a_warning() -> None:
    assert WalVerdict(WalLevel.STOP, warn=True) == guard().assess(SlotWal(20 * MiB), 0.0)


def test_without_stop_bytes_it_never_stops() -> None:
    assert guard(stop=None).assess(SlotWal(10**15), 0.0).level is WalLevel.WARN


def test_without_warn_bytes_only_the_stop_size_counts() -> None:
    g = guard(warn=None)
    assert WalVerdict(WalLevel.OK) == g.assess(SlotWal(19 * MiB), 0.0)
    assert WalVerdict(WalLevel.STOP, warn=True) == g.assess(SlotWal(20 * MiB), 0.0)


def test_a_slot_postgresql_is_about_to_invalidate_warns_below_the_size() -> None:
    """wal_status unreserved: max_slot_wal_keep_size is exceeded, the slot is at risk."""
    verdict = guard().assess(SlotWal(MiB, wal_status="unreserved", safe_wal_size=-5), 0.0)
    assert WalVerdict(WalLevel.WARN, warn=True) == verdict


def test_an_invalidated_slot_without_restart_lsn_warns_but_does_not_stop() -> None:
    """No size to compare (the stream itself fails on a lost slot)."""
    verdict = guard().assess(SlotWal(None, wal_status="lost"), 0.0)
    assert WalVerdict(WalLevel.WARN, warn=True) == verdict


def test_a_reading_is_due_once_per_interval() -> None:
    g = guard()
    assert [g.due(t) for t in (0.0, 0.1, 29.9, 30.0)] == [True, False, False, True]


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 * MiB, "3.0 MiB"), (2**50, "1024.0 TiB")],
)
def test_sizes_are_written_for_humans(size: int, text: str) -> None:
    assert text == format_bytes(size)


def test_the_stop_error_names_slot_size_and_the_dbas_options() -> None:
    error = stop_error("cdc_shop", SlotWal(25 * MiB), 20 * MiB)
    assert not error.retryable
    message = str(error)
    for part in (
        "'cdc_shop'",
        str(25 * MiB),
        "25.0 MiB",
        "wal_retention.stop_bytes",
        "SELECT pg_drop_replication_slot('cdc_shop')",
        "snapshot.mode: when_needed",
        "Kafka",
    ):
        assert part in message


# --- the settings ---------------------------------------------------------------------------


def test_the_defaults_warn_at_one_gib_and_never_stop() -> None:
    assert WalRetentionConfig(warn_bytes=1024**3, stop_bytes=None) == WalRetentionConfig()
    assert ConnectorConfig.model_validate(_connector()).wal_retention == WalRetentionConfig()


def test_sizes_take_units() -> None:
    config = WalRetentionConfig.model_validate({"warn_bytes": "512 MiB", "stop_bytes": "2GB"})
    assert (512 * MiB, 2 * 1000**3) == (config.warn_bytes, config.stop_bytes)


def test_stop_below_warn_is_refused_naming_the_key() -> None:
    from cdc.config import load_connector_config_text

    text = "name: c\npostgres: {dsn: 'host=x'}\nwal_retention: {warn_bytes: 10, stop_bytes: 5}\n"
    with pytest.raises(ConfigError) as info_:
        load_connector_config_text(text, source="c.yaml", env={})
    assert "wal_retention" in str(info_.value)
    assert "stop_bytes" in str(info_.value)


@pytest.mark.parametrize("bad", ["1 parsec", True, 0, -1, "GiB"])
def test_a_size_that_is_not_one_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="warn_bytes"):
        WalRetentionConfig.model_validate({"warn_bytes": bad})


# --- the pipeline's hook --------------------------------------------------------------------


class SlotSource:
    """The edge's ``slot_wal``, scripted."""

    def __init__(self, *readings: SlotWal | BaseException | None) -> None:
        self.readings = list(readings)
        self.calls = 0

    def slot_wal(self, server_version: int) -> SlotWal | None:
        self.calls += 1
        reading = self.readings.pop(0)
        if isinstance(reading, BaseException):
            raise reading
        return reading


def _connector(**wal_retention: Any) -> dict[str, Any]:
    return {
        "name": "shop",
        "postgres": {"dsn": "host=x"},
        "wal_retention": wal_retention,
    }


def pipeline(source: SlotSource, **wal_retention: Any) -> ConnectorPipeline:
    daemon = DaemonConfig.model_validate({"kafka": {"bootstrap_servers": "k:9092"}})
    connector = ConnectorConfig.model_validate(_connector(**wal_retention))
    p = ConnectorPipeline(daemon, connector, threading.Event())
    p._source = source  # type: ignore[assignment]
    retention = connector.wal_retention
    p._wal_guard = WalGuard(
        warn_bytes=retention.warn_bytes,
        stop_bytes=retention.stop_bytes,
        interval_s=retention.check_interval_seconds,
        now=0.0,
    )
    return p


def test_the_pipeline_publishes_the_gauge_and_logs_crossing_and_recovery() -> None:
    source = SlotSource(
        SlotWal(3 * MiB, wal_status="extended", safe_wal_size=None),
        SlotWal(100, wal_status="reserved", safe_wal_size=7 * MiB),
    )
    p = pipeline(source, warn_bytes="1 MiB", check_interval_seconds=0.001)
    with capture_logs() as logs:
        p._watch_wal()
        gauge = metrics.SLOT_RETAINED_WAL_BYTES.labels(connector="shop")
        assert 3 * MiB == gauge._value.get()
        status = metrics.SLOT_WAL_STATUS.labels(connector="shop", status="extended")
        assert status._value.get() == 1
        p._wal_guard._next_check = 0.0  # type: ignore[union-attr]
        p._watch_wal()
    assert metrics.SLOT_RETAINED_WAL_BYTES.labels(connector="shop")._value.get() == 100
    assert 7 * MiB == metrics.SLOT_SAFE_WAL_SIZE_BYTES.labels(connector="shop")._value.get()
    assert [e["event"] for e in logs] == ["slot_wal_retained", "slot_wal_retained_ok"]
    warned = logs[0]
    assert ("warning", 3 * MiB, "3.0 MiB") == (
        warned["log_level"],
        warned["retained_bytes"],
        warned["retained"],
    )
    assert "shop" in warned["detail"]
    assert "Kafka" in warned["detail"]
    assert logs[1]["log_level"] == "info"


def test_the_pipeline_checks_at_most_once_per_interval() -> None:
    source = SlotSource(SlotWal(1))
    p = pipeline(source, check_interval_seconds=3600)
    for _ in range(100):
        p._watch_wal()
    assert source.calls == 1


def test_above_stop_bytes_the_pipeline_stops_with_the_fatal_error() -> None:
    p = pipeline(SlotSource(SlotWal(5 * MiB)), warn_bytes="1 MiB", stop_bytes="4 MiB")
    with capture_logs() as logs, pytest.raises(SlotError) as raised:
        p._watch_wal()
    assert "pg_drop_replication_slot('cdc_shop')" in str(raised.value)
    assert [e["event"] for e in logs] == ["slot_wal_retained"]


def test_a_failing_query_is_logged_and_tried_again_next_interval() -> None:
    source = SlotSource(SourceError("permission denied", retryable=False), SlotWal(1))
    p = pipeline(source, check_interval_seconds=0.001)
    with capture_logs() as logs:
        p._watch_wal()
        p._wal_guard._next_check = 0.0  # type: ignore[union-attr]
        p._watch_wal()
    assert [e["event"] for e in logs] == ["slot_wal_check_failed"]
    assert source.calls == 2


def test_a_lost_connection_is_the_streams_business() -> None:
    p = pipeline(SlotSource(SourceError("server closed the connection", retryable=True)))
    with pytest.raises(SourceError, match="server closed"):
        p._watch_wal()


# --- the loop's hook --------------------------------------------------------------------------


def test_the_watch_runs_while_the_sink_waits_for_kafka() -> None:
    """Kafka acknowledges nothing: the loop waits in the sink, and the watch still runs
    (there, WAL piles up); a stop it raises ends the wait and nothing is confirmed."""
    producer = FakeProducer(auto_ack=False)
    sink = KafkaSink(
        producer,
        mode="at_least_once",
        state_topic=STATE,
        max_in_flight=2,
        policy=CommitPolicy(interval_s=60, max_records=1000),
        connector="c",
        log=structlog.get_logger("test"),
    )
    sink.start(confirmed=100, durable=None, system_id="sys", slot="s")
    stop = threading.Event()
    calls = []

    def watch() -> None:
        calls.append(producer.polls)
        if len(calls) == 3:
            raise stop_error("s", SlotWal(5 * MiB), 4 * MiB)

    loop = StreamLoop(
        source=FakeSource(frames(stream(transaction(200, 1, 2, 3))), on_empty=stop.set),
        decoder=PgoutputDecoder(4),
        router=make_router(schema_changes="off"),
        sink=sink,
        stop=stop,
        relation_info=info,
        handle=lambda _effect: None,
        periodic=lambda: None,
        durable=None,
        observe_latency=lambda _completed: None,
        log=structlog.get_logger("test"),
        timings=StreamTimings(shutdown_timeout_s=0.1),
        start_lsn=100,
        watch=watch,
    )
    with pytest.raises(SlotError):
        loop.run()
    assert calls == [1, 2, 3]
    assert sink.confirmed == 100
