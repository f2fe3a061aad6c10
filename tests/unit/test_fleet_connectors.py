"""The fleet's controller (``cdc.daemon.FleetConnectors``) without PostgreSQL or Kafka: the
group member's callbacks start, stop and abandon fake connector threads.

``ConnectorRunner`` is replaced by ``FakeRunner`` (same constructor), so what is tested is
the controller's bookkeeping: which runners it starts, how it stops them, how long it
waits, what it logs, and what the board and the owned-connectors metric say.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

import cdc.daemon
from cdc.config import (
    ConnectorConfig,
    DaemonConfig,
    ReplayConfig,
    load_connector_config_text,
    load_daemon_config_text,
)
from cdc.daemon import FleetConnectors
from cdc.errors import FencedError
from cdc.fleet import assignment_topic
from cdc.status import BOARD
from cdc.stopping import abandoned

GROUP = "g"
# The smallest bounds FleetConfig accepts (rebalance_timeout_ms >= 2000, at least the
# session, heartbeat at most a third of it): a released runner gets 1 s, so a runner that
# ignores its stop costs a test one second.
FLEET = (
    "kafka:\n  bootstrap_servers: k:9092\n"
    "fleet:\n  group: g\n  instance_id: {instance}\n  session_timeout_ms: 1000\n"
    "  heartbeat_interval_ms: 300\n  rebalance_timeout_ms: 2000\n"
)
# One replay followed, one disabled: only the first gets a runner.
REPLAYS = (
    "replays:\n"
    "  - name: r1\n    target_dsn: postgresql://svc@new/db\n"
    "  - name: paused\n    target_dsn: postgresql://svc@new/db\n    enabled: false\n"
)
# The bound on every wait for a thread: far beyond what any step takes, so reaching it
# means the awaited behaviour is missing, never that the machine is slow.
WAIT_S = 10.0

Logs = list[MutableMapping[str, Any]]


@dataclass(frozen=True)
class Plan:
    """What the runners of one connector do."""

    hang: bool = False  # ignore the stop; end only once the test releases it
    fail: bool = False  # set ``failure``: at once, or (hanging) once released


class Runners:
    """Every fake runner one test created, and the plan of each connector's runners."""

    def __init__(self) -> None:
        self.plans: dict[str, Plan] = {}
        self.created: list[FakeRunner] = []
        # Runners started while another runner of the same name was still alive.
        self.overlaps: list[str] = []
        self._lock = threading.Lock()

    def named(self, name: str) -> list[FakeRunner]:
        return [r for r in self.created if r.connector_name == name]

    def names(self) -> list[str]:
        return sorted(r.connector_name for r in self.created)

    def starting(self, runner: FakeRunner) -> None:
        with self._lock:
            if any(r is not runner and r.is_alive() for r in self.named(runner.connector_name)):
                self.overlaps.append(runner.connector_name)


class FakeRunner(threading.Thread):
    """Stands in for ``ConnectorRunner``: records its start, waits on its stop request and
    records whether it asked to abandon. A hanging one ignores the stop until released; a
    failing one sets ``failure``. A stopped one ends only once somebody joins it, so a
    caller that returns without joining is caught every time, not by a lost race."""

    runners: ClassVar[Runners] = Runners()  # each test's own, set by the fixture

    def __init__(
        self,
        daemon: DaemonConfig,
        connector: ConnectorConfig,
        stop: threading.Event,
        *,
        replay: ReplayConfig | None = None,
    ) -> None:
        name = connector.name if replay is None else f"{connector.name}/replay:{replay.name}"
        super().__init__(name=f"fake-{name}", daemon=True)
        self.connector_name = name
        self.stop_request = stop
        self.failure: BaseException | None = None
        self.plan = self.runners.plans.get(connector.name, Plan())
        self.started = threading.Event()
        self.release = threading.Event()
        self.joined = threading.Event()
        self.ended = threading.Event()
        self.saw_abandon: bool | None = None
        self.runners.created.append(self)

    def start(self) -> None:
        self.runners.starting(self)
        super().start()

    def join(self, timeout: float | None = None) -> None:
        self.joined.set()
        super().join(timeout)

    def run(self) -> None:
        self.started.set()
        try:
            if self.plan.fail and not self.plan.hang:
                self.failure = FencedError("another instance took the transactional id")
                return
            if self.plan.hang:
                self.release.wait(WAIT_S)
            else:
                self.stop_request.wait(WAIT_S)
                self.joined.wait(WAIT_S)
            self.saw_abandon = abandoned(self.stop_request)
            if self.plan.fail:
                self.failure = FencedError("another instance took the transactional id")
        finally:
            self.ended.set()


@pytest.fixture
def runners(monkeypatch: pytest.MonkeyPatch) -> Iterator[Runners]:
    """The fake runners of this test; every one is ended afterwards."""
    created = Runners()
    monkeypatch.setattr(FakeRunner, "runners", created)
    monkeypatch.setattr(cdc.daemon, "ConnectorRunner", FakeRunner)
    BOARD.clear()
    yield created
    for runner in created.created:
        runner.release.set()
        runner.stop_request.set()
    for runner in created.created:
        if runner.ident is not None:
            runner.join(WAIT_S)
    BOARD.clear()


