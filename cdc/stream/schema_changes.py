"""Schema-change events: their one format, built and read here. No I/O.

Building: for each new table shape (a Relation message whose shape differs from the
table's last known one, or a table a snapshot reads before the history knows its
shape), the op ``s`` event (column names, SQL types, key, what changed, the definitions
of the custom types the columns use) and the records that carry it: to the connector's
schema topic, or in band into every partition of the table's retention topic. The known
shapes are kept in the state topic (stored with the event that announces them), so
versions continue across restarts. What needs the catalog (SQL type names, NOT NULL, the
``TypeInfo`` of each custom type, the partition count) comes from the edge with the
Relation, or with the snapshot's table (``TableDescription``). No per-event work.

Reading: ``parse_schema_event`` turns an event back into a ``TableShape`` (what a replay
needs to create or alter the table and its types) and ``type_infos`` gives the
``TypeInfo`` mapping the value converters take. ``encode_schema_event`` and
``parse_schema_event`` are inverses; the format is documented in docs/events.md
("Schema changes").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, cast

import orjson

from cdc import __version__
from cdc.envelope import CONNECTOR_TYPE, Record, TxContext
from cdc.errors import CdcError
from cdc.positions import Position
from cdc.protocol.messages import Relation
from cdc.protocol.typeinfo import Attribute, TypeInfo, TypeKind
from cdc.stream.schema_history import SchemaChange, SchemaHistory, schema_of

__all__ = [
    "FIRST_NORMAL_OBJECT_ID",
    "SCHEMA_STATE_KEY",
    "AttributeDefinition",
    "ColumnShape",
    "PendingSchemaEvent",
    "SchemaChanges",
    "SchemaEventError",
    "TableDescription",
    "TableShape",
    "TypeDefinition",
    "TypeReference",
    "encode_schema_event",
    "parse_schema_event",
    "schema_topic_name",
    "type_definition",
    "type_definitions",
    "type_infos",
]

# The state topic's key for the known table shapes.
SCHEMA_STATE_KEY = b"schemas"

# OIDs below this are assigned by initdb (pg_catalog, information_schema): those types
# exist in every database, so events do not define them (PostgreSQL's
# FirstNormalObjectId, src/include/access/transam.h).
FIRST_NORMAL_OBJECT_ID: Final = 16384

_KINDS: Final = frozenset({"b", "c", "d", "e", "m", "p", "r"})
_RANGES: Final = ("r", "m")
_IDENTITIES: Final = frozenset({"default", "nothing", "full", "index"})


def schema_topic_name(connector: str) -> str:
    return f"{connector}.__schema"


class SchemaEventError(CdcError):
    """A schema-change event that is not one this version of ``cdc`` writes (a replay
    cannot know the table's shape from it); the message says which field is wrong."""


# --- the format ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TypeReference:
    """A type named by a definition: a domain's base, a range's subtype."""

    type: str  # format_type(type_oid, type_modifier)
    type_oid: int
    type_modifier: int = -1  # always -1 for a range subtype


@dataclass(frozen=True, slots=True)
class AttributeDefinition:
    """One attribute of a composite type, in order."""

    name: str
    type: str
    type_oid: int
    type_modifier: int


@dataclass(frozen=True, slots=True)
class TypeDefinition:
    """One non-built-in type a table uses: enough for a replay to create it.

    ``kind`` is ``pg_type.typtype`` (``e`` enum, ``c`` composite, ``d`` domain, ``r``
    range, ``m`` multirange, ``b`` base: an array when ``category`` is ``A``, else an
    extension's or a C type). The fields after ``delimiter`` are set only for their kind;
    the others keep their defaults. An extension's types are created by
    ``CREATE EXTENSION``; an array type comes with its element type, a multirange with its
    range.
    """

    oid: int
    schema: str
    name: str
    kind: TypeKind
    category: str
    element_oid: int = 0  # arrays: the element type
    extension: str | None = None
    delimiter: str = ","  # arrays: the element's typdelim (';' for box)
    labels: tuple[str, ...] = ()  # e, in enumsortorder
    attributes: tuple[AttributeDefinition, ...] = ()  # c
    base: TypeReference | None = None  # d
    not_null: bool = False  # d
    checks: tuple[str, ...] = ()  # d: pg_get_constraintdef, "CHECK (...)"
    subtype: TypeReference | None = None  # r, m
    subtype_opclass: str | None = None  # r: only when not the subtype's default
    collation: str | None = None  # r: only when not the subtype's collation
    range_oid: int = 0  # m: its range type


@dataclass(frozen=True, slots=True)
class ColumnShape:
    """One column of a table shape, in attnum order."""

    name: str
    type: str  # format_type(type_oid, type_modifier): numeric(12,2), mood[]
    type_oid: int
    type_modifier: int
    key: bool
    not_null: bool | None = None  # None: the event does not say


@dataclass(frozen=True, slots=True)
class TableShape:
    """What one schema-change event says: the table's shape from ``lsn`` on."""

    schema: str
    table: str
    version: int
    lsn: int
    columns: tuple[ColumnShape, ...]
    key_columns: tuple[str, ...]
    replica_identity: str  # default, nothing, full, index
    change: dict[str, Any]
    types: tuple[TypeDefinition, ...] = ()


def type_definition(info: TypeInfo) -> TypeDefinition:
    """The event's description of one type, from what the catalog said of it."""
    kind = info.kind
    return TypeDefinition(
        oid=info.oid,
        schema=info.namespace,
        name=info.name,
        kind=kind,
        category=info.category,
        element_oid=info.element_oid,
        extension=info.extension,
        delimiter=info.delimiter if info.category == "A" else ",",
        labels=info.labels if kind == "e" else (),
        attributes=tuple(
            AttributeDefinition(a.name, a.type_name, a.type_oid, a.type_modifier)
            for a in info.attributes
        )
        if kind == "c"
        else (),
        base=TypeReference(info.base_type, info.base_oid, info.base_modifier)
        if kind == "d"
        else None,
        not_null=info.not_null if kind == "d" else False,
        checks=info.checks if kind == "d" else (),
        subtype=TypeReference(info.subtype_type, info.range_subtype) if kind in _RANGES else None,
        subtype_opclass=info.subtype_opclass if kind == "r" else None,
        collation=info.collation if kind == "r" else None,
        range_oid=info.range_oid if kind == "m" else 0,
    )


def _dependencies(info: TypeInfo) -> list[int]:
    return [
        info.element_oid,
        info.base_oid,
        *(a.type_oid for a in info.attributes),
        info.range_subtype,
        info.range_oid,
    ]


def type_definitions(
    type_oids: Iterable[int], types: Mapping[int, TypeInfo | None]
) -> tuple[TypeDefinition, ...]:
    """The non-built-in types these column types use, transitively (array elements,
    domain bases, composite attributes, range subtypes, a multirange's range), each
    after the types it is made of, in the order the columns first need them.

    ``types`` is what ``TypeCatalog.resolve`` returned for them; a type it does not hold
    (or holds as None: dropped since) is left out.
    """
    ordered: list[TypeDefinition] = []
    seen: set[int] = set()

    def visit(oid: int) -> None:
        if oid < FIRST_NORMAL_OBJECT_ID or oid in seen:
            return
        seen.add(oid)
        info = types.get(oid)
        if info is None:
            return
        for dependency in _dependencies(info):
            visit(dependency)
        ordered.append(type_definition(info))

    for oid in type_oids:
        visit(oid)
    return tuple(ordered)


def type_infos(shape: TableShape) -> dict[int, TypeInfo]:
    """The ``TypeInfo`` of each type the event defines, by OID: what
    ``cdc.protocol.values.converter_for(..., types=infos.get)`` takes to convert the
    values of the events this shape describes (OIDs are the legacy database's)."""
    infos: dict[int, TypeInfo] = {}
    for d in shape.types:
        base, subtype = d.base, d.subtype
        infos[d.oid] = TypeInfo(
            oid=d.oid,
            namespace=d.schema,
            name=d.name,
            kind=d.kind,
            category=d.category,
            element_oid=d.element_oid,
            delimiter=d.delimiter,
            base_oid=base.type_oid if base is not None else 0,
            base_modifier=base.type_modifier if base is not None else -1,
            attributes=tuple(
                Attribute(a.name, a.type_oid, a.type_modifier, a.type) for a in d.attributes
            ),
            range_subtype=subtype.type_oid if subtype is not None else 0,
            extension=d.extension,
            labels=d.labels,
            base_type=base.type if base is not None else "",
            not_null=d.not_null,
            checks=d.checks,
            subtype_type=subtype.type if subtype is not None else "",
            subtype_opclass=d.subtype_opclass,
            collation=d.collation,
            range_oid=d.range_oid,
        )
    return infos


# --- building --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableDescription:
    """A table read by a snapshot, described for its schema-change event at the edge
    (the stream's Relation messages come with a ``RelationInfo`` instead)."""

    relation: Relation
    key_columns: tuple[str, ...]
    type_names: tuple[str, ...]  # format_type() per column
    not_null: tuple[bool | None, ...] = ()  # per column; () when unknown
    types: Mapping[int, TypeInfo | None] = field(default_factory=dict)
    retention_topic: str = ""
    partitions: int = 1


@dataclass(frozen=True, slots=True)
class PendingSchemaEvent:
    """A new shape seen in a Relation message, waiting for the table's next change."""

    relation: Relation
    key_columns: tuple[str, ...]
    change: SchemaChange
    type_names: list[str]
    retention_topic: str
    partitions: int
    types: tuple[TypeDefinition, ...] = ()
    not_null: tuple[bool | None, ...] = ()


class SchemaChanges:
    """Turns new table shapes into records; remembers the shapes it has published."""

    def __init__(self, *, connector: str, database: str, mode: str, history: SchemaHistory) -> None:
        self._connector = connector
        self._database = database
        self._mode = mode
        self.history = history

    def observe(
        self,
        relation: Relation,
        key_columns: tuple[str, ...],
        *,
        type_names: list[str],
        retention_topic: str,
        partitions: int,
        at: Position,
        types: Mapping[int, TypeInfo | None] | None = None,
        not_null: Sequence[bool | None] = (),
    ) -> PendingSchemaEvent | None:
        """A Relation message: the change it makes, to publish before the table's next
        data event (whose LSN the event carries; pgoutput gives Relation messages none).

        Args:
            type_names: the SQL name of each column's type (``numeric(12,2)``).
            retention_topic: the table's retention topic (in band events go there).
            partitions: how many partitions it has (in band: one event per partition).
            at: the identity of the data event the shape is seen at (a shape seen before
                the table's latest announcement is a replayed older one, not a change).
            types: the custom types of the columns, transitively (``TypeCatalog.resolve``).
            not_null: per column, whether it is NOT NULL (None: unknown); () unknown.
        """
        if self._mode == "off":
            return None
        change = self.history.observe(schema_of(relation, key_columns), at)
        if change is None:
            return None
        definitions = type_definitions((c.type_oid for c in relation.columns), types or {})
        return PendingSchemaEvent(
            relation,
            key_columns,
            change,
            type_names,
            retention_topic,
            partitions,
            definitions,
            tuple(not_null),
        )

    def announce(
        self,
        table: TableDescription,
        *,
        at: Position,
        tx: TxContext | None,
        lsn: int,
        now_us: int,
        snapshot: str,
    ) -> tuple[list[Record], SchemaChange] | None:
        """A table a snapshot is about to publish rows of: the records announcing its
        shape (before the rows, carrying their ``lsn``) if the history does not know it,
        and the change; None when it does.

        Args:
            at: the stream position the rows are published at (the history's order).
            snapshot: ``source.snapshot`` of the event: ``"true"`` (initial snapshot) or
                ``"incremental"``.
        """
        pending = self.observe(
            table.relation,
            table.key_columns,
            type_names=list(table.type_names),
            retention_topic=table.retention_topic,
            partitions=table.partitions,
            at=at,
            types=table.types,
            not_null=table.not_null,
        )
        if pending is None:
            return None
        return self.records(pending, tx, lsn, now_us, snapshot=snapshot), pending.change

    def records(
        self,
        pending: PendingSchemaEvent,
        tx: TxContext | None,
        lsn: int,
        now_us: int,
        *,
        snapshot: str = "false",
    ) -> list[Record]:
        """Records announcing the new shape (in band: one per partition, explicitly)."""
        relation, key_columns, change = pending.relation, pending.key_columns, pending.change
        not_null = pending.not_null or (None,) * len(relation.columns)
        shape = TableShape(
            schema=relation.namespace,
            table=relation.name,
            version=change.version,
            lsn=lsn,
            columns=tuple(
                ColumnShape(
                    c.name, type_name, c.type_oid, c.type_modifier, c.name in key_columns, nn
                )
                for c, type_name, nn in zip(
                    relation.columns, pending.type_names, not_null, strict=True
                )
            ),
            key_columns=key_columns,
            replica_identity=relation.replica_identity.name.lower(),
            change=change.describe(),
            types=pending.types,
        )
        value = encode_schema_event(
            shape,
            connector=self._connector,
            database=self._database,
            tx=tx,
            now_us=now_us,
            snapshot=snapshot,
        )
        if self._mode == "inband":
            topic = pending.retention_topic
            return [Record(topic, None, value, partition=p) for p in range(pending.partitions)]
        key = orjson.dumps({"schema": relation.namespace, "table": relation.name})
        return [Record(schema_topic_name(self._connector), key, value)]


def _column_json(c: ColumnShape) -> dict[str, Any]:
    column: dict[str, Any] = {
        "name": c.name,
        "type": c.type,
        "type_oid": c.type_oid,
        "type_modifier": c.type_modifier,
        "key": c.key,
    }
    if c.not_null is not None:
        column["not_null"] = c.not_null
    return column


def _type_json(d: TypeDefinition) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "oid": d.oid,
        "schema": d.schema,
        "name": d.name,
        "kind": d.kind,
        "category": d.category,
        "element_oid": d.element_oid,
        "extension": d.extension,
    }
    if d.category == "A":
        entry["delimiter"] = d.delimiter
    if d.kind == "e":
        entry["labels"] = list(d.labels)
    elif d.kind == "c":
        entry["attributes"] = [
            {
                "name": a.name,
                "type": a.type,
                "type_oid": a.type_oid,
                "type_modifier": a.type_modifier,
            }
            for a in d.attributes
        ]
    elif d.kind == "d" and d.base is not None:
        entry["base"] = {
            "type": d.base.type,
            "type_oid": d.base.type_oid,
            "type_modifier": d.base.type_modifier,
        }
        entry["not_null"] = d.not_null
        entry["checks"] = list(d.checks)
    elif d.kind in _RANGES and d.subtype is not None:
        entry["subtype"] = {"type": d.subtype.type, "type_oid": d.subtype.type_oid}
        if d.kind == "m":
            entry["range_oid"] = d.range_oid
        else:
            if d.subtype_opclass is not None:
                entry["subtype_opclass"] = d.subtype_opclass
            if d.collation is not None:
                entry["collation"] = d.collation
    return entry


