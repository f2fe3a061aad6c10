"""Schema-change events: built and read by one module (cdc.stream.schema_changes). Pure."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc.envelope import TxContext
from cdc.positions import Position
from cdc.protocol.messages import Column, Relation, ReplicaIdentity
from cdc.protocol.typeinfo import Attribute, TypeInfo
from cdc.protocol.values import ValueOptions, converter_for
from cdc.stream.schema_changes import (
    AttributeDefinition,
    ColumnShape,
    SchemaChanges,
    SchemaEventError,
    TableDescription,
    TableShape,
    TypeDefinition,
    TypeReference,
    encode_schema_event,
    parse_schema_event,
    type_definition,
    type_definitions,
    type_infos,
)
from cdc.stream.schema_history import SchemaHistory

NOW_US = 1_800_000_000_000_000

# --- a legacy database's custom types, as the catalog describes them -----------------------

MOOD = TypeInfo(
    oid=16513, namespace="public", name="mood", kind="e", category="E",
    labels=("sad", "ok", "happy"),
)  # fmt: skip
MOOD_ARRAY = TypeInfo(
    oid=16512, namespace="public", name="_mood", kind="b", category="A", element_oid=16513
)
PRICE = TypeInfo(
    oid=16520, namespace="public", name="price", kind="d", category="N", base_oid=1700,
    base_modifier=458758, base_type="numeric(7,2)", not_null=True,
    checks=("CHECK ((VALUE > (0)::numeric))",),
)  # fmt: skip
FEELING = TypeInfo(
    oid=16525, namespace="public", name="feeling", kind="c", category="C",
    attributes=(
        Attribute("m", 16512, -1, "mood[]"),
        Attribute("p", 16520, -1, "price"),
        Attribute("note", 1043, 24, "character varying(20)"),
    ),
)  # fmt: skip
HSTORE = TypeInfo(
    oid=16385, namespace="public", name="hstore", kind="b", category="U", extension="hstore"
)
TEXTR = TypeInfo(
    oid=16539, namespace="public", name="textr", kind="r", category="R", range_subtype=25,
    subtype_type="text", collation='pg_catalog."C"',
)  # fmt: skip
TEXTR_MULTI = TypeInfo(
    oid=16537, namespace="public", name="textr_multirange", kind="m", category="R",
    range_subtype=25, subtype_type="text", range_oid=16539,
)  # fmt: skip
TEXT = TypeInfo(oid=25, namespace="pg_catalog", name="text", kind="b", category="S")
CATALOG = {t.oid: t for t in (MOOD, MOOD_ARRAY, PRICE, FEELING, HSTORE, TEXTR, TEXTR_MULTI, TEXT)}


def test_custom_types_are_listed_transitively_dependencies_first() -> None:
    # Columns: feeling (composite of mood[] and price), mood[], hstore, text, a multirange.
    definitions = type_definitions([16525, 16512, 16385, 25, 16537], CATALOG)
    assert [d.name for d in definitions] == [
        "mood", "_mood", "price", "feeling", "hstore", "textr", "textr_multirange",
    ]  # fmt: skip


def test_built_in_and_unknown_types_are_not_listed() -> None:
    assert type_definitions([20, 25, 1007], CATALOG) == ()
    assert type_definitions([99999], {99999: None}) == ()
    assert type_definitions([99998], {}) == ()


def test_each_kind_is_described_with_its_own_fields() -> None:
    assert type_definition(MOOD) == TypeDefinition(
        16513, "public", "mood", "e", "E", labels=("sad", "ok", "happy")
    )
    assert type_definition(PRICE).base == TypeReference("numeric(7,2)", 1700, 458758)
    assert type_definition(PRICE).not_null
    assert type_definition(FEELING).attributes[0] == AttributeDefinition("m", "mood[]", 16512, -1)
    assert type_definition(TEXTR).subtype == TypeReference("text", 25, -1)
    assert type_definition(TEXTR).collation == 'pg_catalog."C"'
    assert type_definition(TEXTR_MULTI).range_oid == 16539
    assert type_definition(MOOD_ARRAY).element_oid == 16513


def _event(**overrides: Any) -> dict[str, Any]:
    shape = TableShape(
        schema="public",
        table="t",
        version=1,
        lsn=100,
        columns=(ColumnShape("id", "bigint", 20, -1, key=True, not_null=True),),
        key_columns=("id",),
        replica_identity="default",
        change={"added": [], "dropped": [], "renamed": [], "retyped": [], "key_changed": False},
        types=tuple(type_definitions([16525, 16537], CATALOG)),
    )
    event: dict[str, Any] = orjson.loads(
        encode_schema_event(shape, connector="c", database="db", tx=None, now_us=NOW_US)
    )
    event.update(overrides)
    return event


def test_the_event_format_is_the_documented_one() -> None:
    event = _event()
    assert event["columns"] == [
        {"name": "id", "type": "bigint", "type_oid": 20, "type_modifier": -1, "key": True,
         "not_null": True},
    ]  # fmt: skip
    by_name = {t["name"]: t for t in event["types"]}
    assert by_name["mood"] == {
        "oid": 16513, "schema": "public", "name": "mood", "kind": "e", "category": "E",
        "element_oid": 0, "extension": None, "labels": ["sad", "ok", "happy"],
    }  # fmt: skip
    assert by_name["_mood"] == {
        "oid": 16512, "schema": "public", "name": "_mood", "kind": "b", "category": "A",
        "element_oid": 16513, "extension": None, "delimiter": ",",
    }  # fmt: skip
    assert by_name["price"]["base"] == {
        "type": "numeric(7,2)", "type_oid": 1700, "type_modifier": 458758,
    }  # fmt: skip
    assert (by_name["price"]["not_null"], by_name["price"]["checks"]) == (
        True,
        ["CHECK ((VALUE > (0)::numeric))"],
    )
    assert by_name["feeling"]["attributes"][2] == {
        "name": "note", "type": "character varying(20)", "type_oid": 1043, "type_modifier": 24,
    }  # fmt: skip
    assert by_name["textr"] == {
        "oid": 16539, "schema": "public", "name": "textr", "kind": "r", "category": "R",
        "element_oid": 0, "extension": None, "subtype": {"type": "text", "type_oid": 25},
        "collation": 'pg_catalog."C"',
    }  # fmt: skip
    assert by_name["textr_multirange"]["range_oid"] == 16539
    assert "subtype_opclass" not in by_name["textr"]
    assert (event["source"]["lsn"], event["source"]["snapshot"]) == (100, "false")


def test_the_parsed_types_convert_values_as_the_catalog_s_do() -> None:
    shape = parse_schema_event(orjson.dumps(_event()))
    infos = type_infos(shape)
    assert infos == {oid: CATALOG[oid] for oid in infos}
    catalog = converter_for(16525, -1, ValueOptions(), types=CATALOG.get)
    replayed = converter_for(16525, -1, ValueOptions(), types=infos.get)
    assert catalog is not None
    assert replayed is not None
    text = '("{sad,happy}",12.50,hi)'
    assert replayed(text) == catalog(text) == {"m": ["sad", "happy"], "p": "12.50", "note": "hi"}


def test_an_event_written_before_types_existed_reads_with_none() -> None:
    event = _event()
    del event["types"]
    for column in event["columns"]:
        del column["not_null"]
    shape = parse_schema_event(orjson.dumps(event))
    assert shape.types == ()
    assert shape.columns[0].not_null is None


# --- parse(build(x)) == x ------------------------------------------------------------------

_names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)
_oids = st.integers(min_value=16384, max_value=2**32 - 1)
_mods = st.integers(min_value=-1, max_value=2**31 - 1)
_refs = st.builds(TypeReference, _names, st.integers(1, 2**32 - 1), _mods)


@st.composite
def _definitions(draw: st.DrawFn) -> TypeDefinition:
    kind = draw(st.sampled_from("bcdemr"))
    base = TypeDefinition(
        oid=draw(_oids),
        schema=draw(_names),
        name=draw(_names),
        kind=kind,  # type: ignore[arg-type]
        category=draw(st.sampled_from("AEUCNR")) if kind == "b" else "U",
        element_oid=draw(_oids) if kind == "b" else 0,
        extension=draw(st.none() | _names),
    )
    if base.category == "A":
        base = _with(base, delimiter=draw(st.sampled_from([",", ";"])))
    if kind == "e":
        return _with(base, labels=tuple(draw(st.lists(_names, max_size=4))))
    if kind == "c":
        attributes = st.builds(AttributeDefinition, _names, _names, _oids, _mods)
        return _with(base, attributes=tuple(draw(st.lists(attributes, max_size=3))))
    if kind == "d":
        return _with(
            base,
            base=draw(_refs),
            not_null=draw(st.booleans()),
            checks=tuple(draw(st.lists(_names, max_size=2))),
        )
    if kind in "rm":
        return _with(
            base,
            subtype=TypeReference(draw(_names), draw(_oids)),
            subtype_opclass=draw(st.none() | _names) if kind == "r" else None,
            collation=draw(st.none() | _names) if kind == "r" else None,
            range_oid=draw(_oids) if kind == "m" else 0,
        )
    return base


def _with(definition: TypeDefinition, **changes: Any) -> TypeDefinition:
    return replace(definition, **changes)


@st.composite
def _shapes(draw: st.DrawFn) -> TableShape:
    names = draw(st.lists(_names, min_size=0, max_size=5, unique=True))
    keys = [n for n in names if draw(st.booleans())]
    columns = tuple(
        ColumnShape(
            n, draw(_names), draw(_oids), draw(_mods), n in keys, draw(st.none() | st.booleans())
        )
        for n in names
    )
    return TableShape(
        schema=draw(_names),
        table=draw(_names),
        version=draw(st.integers(1, 10_000)),
        lsn=draw(st.integers(0, 2**64 - 1)),
        columns=columns,
        key_columns=tuple(draw(st.permutations(keys))),
        replica_identity=draw(st.sampled_from(["default", "nothing", "full", "index"])),
        change={"added": draw(st.lists(_names, max_size=2)), "key_changed": draw(st.booleans())},
        types=tuple(draw(st.lists(_definitions(), max_size=4))),
    )


@given(_shapes(), st.sampled_from(["false", "true", "incremental"]))
def test_parse_reads_back_what_encode_wrote(shape: TableShape, snapshot: str) -> None:
    tx = TxContext(xid=7, commit_lsn=shape.lsn, commit_ts_us=NOW_US, last_commit_lsn=None)
    value = encode_schema_event(
        shape, connector="c", database="db", tx=tx, now_us=NOW_US, snapshot=snapshot
    )
    assert parse_schema_event(value) == shape


@given(st.lists(_definitions(), max_size=4))
def test_type_infos_and_definitions_are_inverses(definitions: list[TypeDefinition]) -> None:
    shape = TableShape("s", "t", 1, 0, (), (), "default", {}, tuple(definitions))
    infos = type_infos(shape)
    assert {oid: type_definition(info) for oid, info in infos.items()} == {
        d.oid: d for d in definitions
    }


# --- malformed events ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"not json", "must be JSON"),
        (b"[]", "the event must be a JSON object"),
        (orjson.dumps(_event(op="c")), "op is 'c'"),
        (orjson.dumps(_event(source=None)), "source must be a JSON object"),
        (orjson.dumps(_event(columns={})), "columns must be a list"),
        (orjson.dumps(_event(columns=[{"name": "id"}])), r"columns\[0\]: type must be a string"),
        (orjson.dumps(_event(key_columns=["nope"])), "are not the columns marked key"),
        (
            orjson.dumps(_event(columns=[{**_event()["columns"][0], "not_null": 1}])),
            r"columns\[0\].not_null must be true or false",
        ),
        (orjson.dumps(_event(replica_identity="x")), "replica_identity 'x'"),
        (orjson.dumps(_event(schema_version=0)), "schema_version must be 1 or more"),
        (orjson.dumps(_event(schema_version=True)), "schema_version must be an integer"),
        (orjson.dumps(_event(types={})), "types must be a list"),
        (orjson.dumps(_event(types=[{"kind": "z"}])), r"types\[0\].kind 'z'"),
        (orjson.dumps(_event(change=[])), "change must be a JSON object"),
    ],
)
def test_a_malformed_event_is_a_schema_event_error_naming_the_field(
    value: bytes, message: str
) -> None:
    with pytest.raises(SchemaEventError, match=message):
        parse_schema_event(value)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a JSON document."""
    paths = []
    items = (
        obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    )
    for key, value in items:
        paths.append((*prefix, key))
        paths.extend(_paths(value, (*prefix, key)))
    return paths


