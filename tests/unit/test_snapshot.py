"""Incremental snapshots: the watermark window keeps the topic equal to the table."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdc.snapshots.state import STATE_VERSION, ConnectorState, SnapshotProgress
from cdc.snapshots.window import ChunkRequest, IncrementalSnapshot

# --- a simulated database, stream and compacted topic -----------------------------------

TABLES = ("public.a", "public.b")
Row = tuple[str, int, int]  # (table, key, value): what the caller carries per chunk row


def _kb(key: int) -> bytes:
    return str(key).encode()


@dataclass
class Sim:
    """A database (tables + the stream of its commits), the snapshot driver (the steps
    the pipeline takes: LOW, read, HIGH) and a consumer that builds a compacted topic."""

    tables: dict[str, dict[int, int]]
    chunk_rows: int
    snapshot: IncrementalSnapshot[Row] = field(init=False)
    stream: list[tuple[object, ...]] = field(default_factory=list)
    cursor: int = 0
    topic: dict[tuple[str, int], int] = field(default_factory=dict)
    # Driver: the request in flight and how far its steps got.
    request: ChunkRequest | None = None
    stage: str = "idle"  # idle -> low -> read -> high (-> idle once next_chunk gives one)
    skip_next_low: bool = False
    reads: list[tuple[str, tuple[str | None, ...] | None]] = field(default_factory=list)
    stored: list[SnapshotProgress] = field(default_factory=list)

    def __post_init__(self) -> None:
        start = SnapshotProgress(snapshot_id="s1", kind="incremental", tables=TABLES)
        self.snapshot = IncrementalSnapshot(start, chunk_rows=self.chunk_rows)
        self.stored.append(start)

    # database side: every commit changes the table and enters the stream at once
    def write(self, table: str, key: int, value: int | None) -> None:
        if value is None:
            self.tables[table].pop(key, None)
        else:
            self.tables[table][key] = value
        self.stream.append(("change", table, ((key, value),)))

    def move(self, table: str, old: int, new: int) -> None:
        """A primary-key update: old key gone, new key holds the row, in one commit."""
        rows = self.tables[table]
        if old not in rows or new in rows:
            return
        rows[new] = rows.pop(old)
        self.stream.append(("change", table, ((old, None), (new, rows[new]))))

    def truncate(self, table: str) -> None:
        self.tables[table].clear()
        self.stream.append(("truncate", table))

    def emit_watermark(self, snapshot_id: str, chunk_id: int, kind: str) -> None:
        self.stream.append(("wm", snapshot_id, chunk_id, kind))

    # driver side
    def step(self) -> None:
        """One step of the pipeline's chunk loop."""
        if self.stage in ("idle", "high"):
            request = self.snapshot.next_chunk()
            if request is None:
                return
            self.request, self.stage = request, "low"
            if self.skip_next_low:
                self.skip_next_low = False
            else:
                self.emit_watermark(self.snapshot.snapshot_id, request.chunk_id, "low")
        elif self.stage == "low":
            self.read()
            self.stage = "read"
        else:
            assert self.request is not None
            self.emit_watermark(self.snapshot.snapshot_id, self.request.chunk_id, "high")
            self.stage = "high"

    def read(self) -> None:
        """The chunk query: the table as it is now, keys after ``after_key``, LIMIT n."""
        request = self.request
        assert request is not None
        after = None if request.after_key is None else int(request.after_key[0] or "")
        keys = sorted(k for k in self.tables[request.table] if after is None or k > after)
        keys = keys[: request.limit]
        rows = [(_kb(k), (request.table, k, self.tables[request.table][k])) for k in keys]
        exhausted = len(keys) < request.limit
        last_key = (str(keys[-1]),) if keys else None
        self.reads.append((request.table, request.after_key))
        self.snapshot.chunk_read(request.chunk_id, rows, last_key, exhausted)

    # consumer side
    def consume(self, n: int) -> None:
        snapshot = self.snapshot
        for event in self.stream[self.cursor : self.cursor + n]:
            self.cursor += 1
            if event[0] == "change":
                _, table, changes = event
                assert isinstance(table, str)
                for key, value in changes:  # type: ignore[attr-defined]
                    snapshot.change(table, _kb(key))
                    if value is None:
                        self.topic.pop((table, key), None)
                    else:
                        self.topic[table, key] = value
            elif event[0] == "truncate":
                table = event[1]
                assert isinstance(table, str)
                snapshot.truncate(table)
                for topic_key in [k for k in self.topic if k[0] == table]:
                    del self.topic[topic_key]
            else:
                _, snapshot_id, chunk_id, kind = event
                assert isinstance(snapshot_id, str)
                assert isinstance(chunk_id, int)
                assert kind in ("low", "high")
                rows = snapshot.watermark(snapshot_id, chunk_id, kind)
                for table, key, value in rows or ():
                    self.topic[table, key] = value
                if rows is not None:
                    self.stored.append(snapshot.progress)

    def crash(self, stream_back: int, progress_back: int) -> None:
        """SIGKILL: memory is lost; the stream resumes at an earlier confirmed position,
        the snapshot from a stored progress (not necessarily the latest)."""
        self.cursor = max(0, self.cursor - stream_back)
        stored = self.stored[max(0, len(self.stored) - 1 - progress_back)]
        self.snapshot = IncrementalSnapshot(stored, chunk_rows=self.chunk_rows)
        self.request, self.stage, self.skip_next_low = None, "idle", False

    def finish(self) -> None:
        for _ in range(10_000):
            self.consume(len(self.stream))
            if self.snapshot.finished:
                return
            self.step()
        raise AssertionError("the snapshot did not finish")

    def table_image(self) -> dict[tuple[str, int], int]:
        return {(t, k): v for t, rows in self.tables.items() for k, v in rows.items()}