@pytest.fixture
def logs() -> Iterator[Logs]:
    """What was logged (the controller binds its logger when built, so build it here)."""
    with capture_logs() as captured:
        yield captured


def connector(name: str, extra: str = "") -> ConnectorConfig:
    text = f"name: {name}\npostgres:\n  dsn: postgresql://cdc@db/{name}\n{extra}"
    return load_connector_config_text(text, source=f"{name}.yaml", env={})


def controller(connectors: list[ConnectorConfig], instance: str = "i1") -> FleetConnectors:
    daemon = load_daemon_config_text(FLEET.format(instance=instance), source="cdc.yaml", env={})
    assert daemon.fleet is not None
    return FleetConnectors(daemon, daemon.fleet, connectors)


def T(*names: str) -> list[str]:
    """The assignment topics of these connectors in the group."""
    return [assignment_topic(GROUP, n) for n in names]


def events(logs: Logs, event: str) -> Logs:
    return [e for e in logs if e["event"] == event]


def on_board() -> dict[str, Any]:
    """Each connector the board lists, with its owner."""
    return {c["connector"]: c.get("owner") for c in BOARD.document()["connectors"]}


def owned_metric(instance: str) -> float | None:
    return REGISTRY.get_sample_value("cdc_fleet_connectors_owned", {"instance": instance})


def in_thread(call: Callable[[], None]) -> threading.Thread:
    """Run a callback as the member's thread would, so the test can act while it waits."""
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def revoked_past_the_bound(fleet: FleetConnectors, runners: Runners) -> FakeRunner:
    """Assign connector ``a`` (whose plan hangs) and revoke it: ``revoked`` gives up after
    the bound and leaves the runner alive."""
    fleet.assigned(T("a"))
    [old] = runners.named("a")
    assert old.started.wait(WAIT_S)
    fleet.revoked(T("a"))
    assert old.is_alive()
    return old


# --- assigned ----------------------------------------------------------------------------


def test_assigned_topics_start_exactly_their_connectors_and_enabled_replays(
    runners: Runners, logs: Logs
) -> None:
    fleet = controller([connector("a", REPLAYS), connector("b"), connector("c")])
    fleet.assigned(T("a", "b"))
    assert runners.names() == ["a", "a/replay:r1", "b"]
    assert all(r.started.wait(WAIT_S) for r in runners.created)
    [assigned] = events(logs, "fleet_assigned")
    assert (assigned["connectors"], assigned["owned"]) == (["a", "b"], ["a", "b"])
    assert on_board() == {"a": "i1", "a/replay:r1": "i1", "b": "i1"}


def test_a_topic_of_a_connector_this_instance_lacks_starts_nothing(
    runners: Runners, logs: Logs
) -> None:
    fleet = controller([connector("a")])
    fleet.assigned([*T("elsewhere"), assignment_topic("other-group", "a")])
    assert runners.created == []
    [assigned] = events(logs, "fleet_assigned")
    assert (assigned["connectors"], assigned["owned"]) == ([], [])


def test_a_repeated_assignment_of_an_owned_connector_starts_no_second_runner(
    runners: Runners, logs: Logs
) -> None:
    fleet = controller([connector("a")])
    fleet.assigned(T("a"))
    fleet.assigned(T("a"))
    assert runners.names() == ["a"]
    assert [e["connectors"] for e in events(logs, "fleet_assigned")] == [["a"], []]


# --- revoked and lost --------------------------------------------------------------------


def test_revoked_stops_cleanly_and_returns_only_once_the_runner_ended(
    runners: Runners, logs: Logs
) -> None:
    fleet = controller([connector("a"), connector("b")])
    fleet.assigned(T("a", "b"))
    [a] = runners.named("a")
    [b] = runners.named("b")
    assert a.started.wait(WAIT_S)
    fleet.revoked(T("a"))
    assert (a.ended.is_set(), a.is_alive(), a.saw_abandon) == (True, False, False)
    assert not b.stop_request.is_set()
    [revoked] = events(logs, "fleet_revoked")
    assert (revoked["log_level"], revoked["connectors"], revoked["still_running"]) == (
        "info",
        ["a"],
        [],
    )
    assert revoked["owned"] == ["b"]
    assert on_board() == {"b": "i1"}


def test_lost_abandons_the_runner_and_warns(runners: Runners, logs: Logs) -> None:
    fleet = controller([connector("a")])
    fleet.assigned(T("a"))
    [a] = runners.named("a")
    assert a.started.wait(WAIT_S)
    fleet.lost(T("a"))
    assert (a.saw_abandon, abandoned(a.stop_request), a.is_alive()) == (True, True, False)
    [lost] = events(logs, "fleet_lost")
    assert (lost["log_level"], lost["connectors"], lost["still_running"]) == ("warning", ["a"], [])
    assert on_board() == {}


