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


def test_names_of_the_group_and_a_connectors_topic() -> None:
    assert (assignment_topic("prod", "inventory"), consumer_group_id("prod")) == (
        "__cdc_fleet.prod.inventory",
        "cdc-fleet-prod",
    )


def T(*names: str) -> list[str]:
    """The assignment topics of these connectors in group g."""
    return [assignment_topic("g", n) for n in names]


def roster(*names: str) -> Roster:
    return Roster.of("g", names)


def test_roster_sorts_connectors_and_names_their_topics() -> None:
    r = roster("c", "a", "b")
    assert r.connectors == ("a", "b", "c")
    assert r.topics == T("a", "b", "c")
    assert [r.connector_of(t) for t in T("a", "c", "z")] == ["a", "c", None]


def test_a_topic_of_another_group_or_not_ours_names_no_connector() -> None:
    r = roster("a")
    assert r.connector_of(assignment_topic("other", "a")) is None
    assert r.connector_of("inventory.public.orders") is None
    assert Roster.connector_in("g", assignment_topic("g", "z")) == "z"
    assert Roster.connector_in("g", assignment_topic("g", "")) is None
    assert Roster.connector_in("g", "__cdc_fleet.other.z") is None


def test_a_connector_name_with_dots_maps_back_whole() -> None:
    r = roster("inv.eu-1")
    assert r.connector_of(assignment_topic("g", "inv.eu-1")) == "inv.eu-1"


def test_roster_digest_depends_on_the_set_not_the_order() -> None:
    assert roster("b", "a").digest == roster("a", "b").digest
    assert roster("a", "b").digest != roster("a", "b", "c").digest
    assert len(roster("a").digest) == 12


def test_roster_refuses_duplicate_names() -> None:
    with pytest.raises(ValueError, match="unique"):
        roster("a", "a")


def test_assignment_starts_each_new_connector_once() -> None:
    ownership = Ownership(roster("a", "b", "c"))
    assert ownership.assigned(T("c", "a", "a")) == [
        Decision(Action.START, "a"),
        Decision(Action.START, "c"),
    ]
    assert ownership.assigned(T("a", "b")) == [Decision(Action.START, "b")]
    assert ownership.owned == {"a", "b", "c"}


def test_a_topic_of_a_connector_this_instance_lacks_runs_nothing() -> None:
    ownership = Ownership(roster("a"))
    assert ownership.assigned(T("b", "z")) == []
    assert ownership.revoked(T("b")) == []
    assert ownership.owned == frozenset()


def test_revocation_stops_cleanly_and_loss_abandons() -> None:
    ownership = Ownership(roster("a", "b", "c"))
    ownership.assigned(T("a", "b", "c"))
    assert ownership.revoked(T("b")) == [Decision(Action.STOP, "b")]
    assert ownership.lost(T("a", "b", "c")) == [
        Decision(Action.ABANDON, "a"),
        Decision(Action.ABANDON, "c"),
    ]
    assert ownership.owned == frozenset()


def test_a_repeated_revocation_decides_nothing() -> None:
    ownership = Ownership(roster("a"))
    ownership.assigned(T("a"))
    assert ownership.revoked(T("a")) == [Decision(Action.STOP, "a")]
    assert ownership.revoked(T("a")) == []
    assert ownership.lost(T("a")) == []


def test_a_connector_revoked_then_assigned_again_starts_again() -> None:
    ownership = Ownership(roster("a"))
    ownership.assigned(T("a"))
    ownership.lost(T("a"))
    assert ownership.assigned(T("a")) == [Decision(Action.START, "a")]


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