KEYS = st.integers(0, 7)  # few keys, so writes often hit the chunk in flight
VALUES = st.integers(0, 1_000)
TABLE = st.sampled_from(TABLES)

_ACTION_KINDS: dict[str, st.SearchStrategy[tuple[object, ...]]] = {
    "write": st.tuples(st.just("write"), TABLE, KEYS, st.none() | VALUES),
    "step": st.tuples(st.just("step")),
    "consume": st.tuples(st.just("consume"), st.integers(0, 6)),
    "move": st.tuples(st.just("move"), TABLE, KEYS, KEYS),
    "truncate": st.tuples(st.just("truncate"), TABLE),
    "stale": st.tuples(
        st.just("stale"), st.sampled_from(["other-snapshot", "other-chunk"]), st.booleans()
    ),
    "skip_low": st.tuples(st.just("skip_low")),
    "dup_low": st.tuples(st.just("dup_low")),
    "reread": st.tuples(st.just("reread")),
    "abandon": st.tuples(st.just("abandon")),
    "crash": st.tuples(st.just("crash"), st.integers(0, 8), st.integers(0, 2)),
}
# Writes, chunk steps and consumption dominate; the odd events are rarer, as in life (a
# crash replays the stream, which would also repair a wrongly emitted row and hide a bug).
_WEIGHTS = {"write": 8, "step": 8, "consume": 4, "move": 2, "truncate": 1, "stale": 1}
ACTIONS = st.sampled_from(
    [kind for kind in _ACTION_KINDS for _ in range(_WEIGHTS.get(kind, 1))]
).flatmap(_ACTION_KINDS.__getitem__)

INITIAL = st.fixed_dictionaries({t: st.dictionaries(KEYS, VALUES, max_size=10) for t in TABLES})