def encode_schema_event(
    shape: TableShape,
    *,
    connector: str,
    database: str,
    tx: TxContext | None,
    now_us: int,
    snapshot: str = "false",
) -> bytes:
    """A schema-change event: op ``s``, the table's shape and what changed.

    Shaped like the data envelope (``op``, ``source``, ``ts_ms``) so one consumer loop can
    dispatch on ``op``; ``before``/``after`` are absent because no row changed.
    ``source.lsn`` is ``shape.lsn``: the first data event of this shape has it.
    """
    ts_us = tx.commit_ts_us if tx is not None else now_us
    return orjson.dumps(
        {
            "op": "s",
            "schema_version": shape.version,
            "columns": [_column_json(c) for c in shape.columns],
            "key_columns": list(shape.key_columns),
            "replica_identity": shape.replica_identity,
            "change": shape.change,
            "types": [_type_json(d) for d in shape.types],
            "source": {
                "version": __version__,
                "connector": CONNECTOR_TYPE,
                "name": connector,
                "ts_ms": ts_us // 1000,
                "snapshot": snapshot,
                "db": database,
                "schema": shape.schema,
                "table": shape.table,
                "txId": tx.xid if tx is not None else None,
                "lsn": shape.lsn,
            },
            "ts_ms": now_us // 1000,
            "ts_us": now_us,
        }
    )


