"""Unit tests of the fleet's pure core (cdc.fleet), its stop request and its config."""

from __future__ import annotations

import socket
import threading

import pytest

from cdc.config import DaemonConfig, load_daemon_config_text
from cdc.errors import ConfigError
from cdc.fleet import (
    Action,
    Decision,
    Ownership,
    Roster,
    assignment_topic,
    consumer_group_id,
)
from cdc.stopping import StopRequest, abandoned

DAEMON = "kafka:\n  bootstrap_servers: k:9092\n"


def daemon(extra: str) -> DaemonConfig:
    return load_daemon_config_text(DAEMON + extra, source="cdc.yaml", env={})


def test_without_fleet_the_daemon_config_has_none() -> None:
    assert daemon("").fleet is None


def test_fleet_defaults_take_the_host_name_as_instance_id() -> None:
    fleet = daemon("fleet:\n  group: prod\n").fleet
    assert fleet is not None
    assert (fleet.group, fleet.instance_id) == ("prod", socket.gethostname())
    assert (fleet.session_timeout_ms, fleet.heartbeat_interval_ms) == (10_000, 1_000)
    assert fleet.leave_on_stop is True


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("fleet:\n  group: 'a b'\n", "fleet.group"),
        (
            "fleet:\n  group: g\n  session_timeout_ms: 6000\n  heartbeat_interval_ms: 3000\n",
            "fleet",
        ),
        ("fleet:\n  group: g\n  rebalance_timeout_ms: 5000\n", "fleet"),
        ("fleet:\n  instance_id: x\n", "fleet.group"),
    ],
)
def test_bad_fleet_settings_are_config_errors_naming_the_key(extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        daemon(extra)
    assert key in str(info.value)


def test_names_of_the_group_and_its_topic() -> None:
    assert (assignment_topic("prod"), consumer_group_id("prod")) == (
        "__cdc_fleet.prod",
        "cdc-fleet-prod",
    )


def test_roster_sorts_connectors_and_maps_partitions_both_ways() -> None:
    roster = Roster.of(["c", "a", "b"])
    assert roster.connectors == ("a", "b", "c")
    assert [roster.connector_of(p) for p in (0, 1, 2, 3, -1)] == ["a", "b", "c", None, None]
    assert roster.partition_of("c") == 2
    with pytest.raises(KeyError):
        roster.partition_of("z")


def test_roster_digest_depends_on_the_set_not_the_order() -> None:
    assert Roster.of(["b", "a"]).digest == Roster.of(["a", "b"]).digest
    assert Roster.of(["a", "b"]).digest != Roster.of(["a", "b", "c"]).digest
    assert len(Roster.of(["a"]).digest) == 12


def test_roster_refuses_duplicate_names() -> None:
    with pytest.raises(ValueError, match="unique"):
        Roster.of(["a", "a"])


def test_assignment_starts_each_new_connector_once() -> None:
    ownership = Ownership(Roster.of(["a", "b", "c"]))
    assert ownership.assigned([2, 0, 0]) == [
        Decision(Action.START, "a"),
        Decision(Action.START, "c"),
    ]
    assert ownership.assigned([0, 1]) == [Decision(Action.START, "b")]
    assert ownership.owned == {"a", "b", "c"}


def test_partitions_beyond_the_roster_run_nothing() -> None:
    ownership = Ownership(Roster.of(["a"]))
    assert ownership.assigned([1, 5]) == []
    assert ownership.revoked([1]) == []
    assert ownership.owned == frozenset()


def test_revocation_stops_cleanly_and_loss_abandons() -> None:
    ownership = Ownership(Roster.of(["a", "b", "c"]))
    ownership.assigned([0, 1, 2])
    assert ownership.revoked([1]) == [Decision(Action.STOP, "b")]
    assert ownership.lost([0, 1, 2]) == [
        Decision(Action.ABANDON, "a"),
        Decision(Action.ABANDON, "c"),
    ]
    assert ownership.owned == frozenset()


def test_a_repeated_revocation_decides_nothing() -> None:
    ownership = Ownership(Roster.of(["a"]))
    ownership.assigned([0])
    assert ownership.revoked([0]) == [Decision(Action.STOP, "a")]
    assert ownership.revoked([0]) == []
    assert ownership.lost([0]) == []


def test_a_connector_revoked_then_assigned_again_starts_again() -> None:
    ownership = Ownership(Roster.of(["a"]))
    ownership.assigned([0])
    ownership.lost([0])
    assert ownership.assigned([0]) == [Decision(Action.START, "a")]


def test_stop_request_abandon_sets_the_event_and_the_flag() -> None:
    stop = StopRequest()
    assert not abandoned(stop)
    stop.set()
    assert stop.is_set()
    assert not abandoned(stop)
    stop.abandon()
    assert abandoned(stop)


def test_a_plain_event_never_abandons() -> None:
    event = threading.Event()
    event.set()
    assert not abandoned(event)


def test_status_shows_the_fleet_and_each_connector_owner() -> None:
    from cdc.cli import render_status
    from cdc.status import StatusBoard

    board = StatusBoard()
    board.set_fleet(group="g", instance_id="a", roster_digest="d1", owned=[])
    assert board.document()["healthy"] is True  # a standby owning nothing is healthy
    board.set_fleet(owned=["orders"])
    board.update("orders", owner="a", phase="streaming")
    document = board.document()
    assert document["fleet"]["owned"] == ["orders"]
    lines = render_status(document)
    assert lines[0] == "fleet g: instance a owns orders  roster d1"
    assert lines[1].startswith("orders: streaming  on a  confirmed")
    board.remove("orders")
    assert board.document()["connectors"] == []