def _run(sim: Sim, action: tuple[object, ...]) -> None:
    match action:
        case ("write", str(table), int(key), value):
            assert value is None or isinstance(value, int)
            sim.write(table, key, value)
        case ("move", str(table), int(old), int(new)):
            sim.move(table, old, new)
        case ("truncate", str(table)):
            sim.truncate(table)
        case ("step",):
            sim.step()
        case ("consume", int(n)):
            sim.consume(n)
        case ("stale", which, bool(high)):
            kind = "high" if high else "low"
            if which == "other-snapshot":
                sim.emit_watermark("s0", sim.request.chunk_id if sim.request else 0, kind)
            else:
                sim.emit_watermark("s1", 10_000, kind)
        case ("skip_low",):
            sim.skip_next_low = True
        case ("dup_low",):
            # The caller retries LOW (unsure it committed); a LOW after the read needs a
            # new read, as the pipeline's retry does (LOW, then read again).
            if sim.request is not None and sim.stage in ("low", "read"):
                sim.emit_watermark("s1", sim.request.chunk_id, "low")
                if sim.stage == "read":
                    sim.read()
        case ("reread",):
            if sim.stage == "read":
                sim.read()
        case ("abandon",):
            if sim.stage in ("low", "read"):
                sim.snapshot.abandon_chunk()
                sim.request, sim.stage = None, "idle"
        case ("crash", int(stream_back), int(progress_back)):
            sim.crash(stream_back, progress_back)
        case _:  # pragma: no cover - the strategy makes only the actions above
            raise AssertionError(action)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    initial=INITIAL,
    chunk_rows=st.integers(1, 4),
    actions=st.lists(ACTIONS, min_size=10, max_size=80),
)
def test_compacted_topic_equals_table_after_snapshot_and_stream(
    initial: dict[str, dict[int, int]], chunk_rows: int, actions: list[tuple[object, ...]]
) -> None:
    """Rows that predate the stream reach the topic only by the snapshot; whatever the
    workload, stale watermarks, lost or repeated LOWs and crashes, the end state matches."""
    sim = Sim(tables={t: dict(rows) for t, rows in initial.items()}, chunk_rows=chunk_rows)
    for action in actions:
        _run(sim, action)
    sim.finish()
    assert sim.table_image() == sim.topic


@settings(max_examples=200)
@given(initial=INITIAL, chunk_rows=st.integers(1, 4))
def test_quiet_table_is_read_once_in_order(
    initial: dict[str, dict[int, int]], chunk_rows: int
) -> None:
    """Without changes every chunk is read once and every row is emitted once."""
    sim = Sim(tables={t: dict(rows) for t, rows in initial.items()}, chunk_rows=chunk_rows)
    sim.finish()
    assert sim.table_image() == sim.topic
    assert len(sim.reads) == len(set(sim.reads))
    progress = sim.snapshot.progress
    assert progress.rows_done == sum(len(rows) for rows in initial.values())
    assert progress.chunks_done == len(sim.reads)
    assert progress.tables_done == TABLES


def test_foreign_low_after_the_read_does_not_open_the_window() -> None:
    """The chunk's own LOW is lost; a LOW of another snapshot, committed after the read and
    after an update, must not stand in for it, or the old row would overwrite the update."""
    sim = Sim(tables={"public.a": {1: 1}, "public.b": {}}, chunk_rows=4)
    for action in [
        ("skip_low",),
        ("step",),  # request, LOW lost
        ("step",),  # read {1: 1}
        ("write", "public.a", 1, 99),
        ("stale", "other-snapshot", False),
        ("step",),  # HIGH
    ]:
        _run(sim, action)
    sim.finish()
    assert sim.table_image() == sim.topic


# --- the state machine, step by step ------------------------------------------------------


def _progress(**kw: object) -> SnapshotProgress:
    base: dict[str, object] = {
        "snapshot_id": "s1",
        "kind": "incremental",
        "tables": ("public.a", "public.b"),
    }
    return SnapshotProgress(**{**base, **kw})  # type: ignore[arg-type]


def _snap(chunk_rows: int = 2, **kw: object) -> IncrementalSnapshot[str]:
    return IncrementalSnapshot(_progress(**kw), chunk_rows=chunk_rows)


ROWS = [(b"1", "r1"), (b"2", "r2")]


def test_chunk_rows_must_be_positive() -> None:
    with pytest.raises(ValueError, match="chunk_rows"):
        _snap(chunk_rows=0)


def test_first_request_starts_the_first_table() -> None:
    expected = ChunkRequest(chunk_id=0, table="public.a", after_key=None, limit=2)
    assert expected == _snap().next_chunk()


def test_no_second_request_while_a_chunk_is_in_flight() -> None:
    snap = _snap()
    snap.next_chunk()
    assert snap.next_chunk() is None


def test_unchanged_rows_are_emitted_at_high_and_progress_advances() -> None:
    snap = _snap()
    req = snap.next_chunk()
    assert req is not None
    assert snap.watermark("s1", req.chunk_id, "low") is None
    assert snap.chunk_read(req.chunk_id, ROWS, ("2",), exhausted=False)
    assert snap.watermark("s1", req.chunk_id, "high") == ["r1", "r2"]
    assert _progress(last_key=("2",), chunks_done=1, rows_done=2) == snap.progress
    expected = ChunkRequest(chunk_id=1, table="public.a", after_key=("2",), limit=2)
    assert expected == snap.next_chunk()