# --- reading ---------------------------------------------------------------------------


def parse_schema_event(value: bytes) -> TableShape:
    """The table shape a schema-change event (op ``s``) announces.

    Events written before the ``types`` field existed read with ``types=()``, columns
    without ``not_null`` with ``None``.

    Raises:
        SchemaEventError: not JSON, not op ``s``, or a field missing or of the wrong type
            (the message names it).
    """
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise SchemaEventError(f"a schema-change event must be JSON: {exc}") from exc
    event = _object(event, "the event")
    if event.get("op") != "s":
        raise SchemaEventError(f"not a schema-change event: op is {event.get('op')!r}, not 's'")
    source = _object(event.get("source"), "source")
    columns = tuple(
        _column(_object(c, f"columns[{i}]"), f"columns[{i}]")
        for i, c in enumerate(_list(event, "columns", "the event"))
    )
    key_columns = tuple(
        _string(k, f"key_columns[{i}]")
        for i, k in enumerate(_list(event, "key_columns", "the event"))
    )
    if {c.name for c in columns if c.key} != set(key_columns):
        raise SchemaEventError(
            f"key_columns {list(key_columns)} are not the columns marked key:"
            f" {[c.name for c in columns if c.key]}"
        )
    identity = _field_string(event, "replica_identity", "the event")
    if identity not in _IDENTITIES:
        raise SchemaEventError(f"replica_identity {identity!r} is not one of {sorted(_IDENTITIES)}")
    version = _field_int(event, "schema_version", "the event")
    if version < 1:
        raise SchemaEventError(f"schema_version must be 1 or more, not {version}")
    raw_types = event.get("types", [])
    if not isinstance(raw_types, list):
        raise SchemaEventError(f"types must be a list, not {type(raw_types).__name__}")
    return TableShape(
        schema=_field_string(source, "schema", "source"),
        table=_field_string(source, "table", "source"),
        version=version,
        lsn=_field_int(source, "lsn", "source"),
        columns=columns,
        key_columns=key_columns,
        replica_identity=identity,
        change=_object(event.get("change"), "change"),
        types=tuple(
            _type(_object(t, f"types[{i}]"), f"types[{i}]") for i, t in enumerate(raw_types)
        ),
    )