_VALID = _event()
_PATHS = _paths(_VALID)


@given(
    st.sampled_from(_PATHS),
    st.one_of(
        st.none(),
        st.integers(-(2**63), 2**63 - 1),
        st.text(max_size=3),
        st.booleans(),
        st.just([]),
        st.just({}),
    ),
)
def test_any_field_replaced_gives_a_shape_or_a_schema_event_error(
    path: tuple[Any, ...], replacement: Any
) -> None:
    """Never a KeyError, TypeError or AttributeError from a corrupt event."""
    event = orjson.loads(orjson.dumps(_VALID))
    target = event
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = replacement
    with contextlib.suppress(SchemaEventError):
        parse_schema_event(orjson.dumps(event))


@given(st.binary(max_size=64))
def test_random_bytes_are_a_schema_event_error(value: bytes) -> None:
    with pytest.raises(SchemaEventError):
        parse_schema_event(value)


# --- the builder's records -----------------------------------------------------------------

ORDERS = Relation(
    None, 16400, "public", "orders", ReplicaIdentity.DEFAULT,
    (Column(1, "id", 20, -1), Column(0, "f", 16525, -1), Column(0, "h", 16385, -1)),
)  # fmt: skip


def _description(**overrides: Any) -> TableDescription:
    fields: dict[str, Any] = {
        "relation": ORDERS,
        "key_columns": ("id",),
        "type_names": ("bigint", "feeling", "hstore"),
        "not_null": (True, False, False),
        "types": CATALOG,
        "retention_topic": "c.public.orders",
        "partitions": 2,
    }
    fields.update(overrides)
    return TableDescription(**fields)