def test_rows_changed_in_the_window_are_dropped() -> None:
    snap = _snap()
    req = snap.next_chunk()
    assert req is not None
    snap.change("public.a", b"1")  # before LOW: not in the window
    snap.watermark("s1", req.chunk_id, "low")
    snap.change("public.a", b"2")
    snap.change("public.b", b"1")  # another table
    snap.chunk_read(req.chunk_id, ROWS, ("2",), exhausted=False)
    assert snap.watermark("s1", req.chunk_id, "high") == ["r1"]
    snap.change("public.a", b"1")  # after HIGH: no window
    assert snap.progress.rows_done == 1


def test_changes_recorded_before_the_rows_arrive_still_count() -> None:
    """LOW may come through the stream before the chunk query returns."""
    snap = _snap()
    req = snap.next_chunk()
    assert req is not None
    snap.watermark("s1", req.chunk_id, "low")
    snap.change("public.a", b"1")
    snap.chunk_read(req.chunk_id, ROWS, ("2",), exhausted=False)
    assert snap.watermark("s1", req.chunk_id, "high") == ["r2"]


def test_truncate_in_the_window_drops_the_whole_chunk() -> None:
    snap = _snap()
    req = snap.next_chunk()
    assert req is not None
    snap.truncate("public.a")  # before LOW: ignored
    snap.watermark("s1", req.chunk_id, "low")
    snap.truncate("public.b")  # another table: ignored
    snap.chunk_read(req.chunk_id, ROWS, ("2",), exhausted=False)
    assert snap.watermark("s1", req.chunk_id, "high") == ["r1", "r2"]
    req = snap.next_chunk()
    assert req is not None
    snap.watermark("s1", req.chunk_id, "low")
    snap.truncate("public.a")
    snap.chunk_read(req.chunk_id, [(b"3", "r3")], ("3",), exhausted=True)
    assert snap.watermark("s1", req.chunk_id, "high") == []
    assert _progress(
        tables=("public.b",), chunks_done=2, rows_done=2, tables_done=("public.a",)
    ) == (snap.progress)


def test_stale_watermarks_are_ignored() -> None:
    snap = _snap()
    assert snap.watermark("s1", 0, "high") is None  # nothing in flight
    req = snap.next_chunk()
    assert req is not None
    assert snap.watermark("s0", req.chunk_id, "low") is None
    assert snap.watermark("s1", req.chunk_id + 7, "low") is None
    snap.change("public.a", b"1")  # the window is not open
    snap.chunk_read(req.chunk_id, ROWS, ("2",), exhausted=False)
    assert snap.watermark("s0", req.chunk_id, "high") is None
    assert snap.watermark("s1", req.chunk_id + 7, "high") is None
    snap.watermark("s1", req.chunk_id, "low")
    assert snap.watermark("s1", req.chunk_id, "high") == ["r1", "r2"]
    assert snap.watermark("s1", req.chunk_id, "high") is None  # repeated HIGH


def test_high_without_low_reads_the_same_range_again() -> None:
    snap = _snap(last_key=("5",), chunks_done=3)
    req = snap.next_chunk()
    assert req is not None
    snap.chunk_read(req.chunk_id, ROWS, ("7",), exhausted=False)
    assert snap.watermark("s1", req.chunk_id, "high") is None
    assert _progress(last_key=("5",), chunks_done=3) == snap.progress
    expected = ChunkRequest(chunk_id=4, table="public.a", after_key=("5",), limit=2)
    assert expected == snap.next_chunk()
    assert snap.watermark("s1", req.chunk_id, "low") is None  # the old id is stale now


def test_high_before_the_rows_reads_the_same_range_again() -> None:
    snap = _snap()
    req = snap.next_chunk()
    assert req is not None
    snap.watermark("s1", req.chunk_id, "low")
    assert snap.watermark("s1", req.chunk_id, "high") is None
    assert not snap.chunk_read(req.chunk_id, ROWS, ("2",), exhausted=False)  # late rows
    again = snap.next_chunk()
    assert again is not None
    assert (again.chunk_id, again.after_key) == (req.chunk_id + 1, req.after_key)