def _column(obj: dict[str, Any], where: str) -> ColumnShape:
    not_null = obj.get("not_null")
    if not_null is not None and not isinstance(not_null, bool):
        raise SchemaEventError(f"{where}.not_null must be true or false")
    return ColumnShape(
        name=_field_string(obj, "name", where),
        type=_field_string(obj, "type", where),
        type_oid=_field_int(obj, "type_oid", where),
        type_modifier=_field_int(obj, "type_modifier", where),
        key=_field_bool(obj, "key", where),
        not_null=not_null,
    )


def _reference(obj: dict[str, Any], where: str, *, modifier: bool) -> TypeReference:
    return TypeReference(
        type=_field_string(obj, "type", where),
        type_oid=_field_int(obj, "type_oid", where),
        type_modifier=_field_int(obj, "type_modifier", where) if modifier else -1,
    )


def _type(obj: dict[str, Any], where: str) -> TypeDefinition:
    kind = _field_string(obj, "kind", where)
    if kind not in _KINDS:
        raise SchemaEventError(f"{where}.kind {kind!r} is not a pg_type.typtype letter")
    extension = obj.get("extension")
    if extension is not None and not isinstance(extension, str):
        raise SchemaEventError(f"{where}.extension must be a string or null")
    category = _field_string(obj, "category", where)
    definition = TypeDefinition(
        oid=_field_int(obj, "oid", where),
        schema=_field_string(obj, "schema", where),
        name=_field_string(obj, "name", where),
        kind=cast(TypeKind, kind),
        category=category,
        element_oid=_field_int(obj, "element_oid", where),
        extension=extension,
        delimiter=_field_string(obj, "delimiter", where) if category == "A" else ",",
    )
    if kind == "e":
        labels = _list(obj, "labels", where)
        return replace(
            definition,
            labels=tuple(_string(v, f"{where}.labels[{i}]") for i, v in enumerate(labels)),
        )
    if kind == "c":
        attributes = []
        for i, raw in enumerate(_list(obj, "attributes", where)):
            a = _object(raw, f"{where}.attributes[{i}]")
            at = f"{where}.attributes[{i}]"
            attributes.append(
                AttributeDefinition(
                    _field_string(a, "name", at),
                    _field_string(a, "type", at),
                    _field_int(a, "type_oid", at),
                    _field_int(a, "type_modifier", at),
                )
            )
        return replace(definition, attributes=tuple(attributes))
    if kind == "d":
        checks = _list(obj, "checks", where)
        return replace(
            definition,
            base=_reference(
                _object(obj.get("base"), f"{where}.base"), f"{where}.base", modifier=True
            ),
            not_null=_field_bool(obj, "not_null", where),
            checks=tuple(_string(v, f"{where}.checks[{i}]") for i, v in enumerate(checks)),
        )
    if kind in _RANGES:
        range_ = kind == "r"
        subtype = _reference(
            _object(obj.get("subtype"), f"{where}.subtype"), f"{where}.subtype", modifier=False
        )
        return replace(
            definition,
            subtype=subtype,
            subtype_opclass=_optional_string(obj, "subtype_opclass", where) if range_ else None,
            collation=_optional_string(obj, "collation", where) if range_ else None,
            range_oid=0 if range_ else _field_int(obj, "range_oid", where),
        )
    return definition


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SchemaEventError(f"{where} must be a JSON object, not {_json_kind(value)}")
    return value