def test_a_runner_ignoring_its_stop_is_left_after_the_bound_and_joined_before_its_successor(
    runners: Runners, logs: Logs
) -> None:
    runners.plans["a"] = Plan(hang=True)
    fleet = controller([connector("a")])
    old = revoked_past_the_bound(fleet, runners)
    [revoked] = events(logs, "fleet_revoked")
    assert (revoked["log_level"], revoked["still_running"]) == ("warning", ["a"])

    runners.plans["a"] = Plan()
    old.joined.clear()
    assigning = in_thread(lambda: fleet.assigned(T("a")))
    assert old.joined.wait(WAIT_S)  # the new assignment waits for the old run ...
    assert runners.named("a") == [old]  # ... before it starts a successor
    old.release.set()
    assigning.join(WAIT_S)
    assert not assigning.is_alive()
    [_, new] = runners.named("a")
    assert new.started.wait(WAIT_S)
    assert runners.overlaps == []


# --- stop_all, failed, the metric ---------------------------------------------------------


def test_stop_all_stops_every_runner_cleanly_and_no_later_assignment_starts_one(
    runners: Runners,
) -> None:
    fleet = controller([connector("a", REPLAYS), connector("b"), connector("c")])
    fleet.assigned(T("a", "b"))
    assert all(r.started.wait(WAIT_S) for r in runners.created)
    fleet.stop_all()
    assert [(r.stop_request.is_set(), abandoned(r.stop_request)) for r in runners.created] == [
        (True, False)
    ] * 3
    fleet.assigned(T("c"))
    assert runners.names() == ["a", "a/replay:r1", "b"]
    fleet.join_all(WAIT_S)
    assert not any(r.is_alive() for r in runners.created)


def test_failed_lists_owned_connectors_failures_but_not_a_revoked_ones(
    runners: Runners,
) -> None:
    runners.plans["a"] = runners.plans["b"] = Plan(fail=True)
    fleet = controller([connector("a"), connector("b")])
    fleet.assigned(T("a", "b"))
    assert all(r.ended.wait(WAIT_S) for r in runners.created)
    assert sorted(r.connector_name for r in fleet.failed) == ["a", "b"]
    fleet.revoked(T("b"))
    assert [r.connector_name for r in fleet.failed] == ["a"]


def test_the_owned_connectors_metric_follows_assignments_and_revocations(
    runners: Runners,
) -> None:
    instance = "metric-instance"
    fleet = controller([connector("a"), connector("b"), connector("c")], instance=instance)
    counts = [owned_metric(instance)]
    fleet.assigned(T("a", "b", "c"))
    counts.append(owned_metric(instance))
    fleet.revoked(T("a"))
    counts.append(owned_metric(instance))
    fleet.lost(T("b"))
    counts.append(owned_metric(instance))
    fleet.assigned(T("a"))
    counts.append(owned_metric(instance))
    assert counts == [0.0, 3.0, 2.0, 1.0, 2.0]


# --- found by these tests, fixed ---------------------------------------------------------


def test_a_revoked_runner_failing_after_the_bound_is_not_this_instances_failure(
    runners: Runners,
) -> None:
    runners.plans["a"] = Plan(hang=True, fail=True)
    fleet = controller([connector("a")])
    old = revoked_past_the_bound(fleet, runners)
    old.release.set()  # the new owner fences it: it fails
    assert old.ended.wait(WAIT_S)
    assert old.failure is not None
    assert fleet.failed == []


def test_stop_all_while_an_assignment_waits_for_the_old_runner_starts_nothing(
    runners: Runners,
) -> None:
    runners.plans["a"] = Plan(hang=True)
    fleet = controller([connector("a")])
    old = revoked_past_the_bound(fleet, runners)
    runners.plans["a"] = Plan()
    old.joined.clear()
    assigning = in_thread(lambda: fleet.assigned(T("a")))
    assert old.joined.wait(WAIT_S)  # the assignment waits for the old run
    fleet.stop_all()  # SIGTERM meanwhile
    old.release.set()
    assigning.join(WAIT_S)
    assert not assigning.is_alive()
    assert [r for r in runners.named("a") if r is not old and r.ident is not None] == []


def test_a_handed_over_run_that_fails_is_logged_not_reported_as_failed(logs: Logs) -> None:
    """The real runner: once the fleet moved its connector on, a fatal error (the new
    owner fenced it) is a warning; the runner reports no failure and the board no entry."""
    daemon = load_daemon_config_text(FLEET.format(instance="i1"), source="cdc.yaml", env={})
    runner = cdc.daemon.ConnectorRunner(daemon, connector("a"), threading.Event())
    runner.handed_over = True
    BOARD.clear()
    runner._fail(FencedError("fenced by a newer producer"))
    assert runner.failure is None
    assert "a" not in on_board()
    [ended] = events(logs, "connector_ended_after_handover")
    assert ended["log_level"] == "warning"
    assert ended["error_type"] == "FencedError"
