"""Runs every enabled connector in its own thread, restarts them after retryable errors,
and turns SIGTERM/SIGINT into a clean stop (make Kafka durable, confirm, exit 0).

Retryable (``CdcError.retryable``, decided by each edge's error mapping): a lost
PostgreSQL connection, a server restart, a slot still held by a dying walsender, Kafka
unreachable or slow (the connector restarts from what Kafka durably holds, so nothing is
lost). Fatal: what a person must fix (a setting, a privilege, a topic's policy, a replication
factor the cluster cannot meet, another instance holding the connector's transactional
id). A fatal error stops that connector with its one-line fix, and is never retried; the
others go on; the daemon exits 1 when no connector is left running.

With ``fleet`` (docs/operations.md, "Running a fleet"), the group member
(``cdc.kafka.fleet``) decides which connectors run here: each gets its own stop request,
started on assignment, stopped cleanly on revocation (the callback blocks until its
threads ended, bounded by half the rebalance timeout), abandoned when the group lost us.
A connector that fails fatally stays failed on the instance that owns it (reported on
the board with its owner) rather than being handed around; it moves only with a
rebalance. The daemon then runs until SIGTERM, owning connectors or not.
"""

from __future__ import annotations

import gc
import signal
import threading
import time
from types import FrameType
from typing import Any

import structlog

from cdc import metrics
from cdc.check.run import preflight
from cdc.config import ConnectorConfig, DaemonConfig, FleetConfig, ReplayConfig
from cdc.dead_letters import RefusedRecords
from cdc.errors import CdcError, ConfigError
from cdc.fleet import Action, Ownership, Roster
from cdc.logging import redact_dsn
from cdc.native import native_core_status
from cdc.status import BOARD, start_status_server
from cdc.stopping import StopRequest
from cdc.stream.pipeline import ConnectorPipeline

__all__ = ["ConnectorRunner", "FleetConnectors", "is_retryable", "run_daemon"]

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
        # Set when a fleet moved the connector on while this run was still ending: what
        # it meets then (fenced by the new owner) is no failure of this instance's.
        self.handed_over = False
        self._log = structlog.get_logger("cdc.daemon").bind(
            connector=connector.name, slot=connector.slot
        )
        # The preflight (cdc check) runs once, before the pipeline's first start.
        self._checked = False
        # Records Kafka refused at delivery: the restart sends them to the dead letters.
        self._refusals = RefusedRecords()

    def _work(self) -> None:
        if self._replay is None:
            if not self._checked:
                preflight(self._daemon, self._connector, log=self._log)
                self._checked = True
            ConnectorPipeline(self._daemon, self._connector, self._stop_event, self._refusals).run()
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
        if self.handed_over:
            self._log.warning(
                "connector_ended_after_handover",
                error=redact_dsn(str(exc)),
                error_type=type(exc).__name__,
                detail="another instance owns the connector now",
            )
            return
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
        if daemon.fleet is not None:
            return _run_fleet(daemon, daemon.fleet, connectors, stop)
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