def _list(obj: dict[str, Any], name: str, where: str) -> list[Any]:
    value = obj.get(name)
    if not isinstance(value, list):
        raise SchemaEventError(f"{where}: {name} must be a list, not {_json_kind(value)}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SchemaEventError(f"{where} must be a string, not {_json_kind(value)}")
    return value


def _field_string(obj: dict[str, Any], name: str, where: str) -> str:
    return _string(obj.get(name), f"{where}: {name}")


def _optional_string(obj: dict[str, Any], name: str, where: str) -> str | None:
    value = obj.get(name)
    return None if value is None else _string(value, f"{where}: {name}")


def _field_int(obj: dict[str, Any], name: str, where: str) -> int:
    value = obj.get(name)
    # bool is an int subclass; true/false here is a corrupt event, not 1/0.
    if not isinstance(value, int) or isinstance(value, bool):
        raise SchemaEventError(f"{where}: {name} must be an integer, not {_json_kind(value)}")
    return value


def _field_bool(obj: dict[str, Any], name: str, where: str) -> bool:
    value = obj.get(name)
    if not isinstance(value, bool):
        raise SchemaEventError(f"{where}: {name} must be true or false, not {_json_kind(value)}")
    return value


def _json_kind(value: Any) -> str:
    if value is None:
        return "missing or null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), repr(value)
    )
