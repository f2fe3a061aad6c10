"""A fleet on the real services: two ``cdc run`` processes in one group share three
connectors; one dies (SIGKILL) or hangs (SIGSTOP, then SIGCONT) under load, and every
connector's events complete on the other, none twice (exactly_once, read_committed)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.integration.helpers import (
    Daemon,
    create_database,
    current_wal_lsn,
    drop_database,
    read_all,
    slot_confirmed_lsn,
    unique_name,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE orders (id bigint PRIMARY KEY, note text)"
SESSION_TIMEOUT_MS = 6000  # the broker's group.min.session.timeout.ms


@dataclass
class Fleet:
    admin_dsn: str
    bootstrap: str
    names: list[str]
    connectors: Path
    configs: dict[str, Path]
    log_dir: Path
    dsns: dict[str, str]
    daemons: dict[str, Daemon] = field(default_factory=dict)

    def dsn(self, name: str) -> str:
        return self.dsns[name]

    def start(self, instance: str) -> Daemon:
        daemon = Daemon.start(
            self.configs[instance], self.connectors_of(instance), self.log_dir / f"{instance}.log"
        )
        self.daemons[instance] = daemon
        return daemon

    def connectors_of(self, instance: str) -> Path:
        """The instance's own connector files (the same ones, unless a test changes them)."""
        return self.configs[instance].parent.parent / "connectors"

    def owned(self, instance: str) -> list[str]:
        """What ``instance`` last said it owns."""
        owned: list[str] = []
        for line in self.daemons[instance].log_lines():
            if line.get("event") in ("fleet_assigned", "fleet_revoked", "fleet_lost"):
                owned = line["owned"]
        return owned

    def streaming(self, instance: str, after: float = 0.0) -> set[str]:
        """Connectors ``instance`` started streaming after ``after`` (Unix time)."""
        return {
            line["connector"]
            for line in self.daemons[instance].log_lines()
            if line.get("event") == "streaming_started" and _at(line) > after
        }