class FleetConnectors:
    """The connectors this instance runs in a fleet, started and stopped by the group
    member's callbacks (which all come from the member's thread; SIGTERM's ``stop_all``
    from the main thread)."""

    def __init__(
        self, daemon: DaemonConfig, fleet: FleetConfig, connectors: list[ConnectorConfig]
    ) -> None:
        self._daemon = daemon
        self._instance = fleet.instance_id
        self._by_name = {c.name: c for c in connectors}
        self.ownership = Ownership(Roster.of(fleet.group, self._by_name))
        # Half the rebalance timeout: the member still rejoins within the rebalance.
        self._release_wait_s = fleet.rebalance_timeout_ms / 2000
        self._lock = threading.Lock()
        self._stops: dict[str, StopRequest] = {}
        self._runners: dict[str, list[ConnectorRunner]] = {}
        # Runs of connectors handed over that had not ended within the bound: joined
        # before the connector starts here again, never counted as this instance's.
        self._handed_over: dict[str, list[ConnectorRunner]] = {}
        self._log = structlog.get_logger("cdc.daemon").bind(instance=fleet.instance_id)
        self._stopping = False
        self._publish_owned()

    # --- the member's callbacks --------------------------------------------------------

    def assigned(self, topics: list[str]) -> None:
        """Start the connectors of the assignment topics added to ours."""
        decisions = self.ownership.assigned(topics)
        started = [d.connector for d in decisions if self._start(d.connector)]
        self._log.info("fleet_assigned", connectors=started, owned=sorted(self.ownership.owned))
        self._publish_owned()

    def revoked(self, topics: list[str]) -> None:
        """Stop cleanly (commit, confirm) and wait: the connectors go to another instance
        only once this returns, so two instances never run one connector."""
        self._release(self.ownership.revoked(topics), "fleet_revoked")

    def lost(self, topics: list[str]) -> None:
        """Our session expired: another instance may own these already; abandon them
        (nothing more committed or confirmed)."""
        self._release(self.ownership.lost(topics), "fleet_lost")

    def stop_all(self) -> None:
        """SIGTERM: every connector stops cleanly, and none starts any more."""
        with self._lock:
            self._stopping = True
            stops = list(self._stops.values())
        for stop in stops:
            stop.set()

    def join_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            handed_over = [r for runners in self._handed_over.values() for r in runners]
        for runner in self._all_runners() + handed_over:
            runner.join(max(0.0, deadline - time.monotonic()))

    @property
    def failed(self) -> list[ConnectorRunner]:
        return [r for r in self._all_runners() if r.failure is not None]

    # --- carrying out ----------------------------------------------------------------------

    def _start(self, name: str) -> bool:
        """Start the connector's runners; False when stopping (SIGTERM) meanwhile."""
        with self._lock:
            if self._stopping:
                return False
            previous = self._runners.get(name, []) + self._handed_over.pop(name, [])
        for runner in previous:  # a released run not ended yet: never two at once
            runner.join(self._release_wait_s)
        connector = self._by_name[name]
        stop = StopRequest()
        runners = [ConnectorRunner(self._daemon, connector, stop)]
        runners.extend(
            ConnectorRunner(self._daemon, connector, stop, replay=r)
            for r in connector.replays
            if r.enabled
        )
        with self._lock:
            if self._stop_requested():  # SIGTERM while the previous run was joined
                return False
            self._stops[name] = stop
            self._runners[name] = runners
        for runner in runners:
            BOARD.update(runner.connector_name, owner=self._instance, phase="starting")
            runner.start()
        return True

    def _release(self, decisions: list[Any], event: str) -> None:
        if not decisions:
            return
        started = time.monotonic()
        released: list[tuple[str, list[ConnectorRunner]]] = []
        for decision in decisions:
            with self._lock:
                stop = self._stops.pop(decision.connector, None)
                runners = self._runners.get(decision.connector, [])
            if stop is not None:
                if decision.action is Action.ABANDON:
                    stop.abandon()
                else:
                    stop.set()
            released.append((decision.connector, runners))
        deadline = started + self._release_wait_s
        still_running = []
        for name, runners in released:
            for runner in runners:
                runner.join(max(0.0, deadline - time.monotonic()))
                if runner.is_alive():
                    # Past the bound: the connector moves on anyway. The new owner's
                    # init_transactions fences this run's producer and its slot waits
                    # for this walsender, so it cannot write twice; _start joins it.
                    runner.handed_over = True
                    still_running.append(runner.connector_name)
                BOARD.remove(runner.connector_name)
            with self._lock:
                if self._runners.get(name) is runners:
                    # Not ours any more: its failure (e.g. fenced) is not this instance's.
                    del self._runners[name]
                alive = [r for r in runners if r.is_alive()]
                if alive:
                    self._handed_over.setdefault(name, []).extend(alive)
        level = self._log.warning if event == "fleet_lost" or still_running else self._log.info
        level(
            event,
            connectors=[d.connector for d in decisions],
            stopped_in_s=round(time.monotonic() - started, 3),
            still_running=still_running,
            owned=sorted(self.ownership.owned),
        )
        self._publish_owned()

    def _stop_requested(self) -> bool:
        """``stop_all`` was called (read afresh: another thread sets it)."""
        return self._stopping

    def _all_runners(self) -> list[ConnectorRunner]:
        with self._lock:
            return [r for runners in self._runners.values() for r in runners]

    def _publish_owned(self) -> None:
        owned = sorted(self.ownership.owned)
        metrics.FLEET_CONNECTORS_OWNED.labels(instance=self._instance).set(len(owned))
        BOARD.set_fleet(instance_id=self._instance, owned=owned)


def _run_fleet(
    daemon: DaemonConfig,
    fleet: FleetConfig,
    connectors: list[ConnectorConfig],
    stop: threading.Event,
) -> int:
    """Run what the fleet's group assigns to this instance until SIGTERM/SIGINT (exit 0,
    1 if a connector it ran failed) or until the member fails (exit 1)."""
    # Imported here: a daemon without a fleet never loads the group member.
    from cdc.kafka.fleet import FleetMember  # noqa: PLC0415

    log = structlog.get_logger("cdc.daemon").bind(instance=fleet.instance_id)
    enabled = [c for c in connectors if c.enabled]
    if not enabled:
        log.error("no_connector_enabled")
        return 1
    owned = FleetConnectors(daemon, fleet, enabled)
    roster = owned.ownership.roster
    BOARD.set_fleet(
        group=fleet.group, instance_id=fleet.instance_id, roster_digest=roster.digest, owned=[]
    )

    def before_leave() -> None:
        owned.stop_all()
        owned.join_all(fleet.rebalance_timeout_ms / 2000)

    member = FleetMember(
        bootstrap_servers=daemon.kafka.bootstrap_servers,
        properties=daemon.kafka.properties,
        fleet=fleet,
        roster=roster,
        replication_factor=daemon.topics.replication_factor,
        on_assign=owned.assigned,
        on_revoke=owned.revoked,
        on_lost=owned.lost,
        before_leave=before_leave,
        stop=stop,
        log=log,
    )
    log.info(
        "daemon_started",
        connectors=list(roster.connectors),
        fleet=fleet.group,
        instance_id=fleet.instance_id,
        roster_digest=roster.digest,
        core=native_core_status(),
    )
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 100)
    member.start()
    while not stop.is_set() and member.is_alive():
        stop.wait(0.5)
    stop.set()
    owned.stop_all()
    member.join()
    owned.join_all(fleet.rebalance_timeout_ms / 2000)
    failed = owned.failed
    log.info(
        "daemon_stopped",
        failed_connectors=[r.connector_name for r in failed],
        fleet_member_failed=None if member.failure is None else str(member.failure),
    )
    if isinstance(member.failure, ConfigError):
        raise member.failure
    return 1 if failed or member.failure is not None else 0
