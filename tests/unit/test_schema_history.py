"""Table shape versions and their diffs: pure."""

from __future__ import annotations

import pytest

from cdc.protocol.messages import Column, Relation, ReplicaIdentity
from cdc.stream.schema_history import SchemaHistory, TableSchema, schema_of


def _relation(*columns: tuple[str, int, int], key: tuple[str, ...] = ("id",)) -> Relation:
    return Relation(
        None,
        16384,
        "public",
        "orders",
        ReplicaIdentity.DEFAULT,
        tuple(Column(1 if n in key else 0, n, t, m) for n, t, m in columns),
    )


BASE = (("id", 20, -1), ("status", 25, -1), ("meta", 3802, -1))


def test_first_shape_is_version_one_with_no_previous() -> None:
    change = SchemaHistory().observe(schema_of(_relation(*BASE), ("id",)))
    assert change is not None
    assert (change.version, change.previous) == (1, None)


def test_same_shape_again_is_no_change() -> None:
    history = SchemaHistory()
    history.observe(schema_of(_relation(*BASE), ("id",)))
    assert history.observe(schema_of(_relation(*BASE), ("id",))) is None


@pytest.mark.parametrize(
    ("columns", "key", "expected"),
    [
        ((*BASE, ("note", 25, -1)), ("id",), {"added": ["note"]}),
        (BASE[:2], ("id",), {"dropped": ["meta"]}),
        (
            (BASE[0], ("state", 25, -1), BASE[2]),
            ("id",),
            {"renamed": [{"from": "status", "to": "state"}]},
        ),
        ((BASE[0], ("status", 1043, 24), BASE[2]), ("id",), {"retyped": ["status"]}),
        (BASE, ("id", "status"), {"key_changed": True}),
    ],
)
def test_changes_are_described(
    columns: tuple[tuple[str, int, int], ...], key: tuple[str, ...], expected: dict[str, object]
) -> None:
    history = SchemaHistory()
    history.observe(schema_of(_relation(*BASE), ("id",)))
    change = history.observe(schema_of(_relation(*columns, key=key), key))
    assert change is not None
    assert change.version == 2
    described = change.describe()
    assert {k: v for k, v in described.items() if v} == expected


def test_history_round_trips_through_json() -> None:
    history = SchemaHistory()
    history.observe(schema_of(_relation(*BASE), ("id",)))
    history.observe(schema_of(_relation(*BASE[:2]), ("id",)))
    restored = SchemaHistory.from_json(history.to_json())
    # The restored history continues the numbering and knows the current shape.
    assert restored.observe(schema_of(_relation(*BASE[:2]), ("id",))) is None
    change = restored.observe(schema_of(_relation(*BASE), ("id",)))
    assert change is not None
    assert change.version == 3


def test_unreadable_history_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="schema history"):
        SchemaHistory.from_json(b'{"version": 99, "tables": {}}')
    with pytest.raises(ValueError, match="unreadable"):
        SchemaHistory.from_json(b"not json")


def test_table_schema_dict_round_trip() -> None:
    schema = TableSchema("public.t", (("id", 20, -1),), ("id",), "d")
    assert TableSchema.from_dict(schema.to_dict()) == schema
