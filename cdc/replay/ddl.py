"""The DDL a replay runs on its target: tables and types from the log's schema events. No I/O.

The one job: from a table shape announced in a schema-change event (column names, SQL
types, key, the definitions of custom types) build the statements that create it in an
empty database, and from two consecutive shapes the ``ALTER TABLE`` that turns one into
the other, in the same order as the legacy database did (add, drop, rename, retype, key).
A change that cannot be made safely (a column that vanished and another that appeared
without being recognisable as a rename: the values would be lost) is refused with the
statement a person could run instead.

It must not run anything (``cdc.postgres.target`` does) nor read Kafka.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cdc.errors import CdcError

__all__ = [
    "ColumnLike",
    "DdlError",
    "ShapeLike",
    "alter_table",
    "create_table",
    "create_types",
    "ident",
    "literal",
    "qualified",
]


class ColumnLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def type_oid(self) -> int: ...
    @property
    def type_modifier(self) -> int: ...


class ShapeLike(Protocol):
    @property
    def schema(self) -> str: ...
    @property
    def table(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def lsn(self) -> int: ...
    @property
    def columns(self) -> Sequence[ColumnLike]: ...
    @property
    def key_columns(self) -> Sequence[str]: ...
    @property
    def change(self) -> dict[str, Any]: ...
    @property
    def types(self) -> Sequence[Any]: ...


class DdlError(CdcError):
    """A schema change the replay cannot apply safely; says which and what to run."""

    def __init__(self, message: str, *, table: str, lsn: int, ddl: str | None = None) -> None:
        self.table, self.lsn, self.ddl = table, lsn, ddl
        super().__init__(message)


def ident(name: str) -> str:
    """A quoted SQL identifier (PostgreSQL's rules: double quotes, doubled inside)."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    return f"{ident(schema)}.{ident(table)}"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a legacy table lands in the target database."""

    schema: str
    table: str

    @property
    def sql(self) -> str:
        return qualified(self.schema, self.table)


def create_table(shape: ShapeLike, target: Target) -> list[str]:
    """``CREATE SCHEMA``/``CREATE TABLE`` for a shape (its key becomes the primary key)."""
    columns = [f"{ident(c.name)} {c.type}" for c in shape.columns]
    if shape.key_columns:
        columns.append(f"PRIMARY KEY ({', '.join(ident(k) for k in shape.key_columns)})")
    return [
        f"CREATE SCHEMA IF NOT EXISTS {ident(target.schema)}",
        f"CREATE TABLE IF NOT EXISTS {target.sql} ({', '.join(columns)})",
    ]


def create_types(definitions: Iterable[Any]) -> list[str]:
    """Statements that create the custom types a shape uses, dependencies first, each
    only when missing (``DO`` blocks: PostgreSQL has no ``CREATE TYPE IF NOT EXISTS``).

    A definition is a schema event's ``types`` entry (``kind``, ``schema``, ``name``,
    ``extension``, ``labels``, ``attributes``, ``base``, ``subtype``...), as an object
    with attributes or a mapping.
    """
    statements: list[str] = []
    extensions: set[str] = set()
    for definition in definitions:
        d = _mapping(definition)
        extension = d.get("extension")
        if extension:
            if extension not in extensions:
                extensions.add(extension)
                statements.append(f"CREATE EXTENSION IF NOT EXISTS {ident(extension)}")
            continue
        kind = d.get("kind")
        name = qualified(d["schema"], d["name"])
        body: str | None = None
        if kind == "e":
            labels = ", ".join(literal(label) for label in d.get("labels") or ())
            body = f"CREATE TYPE {name} AS ENUM ({labels})"
        elif kind == "c":
            attributes = ", ".join(
                f"{ident(_mapping(a)['name'])} {_mapping(a)['type']}"
                for a in d.get("attributes") or ()
            )
            body = f"CREATE TYPE {name} AS ({attributes})"
        elif kind == "d":
            base = _mapping(d["base"])
            body = f"CREATE DOMAIN {name} AS {base['type']}"
            if d.get("not_null"):
                body += " NOT NULL"
            for check in d.get("checks") or ():
                body += f" {check}"
        elif kind == "r":
            subtype = _mapping(d["subtype"])
            body = f"CREATE TYPE {name} AS RANGE (subtype = {subtype['type']})"
        if body is None:
            continue  # arrays and multiranges come with their element or range type
        statements.append(f"CREATE SCHEMA IF NOT EXISTS {ident(d['schema'])}")
        statements.append(
            f"DO $cdc$ BEGIN IF to_regtype({literal(name)}) IS NULL THEN {body}; END IF; END $cdc$"
        )
        if kind == "e":
            # Labels added since (ALTER TYPE ... ADD VALUE in the legacy database) land at
            # the end: only the sort order of a label added BEFORE another can differ.
            statements.extend(
                f"ALTER TYPE {name} ADD VALUE IF NOT EXISTS {literal(label)}"
                for label in d.get("labels") or ()
            )
    return statements


def alter_table(previous: ShapeLike, shape: ShapeLike, target: Target) -> list[str]:
    """The statements that turn the target table from ``previous`` into ``shape``.

    Raises:
        DdlError: a column disappeared and the event does not say where it went (a rename
            cannot be told from a drop plus an add), or ``previous`` is not the version just
            before ``shape`` and columns differ by name.
    """
    table = f"{shape.schema}.{shape.table}"
    old = {c.name: c for c in previous.columns}
    new = {c.name: c for c in shape.columns}
    consecutive = shape.version == previous.version + 1
    renamed: list[tuple[str, str]] = []
    if consecutive:
        renamed.extend((p["from"], p["to"]) for p in shape.change.get("renamed") or ())
    statements: list[str] = []
    renamed_from = {a for a, _ in renamed}
    renamed_to = {b for _, b in renamed}
    for a, b in renamed:
        if a not in old or b not in new:
            raise DdlError(
                f"table {table}: schema version {shape.version} renames {a!r} to {b!r}, "
                f"but the target's version {previous.version} has no column {a!r}",
                table=table,
                lsn=shape.lsn,
            )
        statements.append(f"ALTER TABLE {target.sql} RENAME COLUMN {ident(a)} TO {ident(b)}")
    dropped = [n for n in old if n not in new and n not in renamed_from]
    added = [n for n in new if n not in old and n not in renamed_to]
    if not consecutive and dropped and added:
        ddl = "; ".join(
            [f"ALTER TABLE {target.sql} RENAME COLUMN {ident(d)} TO <new name>" for d in dropped]
        )
        raise DdlError(
            f"table {table}: the target is at schema version {previous.version} and the next "
            f"event has version {shape.version}; columns {', '.join(dropped)} vanished and "
            f"{', '.join(added)} appeared, which may be renames. Rename by hand ({ddl}) and "
            "rerun, or replay into an empty database",
            table=table,
            lsn=shape.lsn,
            ddl=ddl,
        )
    statements.extend(f"ALTER TABLE {target.sql} DROP COLUMN {ident(n)}" for n in dropped)
    statements.extend(
        f"ALTER TABLE {target.sql} ADD COLUMN {ident(n)} {new[n].type}" for n in added
    )
    for name, column in new.items():
        before_name = next((a for a, b in renamed if b == name), name)
        was = old.get(before_name)
        if was is None:
            continue
        if (was.type_oid, was.type_modifier, was.type) != (
            column.type_oid,
            column.type_modifier,
            column.type,
        ):
            statements.append(
                f"ALTER TABLE {target.sql} ALTER COLUMN {ident(name)} TYPE {column.type}"
                f" USING {ident(name)}::{column.type}"
            )
    if tuple(previous.key_columns) != tuple(shape.key_columns):
        constraint = ident(f"{target.table}_pkey")
        if previous.key_columns:
            statements.append(f"ALTER TABLE {target.sql} DROP CONSTRAINT IF EXISTS {constraint}")
        if shape.key_columns:
            keys = ", ".join(ident(k) for k in shape.key_columns)
            statements.append(
                f"ALTER TABLE {target.sql} ADD CONSTRAINT {constraint} PRIMARY KEY ({keys})"
            )
    return statements


def literal(text: str) -> str:
    """A quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _mapping(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    slots = getattr(type(value), "__slots__", None)
    if slots:
        return {name: getattr(value, name) for name in slots}
    return dict(vars(value))
