"""The durable state of a connector's snapshots, as kept in its state topic. No I/O.

The one job: the values (``ConnectorState``, ``SnapshotProgress``) and their versioned
JSON, read back at start. ``SnapshotProgress`` is the progress of one snapshot as of its
last finished chunk: the tables still to do, the current one first, each optionally
bounded by a key range (a crashed initial snapshot leaves the rest of each key range its
parallel workers had not finished), and how far the current one got.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from cdc.state_records import load_versioned

__all__ = [
    "STATE_KEY",
    "STATE_VERSION",
    "ConnectorState",
    "Key",
    "SnapshotProgress",
]

# The state topic's key of the connector's snapshot state (ConnectorState).
STATE_KEY = b"snapshot"

#: Version of the JSON written to the state topic; bumped on any incompatible change so
#: an older cdc refuses a newer record instead of misreading it.
STATE_VERSION = 1

_KINDS = ("initial", "incremental")
_INITIAL_STATES = ("pending", "running", "done")
_REFUSE_HINT = (
    "run a cdc release that writes it, or delete the 'snapshot' record of the connector's"
    " state topic (<connector>.__cdc_state) to start its snapshots over"
)

Key = tuple[str | None, ...]
Bounds = tuple[Key | None, Key | None]  # (after this key, up to and including this key)


@dataclass(frozen=True, slots=True)
class SnapshotProgress:
    """The durable progress of one snapshot, as of its last finished chunk.

    Attributes:
        snapshot_id: names the snapshot in its watermarks.
        kind: "initial" (a crashed initial snapshot finished incrementally) or "incremental".
        tables: qualified "schema.table" names still to do, the current one first.
        last_key: text values of the key of the last row of the last finished chunk of the
            current table; None when the current table has not been started.
        bounds: empty (every table whole), or one ``(after, until)`` key range per entry
            of ``tables``: the entry covers keys above ``after`` up to and including
            ``until`` (None: unbounded). A table may appear once per range.
        chunks_done: chunks finished (also the id of the first chunk a resumed run asks for).
        rows_done: rows emitted.
        tables_done: tables finished, in order.
    """

    snapshot_id: str
    kind: Literal["initial", "incremental"]
    tables: tuple[str, ...]
    last_key: Key | None = None
    chunks_done: int = 0
    rows_done: int = 0
    tables_done: tuple[str, ...] = ()
    bounds: tuple[Bounds, ...] = ()

    def __post_init__(self) -> None:
        if self.bounds and len(self.bounds) != len(self.tables):
            raise ValueError(f"bounds has {len(self.bounds)} entries for {len(self.tables)} tables")

    def current_bounds(self) -> Bounds:
        """The key range of the current table entry: ``after`` is where it resumes."""
        after, until = self.bounds[0] if self.bounds else (None, None)
        return (self.last_key if self.last_key is not None else after), until

    @property
    def finished(self) -> bool:
        """No table is left."""
        return not self.tables

    def to_json(self) -> bytes:
        """The state-topic value: versioned JSON, the same bytes for equal progress."""
        return orjson.dumps({"version": STATE_VERSION, **_progress_dict(self)})

    @classmethod
    def from_json(cls, data: bytes) -> SnapshotProgress:
        """Parse ``to_json`` output.

        Raises:
            ValueError: not valid JSON of this shape, or a version this cdc does not know.
        """
        obj = _load(data, "snapshot progress")
        return _progress_from(obj, "snapshot progress")


@dataclass(frozen=True, slots=True)
class ConnectorState:
    """The connector's snapshot state, the one value of the state topic.

    Attributes:
        initial_snapshot: None before any decision, else where the initial snapshot stands.
        initial_tables: tables the initial snapshot still has to do.
        incremental: the running incremental snapshot, if any.
    """

    initial_snapshot: Literal["pending", "running", "done"] | None = None
    initial_tables: tuple[str, ...] = ()
    incremental: SnapshotProgress | None = None

    def to_json(self) -> bytes:
        """Versioned JSON, the same bytes for equal states."""
        inc = None if self.incremental is None else _progress_dict(self.incremental)
        return orjson.dumps(
            {
                "version": STATE_VERSION,
                "initial_snapshot": self.initial_snapshot,
                "initial_tables": list(self.initial_tables),
                "incremental": inc,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> ConnectorState:
        """Parse ``to_json`` output.

        Raises:
            ValueError: not valid JSON of this shape, or a version this cdc does not know.
        """
        what = "connector state"
        obj = _load(data, what)
        initial = obj.get("initial_snapshot")
        if initial is not None and initial not in _INITIAL_STATES:
            raise ValueError(
                f"{what}: initial_snapshot {initial!r} is not one of {_INITIAL_STATES}"
            )
        inc = obj.get("incremental")
        if inc is not None and not isinstance(inc, dict):
            raise ValueError(f"{what}: incremental must be an object or null")
        return cls(
            initial_snapshot=initial,
            initial_tables=_str_tuple(obj, "initial_tables", what),
            incremental=None if inc is None else _progress_from(inc, f"{what}.incremental"),
        )


def _progress_dict(p: SnapshotProgress) -> dict[str, Any]:
    return {
        "snapshot_id": p.snapshot_id,
        "kind": p.kind,
        "tables": list(p.tables),
        "last_key": None if p.last_key is None else list(p.last_key),
        "chunks_done": p.chunks_done,
        "rows_done": p.rows_done,
        "tables_done": list(p.tables_done),
        **({"bounds": [[_key_json(a), _key_json(u)] for a, u in p.bounds]} if p.bounds else {}),
    }


def _key_json(key: Key | None) -> list[str | None] | None:
    return None if key is None else list(key)


def _key_from(raw: Any, what: str) -> Key | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(v is None or isinstance(v, str) for v in raw):
        raise ValueError(f"{what}: keys must be lists of strings/nulls, or null")
    return tuple(raw)


def _load(data: bytes, what: str) -> dict[str, Any]:
    return load_versioned(data, version=STATE_VERSION, what=what, hint=_REFUSE_HINT)


def _progress_from(obj: dict[str, Any], what: str) -> SnapshotProgress:
    snapshot_id = obj.get("snapshot_id")
    if not isinstance(snapshot_id, str):
        raise ValueError(f"{what}: snapshot_id must be a string")  # noqa: TRY004 (as above)
    kind = obj.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"{what}: kind {kind!r} is not one of {_KINDS}")
    raw_key = obj.get("last_key")
    last_key: Key | None = None
    if raw_key is not None:
        if not isinstance(raw_key, list) or not all(
            v is None or isinstance(v, str) for v in raw_key
        ):
            raise ValueError(f"{what}: last_key must be a list of strings/nulls, or null")
        last_key = tuple(raw_key)
    raw_bounds = obj.get("bounds", [])
    if not isinstance(raw_bounds, list) or not all(
        isinstance(b, list) and len(b) == 2 for b in raw_bounds
    ):
        raise ValueError(f"{what}: bounds must be a list of [after, until] pairs")
    bounds = tuple((_key_from(a, what), _key_from(u, what)) for a, u in raw_bounds)
    tables = _str_tuple(obj, "tables", what)
    if bounds and len(bounds) != len(tables):
        raise ValueError(f"{what}: bounds must have one entry per table")
    return SnapshotProgress(
        snapshot_id=snapshot_id,
        kind=kind,
        tables=tables,
        last_key=last_key,
        chunks_done=_count(obj, "chunks_done", what),
        rows_done=_count(obj, "rows_done", what),
        tables_done=_str_tuple(obj, "tables_done", what),
        bounds=bounds,
    )


def _str_tuple(obj: dict[str, Any], name: str, what: str) -> tuple[str, ...]:
    value = obj.get(name)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what}: {name} must be a list of strings")
    return tuple(value)


def _count(obj: dict[str, Any], name: str, what: str) -> int:
    value = obj.get(name)
    # bool is an int subclass; true/false here is a corrupt record, not 1/0.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what}: {name} must be a non-negative integer")
    return value