def test_repeated_low_keeps_the_earliest_window_start() -> None:
    snap = _snap()
    req = snap.next_chunk()
    assert req is not None
    snap.watermark("s1", req.chunk_id, "low")
    snap.change("public.a", b"1")
    assert snap.watermark("s1", req.chunk_id, "low") is None
    snap.chunk_read(req.chunk_id, ROWS, ("2",), exhausted=False)
    assert snap.watermark("s1", req.chunk_id, "high") == ["r2"]


def test_repeated_read_replaces_the_rows() -> None:
    snap = _snap()
    req = snap.next_chunk()
    assert req is not None
    snap.watermark("s1", req.chunk_id, "low")
    snap.chunk_read(req.chunk_id, ROWS, ("2",), exhausted=False)
    snap.chunk_read(req.chunk_id, [(b"1", "r1'")], None, exhausted=True)
    assert snap.watermark("s1", req.chunk_id, "high") == ["r1'"]
    assert snap.progress.tables == ("public.b",)


def test_rows_of_another_chunk_are_refused() -> None:
    snap = _snap()
    assert not snap.chunk_read(0, ROWS, ("2",), exhausted=False)
    req = snap.next_chunk()
    assert req is not None
    assert not snap.chunk_read(req.chunk_id + 1, ROWS, ("2",), exhausted=False)


def test_unfinished_chunk_needs_its_last_key() -> None:
    snap = _snap()
    req = snap.next_chunk()
    assert req is not None
    with pytest.raises(ValueError, match="last key"):
        snap.chunk_read(req.chunk_id, [], None, exhausted=False)


def test_abandoned_chunk_is_asked_again_under_a_new_id() -> None:
    snap = _snap()
    req = snap.next_chunk()
    assert req is not None
    snap.watermark("s1", req.chunk_id, "low")
    snap.abandon_chunk()
    assert snap.watermark("s1", req.chunk_id, "high") is None
    again = snap.next_chunk()
    assert again is not None
    assert (again.chunk_id, again.table, again.after_key) == (1, "public.a", None)


def test_keyless_table_is_one_exhausted_chunk() -> None:
    snap = _snap(tables=("public.nokey",))
    req = snap.next_chunk()
    assert req is not None
    assert req.after_key is None
    snap.watermark("s1", req.chunk_id, "low")
    snap.chunk_read(req.chunk_id, [(b"", "x"), (b"", "y")], None, exhausted=True)
    assert snap.watermark("s1", req.chunk_id, "high") == ["x", "y"]
    assert snap.finished
    assert snap.next_chunk() is None
    assert snap.progress.tables_done == ("public.nokey",)


def test_resume_continues_after_the_stored_last_key() -> None:
    snap = _snap()
    req = snap.next_chunk()
    assert req is not None
    snap.watermark("s1", req.chunk_id, "low")
    snap.chunk_read(req.chunk_id, ROWS, ("2",), exhausted=False)
    snap.watermark("s1", req.chunk_id, "high")
    stored = SnapshotProgress.from_json(snap.progress.to_json())
    resumed: IncrementalSnapshot[str] = IncrementalSnapshot(stored, chunk_rows=2)
    expected = ChunkRequest(chunk_id=1, table="public.a", after_key=("2",), limit=2)
    assert expected == resumed.next_chunk()
    assert resumed.snapshot_id == "s1"


def test_crash_reads_at_most_one_chunk_again() -> None:
    """Progress stored at every HIGH; SIGKILL while a chunk is in flight; restart."""
    sim = Sim(tables={"public.a": {k: k for k in range(10)}, "public.b": {}}, chunk_rows=3)
    for _ in range(2):  # two chunks finished and their progress stored
        for _ in range(3):
            sim.step()
            sim.consume(len(sim.stream))
    for _ in range(3):  # the third chunk: LOW, read, HIGH, not yet through the stream
        sim.step()
    assert sim.snapshot.progress.chunks_done == 2
    sim.crash(stream_back=0, progress_back=0)
    sim.finish()
    assert sim.table_image() == sim.topic
    assert len(sim.reads) - len(set(sim.reads)) == 1


