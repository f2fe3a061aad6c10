"""Runs every enabled connector in its own thread, restarts them after retryable errors,
and turns SIGTERM/SIGINT into a clean stop (make Kafka durable, confirm, exit 0).

Retryable (``CdcError.retryable``, decided by each edge's error mapping): a lost
PostgreSQL connection, a server restart, a slot still held by a dying walsender, Kafka
unreachable or slow (the connector restarts from what Kafka durably holds, so nothing is
lost). Fatal: what a person must fix (a setting, a privilege, a topic's policy, a replication
factor the cluster cannot meet, another instance holding the connector's transactional
id). A fatal error stops that connector with its one-line fix, and is never retried; the
others go on; the daemon exits 1 when no connector is left running.
"""

from __future__ import annotations

import gc
import signal
import threading
import time
from types import FrameType

import structlog

from cdc import metrics
from cdc.check.run import preflight
from cdc.config import ConnectorConfig, DaemonConfig, ReplayConfig
from cdc.errors import CdcError, ConfigError
from cdc.logging import redact_dsn
from cdc.native import native_core_status
from cdc.status import BOARD, start_status_server
from cdc.stream.pipeline import ConnectorPipeline

__all__ = ["ConnectorRunner", "is_retryable", "run_daemon"]

# Restart backoff: first retry soon (a blip), then back off to spare a struggling server.
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 60.0
# A connector that streamed this long before failing starts its backoff afresh.
BACKOFF_RESET_AFTER_S = 120.0
# The cyclic collector's young-generation threshold while streaming. Every event makes a
# few short-lived, acyclic dicts and tuples that reference counting frees at once; at
# Python's default (700 allocations) the collector scans them hundreds of times a second.
GC_YOUNG_THRESHOLD = 20_000


def is_retryable(error: CdcError) -> bool:
    """Errors that a restart from the durable position can heal without a person."""
    return error.retryable


class ConnectorRunner(threading.Thread):
    """One connector's thread (or one of its replays'): run it, restart it with backoff,
    report failure."""

    def __init__(
        self,
        daemon: DaemonConfig,
        connector: ConnectorConfig,
        stop: threading.Event,
        *,
        replay: ReplayConfig | None = None,
    ) -> None:
        name = connector.name if replay is None else f"{connector.name}/replay:{replay.name}"
        super().__init__(name=f"connector-{name}", daemon=True)
        self._daemon = daemon
        self._connector = connector
        self._replay = replay
        self.connector_name = name
        self._stop_event = stop
        self.failure: BaseException | None = None
        self._log = structlog.get_logger("cdc.daemon").bind(
            connector=connector.name, slot=connector.slot
        )
        # The preflight (cdc check) runs once, before the pipeline's first start.
        self._checked = False

    def _work(self) -> None:
        if self._replay is None:
            if not self._checked:
                preflight(self._daemon, self._connector, log=self._log)
                self._checked = True
            ConnectorPipeline(self._daemon, self._connector, self._stop_event).run()
            return
        # Imported here: a daemon without replays never loads the target edge.
        from cdc.replay.run import Replay, request_for  # noqa: PLC0415

        BOARD.update(self.connector_name, phase="replaying")
        Replay(
            request_for(self._daemon, self._connector, self._replay), stop=self._stop_event
        ).run()

    def run(self) -> None:
        backoff = BACKOFF_INITIAL_S
        while not self._stop_event.is_set():
            started = time.monotonic()
            BOARD.update(self.connector_name, phase="starting")
            try:
                self._work()
            except CdcError as exc:
                if not is_retryable(exc):
                    self._fail(exc)
                    return
                if self._stop_event.is_set():
                    # Stopping: nothing unacknowledged was confirmed, so a later start
                    # sends it again. Say so rather than announce a restart.
                    self._log.warning(
                        "connector_stopped_with_error",
                        error=str(exc),
                        error_type=type(exc).__name__,
                    )
                    return
                if time.monotonic() - started > BACKOFF_RESET_AFTER_S:
                    backoff = BACKOFF_INITIAL_S
                metrics.CONNECTOR_RESTARTS.labels(connector=self._connector.name).inc()
                BOARD.update(
                    self.connector_name,
                    phase="restarting",
                    error=redact_dsn(str(exc)),
                    retry_in_s=backoff,
                )
                self._log.warning(
                    "connector_restarting",
                    error=str(exc),
                    error_type=type(exc).__name__,
                    retry_in_s=backoff,
                )
                self._stop_event.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
            except Exception as exc:  # noqa: BLE001 - a bug stops this connector loudly, not the thread silently
                self._fail(exc)
                return
            else:
                BOARD.update(self.connector_name, phase="stopped")
                return

    def _fail(self, exc: BaseException) -> None:
        self.failure = exc
        BOARD.update(self.connector_name, phase="failed", error=redact_dsn(str(exc)))
        if isinstance(exc, CdcError):
            self._log.error("connector_failed", error=str(exc), error_type=type(exc).__name__)
        else:
            self._log.exception("connector_crashed", error_type=type(exc).__name__)


def run_daemon(daemon: DaemonConfig, connectors: list[ConnectorConfig]) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or until every connector has failed (exit 1)."""
    log = structlog.get_logger("cdc.daemon")
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stop.is_set():
            log.info("stop_requested", signal=signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if daemon.metrics.port is not None:
            try:
                server = start_status_server(daemon.metrics.host, daemon.metrics.port)
            except OSError as exc:
                where = f"{daemon.metrics.host}:{daemon.metrics.port}"
                raise ConfigError(
                    f"cannot listen on {where} ({exc.strerror}): another process uses it"
                    " (a second cdc?). Choose a free metrics.port, or null to serve no metrics",
                    key="metrics.port",
                ) from exc
            log.info(
                "metrics_listening",
                host=daemon.metrics.host,
                port=server.server_address[1],
                paths=["/metrics", "/status", "/healthz"],
            )
        runners = [ConnectorRunner(daemon, c, stop) for c in connectors if c.enabled]
        runners.extend(
            ConnectorRunner(daemon, c, stop, replay=r)
            for c in connectors
            if c.enabled
            for r in c.replays
            if r.enabled
        )
        if not runners:
            log.error("no_connector_enabled")
            return 1
        log.info(
            "daemon_started",
            connectors=[r.connector_name for r in runners],
            core=native_core_status(),
        )
        # What exists now (modules, config, clients) lives as long as the process: frozen,
        # the collector never walks it again, so a full collection costs microseconds
        # instead of a ~15 ms pause in the middle of the stream (the latency's p99).
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 100)
        for runner in runners:
            runner.start()
        while not stop.is_set() and any(r.is_alive() for r in runners):
            stop.wait(0.5)
        stop.set()
        for runner in runners:
            runner.join()
        failed = [r for r in runners if r.failure is not None]
        log.info("daemon_stopped", failed_connectors=[r.connector_name for r in failed])
        return 1 if failed else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