def _at(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


@pytest.fixture
def fleet(postgres_server: Any, kafka_server: Any, tmp_path: Path) -> Iterator[Fleet]:
    admin_dsn = postgres_server.dsn()
    names = sorted(unique_name("fleet") for _ in range(3))
    for name in names:
        create_database(admin_dsn, name)
        with psycopg.connect(postgres_server.dsn(dbname=name), autocommit=True) as conn:
            conn.execute(SCHEMA)
    group = unique_name("g")
    connectors = [
        {
            "name": name,
            "postgres": {"dsn": postgres_server.dsn(dbname=name)},
            "slot": name,
            "publication": name,
            "tables": ["public.orders"],
            "status_interval_seconds": 1,
        }
        for name in names
    ]
    configs: dict[str, Path] = {}
    folder = tmp_path / "connectors"
    for instance in ("a", "b"):
        config, folder = write_config(
            tmp_path / instance, kafka_server.bootstrap_servers, connectors
        )
        document = yaml.safe_load(config.read_text())
        document["fleet"] = {
            "group": group,
            "instance_id": instance,
            "session_timeout_ms": SESSION_TIMEOUT_MS,
            "heartbeat_interval_ms": 500,
            "rebalance_timeout_ms": 30_000,
        }
        config.write_text(yaml.safe_dump(document))
        configs[instance] = config
    env = Fleet(
        admin_dsn,
        kafka_server.bootstrap_servers,
        names,
        folder,
        configs,
        tmp_path,
        {name: postgres_server.dsn(dbname=name) for name in names},
    )
    try:
        yield env
    finally:
        for daemon in env.daemons.values():
            if daemon.process.poll() is None:
                daemon.process.send_signal(signal.SIGCONT)
            daemon.stop_quietly()
        for name in names:
            drop_database(admin_dsn, name, slot=name)


def _fleet_status(fleet: Fleet) -> tuple[int, str]:
    """``cdc status --fleet`` as an operator runs it: exit status and output."""
    done = subprocess.run(
        [sys.executable, "-m", "cdc", "status", "--fleet", "--config", str(fleet.configs["a"]),
         "--connectors", str(fleet.connectors_of("a"))],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def _writer(dsn: str, stop: threading.Event, committed: list[int]) -> None:
    """Transactions of 20 inserts, as fast as they commit, until ``stop``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        next_id = 1
        while not stop.is_set():
            with conn.transaction():
                for _ in range(20):
                    conn.execute("INSERT INTO orders VALUES (%s, 'x')", (next_id,))
                    next_id += 1
            committed.extend(range(next_id - 20, next_id))


def _start_both_and_settle(fleet: Fleet) -> None:
    """Both instances up; the three connectors split between them and streaming."""
    for instance in ("a", "b"):
        fleet.start(instance)

    def settled() -> bool:
        owned = [fleet.owned(i) for i in ("a", "b")]
        return (
            all(owned)
            and sorted(owned[0] + owned[1]) == fleet.names
            and all(set(o) <= fleet.streaming(i) for o, i in zip(owned, ("a", "b"), strict=True))
        )

    wait_until(settled, timeout=60, what="the connectors to split between a and b")


def _under_load(fleet: Fleet, disturb: Any) -> None:
    """Write to every connector's database while ``disturb()`` runs, then check each
    connector's topic holds every committed row exactly once."""
    stop = threading.Event()
    committed: dict[str, list[int]] = {name: [] for name in fleet.names}
    writers = [
        threading.Thread(target=_writer, args=(fleet.dsn(n), stop, committed[n]))
        for n in fleet.names
    ]
    for writer in writers:
        writer.start()
    try:
        starts = {n: slot_confirmed_lsn(fleet.admin_dsn, n) for n in fleet.names}
        wait_until(
            lambda: all(slot_confirmed_lsn(fleet.admin_dsn, n) > starts[n] for n in fleet.names),
            what="every connector to confirm progress",
        )
        disturb()
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    for name in fleet.names:
        _wait_caught_up(fleet, name, timeout=60)
        assert len(committed[name]) > 20
        _assert_each_row_once(fleet, name, set(committed[name]))


def _wait_caught_up(fleet: Fleet, name: str, *, timeout: float) -> None:
    """Until the connector's slot is confirmed past everything written so far."""
    end = current_wal_lsn(fleet.dsn(name))
    wait_until(
        lambda: slot_confirmed_lsn(fleet.admin_dsn, name) >= end,
        timeout=timeout,
        what=f"{name} to catch up",
    )


def _assert_each_row_once(fleet: Fleet, name: str, wanted: set[int]) -> None:
    """The connector's retention topic holds exactly ``wanted``, each key once."""
    seen = Counter(m.key["id"] for m in read_all(fleet.bootstrap, f"{name}.public.orders"))
    assert set(seen) == wanted
    assert [k for k, n in seen.items() if n > 1] == []


def _take_over(
    fleet: Fleet, victim: str, survivor: str, since: float, handed: list[str] | None = None
) -> float:
    """Wait until ``survivor`` streams every connector ``victim`` owned (or ``handed``);
    the seconds it took from ``since``."""
    lost = set(fleet.owned(victim) if handed is None else handed)
    wait_until(
        lambda: lost <= fleet.streaming(survivor, after=since),
        timeout=SESSION_TIMEOUT_MS / 1000 + 30,
        what=f"{survivor} to take over {sorted(lost)}",
    )
    started = [
        _at(line)
        for line in fleet.daemons[survivor].log_lines()
        if line.get("event") == "streaming_started" and line["connector"] in lost
    ]
    takeover = max(started) - since
    print(f"takeover of {sorted(lost)} after {takeover:.1f}s")
    return takeover


def test_sigkill_of_an_instance_hands_its_connectors_over_with_nothing_lost_or_twice(
    fleet: Fleet,
) -> None:
    _start_both_and_settle(fleet)
    victim = "a" if len(fleet.owned("a")) >= len(fleet.owned("b")) else "b"
    survivor = "b" if victim == "a" else "a"
    takeover: list[float] = []

    def kill() -> None:
        killed_at = time.time()
        fleet.daemons[victim].kill()
        takeover.append(_take_over(fleet, victim, survivor, killed_at))

    code, output = _fleet_status(fleet)
    assert code == 0, output
    for instance in ("a", "b"):
        owned = ", ".join(sorted(fleet.owned(instance)))
        assert re.search(rf"^  instance {instance} \(.*\): {owned}$", output, re.M), output
    _under_load(fleet, kill)
    assert sorted(fleet.owned(survivor)) == fleet.names
    assert takeover[0] < SESSION_TIMEOUT_MS / 1000 + 20
    code, output = _fleet_status(fleet)
    assert code == 0, output
    everything = ", ".join(fleet.names)
    assert re.search(rf"^  instance {survivor} \(.*\): {everything}$", output, re.M), output


def test_a_hung_instance_resumed_is_fenced_and_never_a_second_writer(fleet: Fleet) -> None:
    with psycopg.connect(fleet.admin_dsn, autocommit=True) as conn:
        # A frozen instance's walsender goes away after this: the slot frees quickly.
        conn.execute("ALTER SYSTEM SET wal_sender_timeout = '3s'")
        conn.execute("SELECT pg_reload_conf()")
    try:
        _start_both_and_settle(fleet)
        victim = "a" if len(fleet.owned("a")) >= len(fleet.owned("b")) else "b"
        survivor = "b" if victim == "a" else "a"
        hung = fleet.daemons[victim]

        def hang_and_resume() -> None:
            stopped_at = time.time()
            hung.process.send_signal(signal.SIGSTOP)
            _take_over(fleet, victim, survivor, stopped_at)
            hung.process.send_signal(signal.SIGCONT)
            hung.wait_for_log("fleet_lost", timeout=30)
            # Back in the group, it may be given connectors again: cleanly, by a revoke
            # on the survivor. Let the load run on a while after that.
            wait_until(
                lambda: sorted(fleet.owned("a") + fleet.owned("b")) == fleet.names,
                timeout=60,
                what="the group to settle after the resume",
            )

        _under_load(fleet, hang_and_resume)
        lost = hung.wait_for_log("fleet_lost")
        assert lost["connectors"]
    finally:
        with psycopg.connect(fleet.admin_dsn, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET wal_sender_timeout")
            conn.execute("SELECT pg_reload_conf()")


def test_sigterm_hands_an_instances_connectors_over_cleanly(fleet: Fleet) -> None:
    """SIGTERM (leave_on_stop, the default): the instance stops its connectors cleanly
    (committed, confirmed), leaves the group and exits 0; the other one is assigned them
    at once by the group, nothing lost or written twice."""
    _start_both_and_settle(fleet)
    victim = "a" if len(fleet.owned("a")) >= len(fleet.owned("b")) else "b"
    survivor = "b" if victim == "a" else "a"
    handed = sorted(fleet.owned(victim))
    exit_codes: list[int] = []

    def terminate() -> None:
        stopped_at = time.time()
        exit_codes.append(fleet.daemons[victim].terminate())
        _take_over(fleet, victim, survivor, stopped_at, handed)

    _under_load(fleet, terminate)
    assert exit_codes == [0]
    lines = fleet.daemons[victim].log_lines()
    stopped = {line["connector"] for line in lines if line.get("event") == "streaming_stopped"}
    assert set(handed) <= stopped
    assert not [line for line in lines if line.get("event") == "streaming_abandoned"]
    assert sorted(fleet.owned(survivor)) == fleet.names


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _paced_writer(fleet: Fleet, name: str, stop: threading.Event, committed: list[range]) -> None:
    """Transactions of 20,000 rows, the next one as soon as the connector has confirmed
    the one before: the connector always has work, and its backlog stays small."""
    with psycopg.connect(fleet.dsn(name), autocommit=True) as conn:
        next_id, previous_end = 1, 0
        while not stop.is_set():
            conn.execute(
                "INSERT INTO orders SELECT g, 'x' FROM generate_series(%s::int, %s::int) g",
                (next_id, next_id + 19_999),
            )
            committed.append(range(next_id, next_id + 20_000))
            next_id += 20_000
            end = current_wal_lsn(fleet.dsn(name))

            def confirmed(after: int = previous_end) -> bool:
                return stop.is_set() or slot_confirmed_lsn(fleet.admin_dsn, name) >= after

            wait_until(
                confirmed,
                timeout=120,
                what=f"{name} to confirm its previous transaction",
            )
            previous_end = end


def test_a_fully_busy_instance_stays_in_the_group(fleet: Fleet) -> None:
    """Every connector streams as fast as it can, for longer than the session timeout and
    the poll interval (in CPU time of each instance): no instance is evicted, no connector
    moves, nothing is lost or written twice. The group's poll runs in its own thread and
    librdkafka heartbeats from its own: a connector holding the GIL does not starve them."""
    for config in fleet.configs.values():
        document = yaml.safe_load(config.read_text())
        # The poll interval as short as librdkafka allows (the session timeout): a member
        # that did not poll for that long is evicted.
        document["fleet"]["rebalance_timeout_ms"] = SESSION_TIMEOUT_MS
        config.write_text(yaml.safe_dump(document))
    busy_cpu_s = 1.5 * SESSION_TIMEOUT_MS / 1000
    _start_both_and_settle(fleet)
    owned = {i: sorted(fleet.owned(i)) for i in ("a", "b")}
    pids = {i: fleet.daemons[i].process.pid for i in ("a", "b")}
    before = {i: _cpu_seconds(pid) for i, pid in pids.items()}
    load_started = time.time()
    stop = threading.Event()
    committed: dict[str, list[range]] = {name: [] for name in fleet.names}
    writers = [
        threading.Thread(target=_paced_writer, args=(fleet, n, stop, committed[n]))
        for n in fleet.names
    ]
    for writer in writers:
        writer.start()
    try:
        wait_until(
            lambda: all(_cpu_seconds(pids[i]) - before[i] >= busy_cpu_s for i in pids),
            timeout=600,
            what=f"each instance to spend {busy_cpu_s}s of CPU streaming",
        )
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    for name in fleet.names:
        _wait_caught_up(fleet, name, timeout=120)
    for instance in ("a", "b"):
        lines = [
            line
            for line in fleet.daemons[instance].log_lines()
            if "timestamp" not in line or _at(line) > load_started
        ]
        moves = [
            line
            for line in lines
            if line.get("event") in ("fleet_revoked", "fleet_lost", "fleet_consumer_error")
        ]
        assert moves == [], moves
        assert sorted(fleet.owned(instance)) == owned[instance]
        started = Counter(
            line["connector"] for line in lines if line.get("event") == "streaming_started"
        )
        assert started == {}, started  # none restarted
    for name in fleet.names:
        _assert_each_row_once(fleet, name, {k for r in committed[name] for k in r})


def test_instances_with_other_connector_files_run_each_connector_once(fleet: Fleet) -> None:
    """A connector only instance a has a file for runs on a, never on b, even once a is
    gone; the connectors both have are shared and fail over as usual."""
    only_a = fleet.names[1]
    (fleet.connectors_of("b") / f"{only_a}.yaml").unlink()
    for instance in ("a", "b"):
        fleet.start(instance)
    wait_until(
        lambda: (
            sorted(fleet.owned("a") + fleet.owned("b")) == fleet.names
            and only_a in fleet.owned("a")
            and set(fleet.owned("a")) <= fleet.streaming("a")
        ),
        timeout=60,
        what="the connectors to split between a and b",
    )
    code, output = _fleet_status(fleet)
    assert code == 0, output
    assert re.search(r"^  instance b \(.*\(other connector files: roster \w+\)$", output, re.M)
    fleet.daemons["a"].kill()
    shared = {fleet.names[0], fleet.names[2]}
    # a's session expires; the group then has b alone, which has no file for only_a.
    wait_until(
        lambda: _fleet_status(fleet)[0] == 1,
        timeout=SESSION_TIMEOUT_MS / 1000 + 30,
        what="the group to drop a (only_a then has no owner)",
    )
    wait_until(
        lambda: shared <= set(fleet.owned("b")) and shared <= fleet.streaming("b"),
        timeout=30,
        what="b to run the connectors it has",
    )
    code, output = _fleet_status(fleet)
    assert code == 1, output
    assert re.search(r"^  instance b \(", output, re.M), output  # the group's listing
    assert "instance a" not in output
    assert sorted(fleet.owned("b")) == sorted(shared)
    assert only_a not in fleet.streaming("b")