# --- state records --------------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
NAMES = st.lists(TEXT, max_size=4).map(tuple)
PROGRESS = st.builds(
    SnapshotProgress,
    snapshot_id=TEXT,
    kind=st.sampled_from(["initial", "incremental"]),
    tables=NAMES,
    last_key=st.none() | st.lists(st.none() | TEXT, max_size=3).map(tuple),
    chunks_done=st.integers(0, 2**40),
    rows_done=st.integers(0, 2**40),
    tables_done=NAMES,
)
STATES = st.builds(
    ConnectorState,
    initial_snapshot=st.sampled_from([None, "pending", "running", "done"]),
    initial_tables=NAMES,
    incremental=st.none() | PROGRESS,
)


@given(PROGRESS)
def test_progress_json_round_trips(progress: SnapshotProgress) -> None:
    data = progress.to_json()
    assert progress == SnapshotProgress.from_json(data)
    assert data == SnapshotProgress.from_json(data).to_json()


@given(STATES)
def test_connector_state_json_round_trips(state: ConnectorState) -> None:
    data = state.to_json()
    assert state == ConnectorState.from_json(data)
    assert data == ConnectorState.from_json(data).to_json()


def test_progress_json_is_versioned() -> None:
    progress = _progress(last_key=("1", None), chunks_done=2, rows_done=5)
    expected = {
        "version": STATE_VERSION,
        "snapshot_id": "s1",
        "kind": "incremental",
        "tables": ["public.a", "public.b"],
        "last_key": ["1", None],
        "chunks_done": 2,
        "rows_done": 5,
        "tables_done": [],
    }
    assert expected == orjson.loads(progress.to_json())


def test_finished_progress() -> None:
    assert _progress(tables=()).finished
    assert not _progress().finished


@pytest.mark.parametrize("cls", [SnapshotProgress, ConnectorState])
def test_unknown_version_says_what_to_do(cls: type[SnapshotProgress | ConnectorState]) -> None:
    with pytest.raises(ValueError, match=r"version 2 is unknown.*cdc release.*__cdc_state"):
        cls.from_json(b'{"version": 2}')


VALID: dict[str, object] = orjson.loads(_progress().to_json())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "JSON object"),
        (b"{}", "version None"),
        (orjson.dumps({**VALID, "snapshot_id": 1}), "snapshot_id"),
        (orjson.dumps({**VALID, "kind": "full"}), "kind"),
        (orjson.dumps({**VALID, "tables": "public.a"}), "tables"),
        (orjson.dumps({**VALID, "tables": [1]}), "tables"),
        (orjson.dumps({**VALID, "last_key": "1"}), "last_key"),
        (orjson.dumps({**VALID, "last_key": [1]}), "last_key"),
        (orjson.dumps({**VALID, "chunks_done": -1}), "chunks_done"),
        (orjson.dumps({**VALID, "rows_done": True}), "rows_done"),
        (orjson.dumps({**VALID, "rows_done": 1.5}), "rows_done"),
    ],
)
def test_malformed_progress_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SnapshotProgress.from_json(data)


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"initial_snapshot": "maybe", "initial_tables": []}, "initial_snapshot"),
        ({"initial_snapshot": None, "initial_tables": None}, "initial_tables"),
        ({"initial_tables": [], "incremental": []}, "incremental"),
        ({"initial_tables": [], "incremental": {"snapshot_id": "s"}}, "incremental: kind"),
    ],
)
def test_malformed_connector_state_is_refused(state: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConnectorState.from_json(orjson.dumps({"version": STATE_VERSION, **state}))


def test_empty_connector_state() -> None:
    assert ConnectorState() == ConnectorState.from_json(
        b'{"version": 1, "initial_snapshot": null, "initial_tables": [], "incremental": null}'
    )


def test_tables_requested_while_running_join_the_stored_progress() -> None:
    progress = SnapshotProgress(snapshot_id="s", kind="incremental", tables=("public.a",))
    snapshot: IncrementalSnapshot[str] = IncrementalSnapshot(progress, chunk_rows=10)
    snapshot.add_tables(["public.b", "public.a", "public.b"])
    assert snapshot.progress.tables == ("public.a", "public.b")
    restored = SnapshotProgress.from_json(snapshot.progress.to_json())
    assert restored.tables == ("public.a", "public.b")
    snapshot.add_tables(["public.b"])  # already to do: nothing changes
    assert snapshot.progress.tables == ("public.a", "public.b")