def test_a_snapshot_s_table_is_announced_once_with_its_rows_lsn() -> None:
    changes = SchemaChanges(connector="c", database="db", mode="topic", history=SchemaHistory())
    announced = changes.announce(
        _description(), at=Position(500, 0), tx=None, lsn=500, now_us=NOW_US, snapshot="true"
    )
    assert announced is not None
    records, change = announced
    assert change.version == 1
    assert [r.topic for r in records] == ["c.__schema"]
    shape = parse_schema_event(records[0].value or b"")
    assert (shape.version, shape.lsn, shape.key_columns) == (1, 500, ("id",))
    assert [c.not_null for c in shape.columns] == [True, False, False]
    assert [t.name for t in shape.types] == ["mood", "_mood", "price", "feeling", "hstore"]
    assert orjson.loads(records[0].value or b"")["source"]["snapshot"] == "true"
    again = changes.announce(
        _description(), at=Position(600, 0), tx=None, lsn=600, now_us=NOW_US, snapshot="true"
    )
    assert again is None


def test_in_band_snapshot_announcements_go_to_every_partition() -> None:
    changes = SchemaChanges(connector="c", database="db", mode="inband", history=SchemaHistory())
    announced = changes.announce(
        _description(), at=Position(500, 0), tx=None, lsn=500, now_us=NOW_US, snapshot="true"
    )
    assert announced is not None
    assert [(r.topic, r.key, r.partition) for r in announced[0]] == [
        ("c.public.orders", None, 0),
        ("c.public.orders", None, 1),
    ]


def test_unknown_not_null_is_left_out_of_the_columns() -> None:
    changes = SchemaChanges(connector="c", database="db", mode="topic", history=SchemaHistory())
    announced = changes.announce(
        _description(not_null=()), at=Position(1, 0), tx=None, lsn=1, now_us=NOW_US,
        snapshot="incremental",
    )  # fmt: skip
    assert announced is not None
    columns = orjson.loads(announced[0][0].value or b"")["columns"]
    assert all("not_null" not in c for c in columns)


def test_schema_changes_off_announce_no_snapshot_table() -> None:
    changes = SchemaChanges(connector="c", database="db", mode="off", history=SchemaHistory())
    announced = changes.announce(
        _description(), at=Position(1, 0), tx=None, lsn=1, now_us=NOW_US, snapshot="true"
    )
    assert announced is None
