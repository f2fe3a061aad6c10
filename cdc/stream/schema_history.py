"""Versions of each table's shape, and the schema-change events between them. No I/O.

The one job: given the Relation messages pgoutput sends (before a table's first change in
a session, and again after any DDL that touches it), tell when a table's shape changed
and describe the change, with a version number per table that survives restarts (the
known shapes are stored in the connector's state topic).

A schema-change event is published before the first data event of the new shape, so a
consumer reading in order can switch its schema at the right event. pgoutput sends
Relation messages lazily, so the event's ``source.lsn`` is the position of the first
change that uses the new shape, not of the DDL itself.

Each known shape remembers the stream position it was announced at. After a restart the
stream replays from the slot's position, which may lie before announcements the stored
history already holds: a shape seen before the position of the table's latest
announcement is an older one being replayed, not a change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from cdc.positions import Position
from cdc.protocol.messages import Relation
from cdc.state_records import load_versioned

__all__ = ["SchemaChange", "SchemaHistory", "TableSchema", "schema_of"]

STATE_VERSION = 1
_REFUSE_HINT = "run a cdc release that writes it"


@dataclass(frozen=True, slots=True)
class TableSchema:
    """A table's shape as consumers see it: columns in order, the event key."""

    table: str  # schema.table
    columns: tuple[tuple[str, int, int], ...]  # (name, type OID, type modifier)
    key_columns: tuple[str, ...]
    replica_identity: str  # d, n, f, i

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "columns": [list(c) for c in self.columns],
            "key_columns": list(self.key_columns),
            "replica_identity": self.replica_identity,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableSchema:
        return cls(
            table=str(data["table"]),
            columns=tuple((str(n), int(t), int(m)) for n, t, m in data["columns"]),
            key_columns=tuple(str(k) for k in data["key_columns"]),
            replica_identity=str(data["replica_identity"]),
        )


def schema_of(relation: Relation, key_columns: Sequence[str]) -> TableSchema:
    """The shape a Relation message describes, keyed as the events are keyed."""
    return TableSchema(
        table=f"{relation.namespace}.{relation.name}",
        columns=tuple((c.name, c.type_oid, c.type_modifier) for c in relation.columns),
        key_columns=tuple(key_columns),
        replica_identity=relation.replica_identity.value,
    )


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """One new version of one table's shape, and how it differs from the previous one."""

    version: int
    schema: TableSchema
    previous: TableSchema | None
    added: tuple[str, ...]
    dropped: tuple[str, ...]
    renamed: tuple[tuple[str, str], ...]  # (old name, new name)
    retyped: tuple[str, ...]  # same name, new type or modifier
    key_changed: bool

    def describe(self) -> dict[str, Any]:
        """The ``change`` part of the event: what a consumer must adapt to."""
        return {
            "added": list(self.added),
            "dropped": list(self.dropped),
            "renamed": [{"from": old, "to": new} for old, new in self.renamed],
            "retyped": list(self.retyped),
            "key_changed": self.key_changed,
        }


def diff(previous: TableSchema | None, schema: TableSchema, version: int) -> SchemaChange:
    """Describe the change; a column that vanished while another of the same type appeared
    at the same position is reported as a rename (pgoutput sends names, not attnums)."""
    if previous is None:
        return SchemaChange(version, schema, None, (), (), (), (), False)
    old = {name: (oid, mod) for name, oid, mod in previous.columns}
    new = {name: (oid, mod) for name, oid, mod in schema.columns}
    added = [c for c in new if c not in old]
    dropped = [c for c in old if c not in new]
    renamed: list[tuple[str, str]] = []
    old_positions = {name: i for i, (name, _, _) in enumerate(previous.columns)}
    new_positions = {name: i for i, (name, _, _) in enumerate(schema.columns)}
    for gone in list(dropped):
        for came in list(added):
            if old[gone] == new[came] and old_positions[gone] == new_positions[came]:
                renamed.append((gone, came))
                dropped.remove(gone)
                added.remove(came)
                break
    retyped = [c for c in new if c in old and old[c] != new[c]]
    return SchemaChange(
        version=version,
        schema=schema,
        previous=previous,
        added=tuple(added),
        dropped=tuple(dropped),
        renamed=tuple(renamed),
        retyped=tuple(retyped),
        key_changed=previous.key_columns != schema.key_columns,
    )


_ORIGIN = Position(0, 0)


class SchemaHistory:
    """The last known shape and version of every table; says when a Relation is new."""

    __slots__ = ("_known",)

    def __init__(
        self, known: Mapping[str, tuple[int, TableSchema, Position]] | None = None
    ) -> None:
        # table -> (version, shape, position it was announced at)
        self._known: dict[str, tuple[int, TableSchema, Position]] = dict(known or {})

    def observe(self, schema: TableSchema, at: Position = _ORIGIN) -> SchemaChange | None:
        """The change this shape makes at stream position ``at``, or None when it is the
        shape already known, or an older one replayed from before the latest
        announcement."""
        current = self._known.get(schema.table)
        if current is not None and (current[1] == schema or at < current[2]):
            return None
        version = 1 if current is None else current[0] + 1
        change = diff(None if current is None else current[1], schema, version)
        self._known[schema.table] = (version, schema, at)
        return change

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "version": STATE_VERSION,
                "tables": {
                    name: {"schema_version": v, "schema": s.to_dict(), "at": list(at)}
                    for name, (v, s, at) in sorted(self._known.items())
                },
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> SchemaHistory:
        """Raises ValueError for a record this version cannot read."""
        document = load_versioned(
            data, version=STATE_VERSION, what="schema history", hint=_REFUSE_HINT
        )
        try:
            return cls(
                {
                    name: (
                        int(entry["schema_version"]),
                        TableSchema.from_dict(entry["schema"]),
                        Position(*(int(v) for v in entry.get("at", (0, 0)))),
                    )
                    for name, entry in document["tables"].items()
                }
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"unreadable schema history: {exc}") from exc
