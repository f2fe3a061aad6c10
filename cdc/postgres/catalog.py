"""Edge: describe PostgreSQL types by OID from the catalog, for the value converters.

The one job: answer "what is type OID n?" (``pg_type``, ``pg_attribute``, ``pg_range``,
extension membership in ``pg_depend``; for schema-change events also ``pg_enum`` labels,
domain constraints and ``format_type`` names) as a frozen ``TypeInfo`` that the pure
converter builder (``cdc.protocol.values.converter_for(..., types=catalog.lookup)``) and
the schema-change events consume, and cache the answers; and the SQL type names and NOT
NULL of a Relation message's columns. pgoutput names a non-built-in type in a Type
message before the Relation that uses it; the caller drops the cached entry then
(``invalidate``), since ``ALTER TYPE`` may have changed it.

It must not: convert values, log, or hold a transaction open (the connection should be
in autocommit; each lookup is one or two short statements).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import psycopg

from cdc.postgres.errors import source_error
from cdc.protocol.messages import Relation
from cdc.protocol.typeinfo import Attribute, TypeInfo, TypeKind
from cdc.protocol.values import is_builtin

__all__ = ["TypeCatalog"]

_TYPE_QUERY: Final = """
SELECT n.nspname::text, t.typname::text, t.typtype::text, t.typcategory::text,
       t.typelem::int8, coalesce(e.typdelim::text, ','), t.typbasetype::int8, t.typtypmod,
       t.typrelid::int8, coalesce(r.rngsubtype, mr.rngsubtype, 0)::int8,
       (SELECT x.extname::text
          FROM pg_depend d JOIN pg_extension x ON x.oid = d.refobjid
         WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid
           AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
         LIMIT 1),
       -- What a schema-change event needs to recreate the type (TypeInfo's last fields).
       CASE WHEN t.typtype = 'e' THEN ARRAY(
         SELECT l.enumlabel::text FROM pg_enum l WHERE l.enumtypid = t.oid
          ORDER BY l.enumsortorder) END,
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END,
       t.typnotnull,
       CASE WHEN t.typtype = 'd' THEN ARRAY(
         SELECT pg_get_constraintdef(k.oid) FROM pg_constraint k
          WHERE k.contypid = t.oid AND k.contype = 'c' ORDER BY k.conname) END,
       format_type(coalesce(r.rngsubtype, mr.rngsubtype), NULL),
       (SELECT quote_ident(cn.nspname) || '.' || quote_ident(c.opcname)
          FROM pg_opclass c JOIN pg_namespace cn ON cn.oid = c.opcnamespace
         WHERE c.oid = r.rngsubopc AND NOT c.opcdefault),
       (SELECT quote_ident(cn.nspname) || '.' || quote_ident(c.collname)
          FROM pg_collation c JOIN pg_namespace cn ON cn.oid = c.collnamespace
         WHERE c.oid = r.rngcollation
           AND c.oid <> (SELECT s.typcollation FROM pg_type s WHERE s.oid = r.rngsubtype)),
       coalesce(mr.rngtypid, 0)::int8
FROM pg_type t
JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_type e ON e.oid = t.typelem
LEFT JOIN pg_range r ON r.rngtypid = t.oid
LEFT JOIN pg_range mr ON {multirange}
WHERE t.oid = %s
"""

_ATTRIBUTES_QUERY: Final = """
SELECT a.attname::text, a.atttypid::int8, a.atttypmod, format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

# The SQL name of each column type of a Relation message, and NOT NULL where the
# table's current column still has that name and type (a later ALTER TABLE may have
# changed it since the WAL was written: then it is unknown, NULL). One statement per
# Relation message, as the type names alone took.
_COLUMNS_QUERY: Final = """
SELECT format_type(c.oid, c.mod),
       (SELECT a.attnotnull FROM pg_attribute a
         WHERE a.attrelid = %s AND a.attname = c.name AND a.atttypid = c.oid
           AND a.atttypmod = c.mod AND a.attnum > 0 AND NOT a.attisdropped)
FROM unnest(%s::text[], %s::oid[], %s::int[]) WITH ORDINALITY AS c(name, oid, mod, ord)
ORDER BY c.ord
"""

_PG14: Final = 140000  # multirange types (pg_range.rngmultitypid) appeared in PostgreSQL 14


class TypeCatalog:
    """Cached ``TypeInfo`` by OID, read over one ordinary connection.

    Not thread-safe: one catalog per connector (its converters are built on one thread).
    """

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._cache: dict[int, TypeInfo | None] = {}
        multirange = "mr.rngmultitypid = t.oid" if conn.info.server_version >= _PG14 else "false"
        self._type_query = _TYPE_QUERY.format(multirange=multirange)

    def lookup(self, oid: int) -> TypeInfo | None:
        """The type with this OID, or ``None`` when it does not exist; cached.

        Raises:
            SourceError: the catalog query failed.
        """
        try:
            return self._cache[oid]
        except KeyError:
            pass
        info = self._read(oid)
        self._cache[oid] = info
        return info

    def resolve(self, oids: Iterable[int]) -> dict[int, TypeInfo | None]:
        """Every non-built-in type among ``oids`` and the types they are made of (array
        elements, domain bases, composite attributes, range subtypes, a multirange's
        range), so the value converters of a relation are built from a plain mapping,
        without I/O, and its schema-change event can describe each of them.

        Raises:
            SourceError: the catalog query failed.
        """
        resolved: dict[int, TypeInfo | None] = {}
        todo = [oid for oid in oids if not is_builtin(oid)]
        while todo:
            oid = todo.pop()
            if oid in resolved:
                continue
            info = resolved[oid] = self.lookup(oid)
            if info is None:
                continue
            parts = [info.element_oid, info.base_oid, info.range_subtype]
            parts.extend(a.type_oid for a in info.attributes)
            parts.append(info.range_oid)
            todo.extend(p for p in parts if p and not is_builtin(p) and p not in resolved)
        return resolved

    def invalidate(self, oid: int | None = None) -> None:
        """Forget one type (a Type message for it arrived), or every type (``None``)."""
        if oid is None:
            self._cache.clear()
        else:
            self._cache.pop(oid, None)

    def _read(self, oid: int) -> TypeInfo | None:
        try:
            row = self._conn.execute(self._type_query, (oid,)).fetchone()
            if row is None:
                return None
            (namespace, name, kind, category, element, delimiter, base, base_mod, relid,
             subtype, extension, labels, base_type, not_null, checks, subtype_type, opclass,
             collation, range_oid) = row  # fmt: skip
            attributes: tuple[Attribute, ...] = ()
            if kind == "c" and relid:
                attributes = tuple(
                    Attribute(a_name, a_type, a_mod, a_type_name)
                    for a_name, a_type, a_mod, a_type_name in self._conn.execute(
                        _ATTRIBUTES_QUERY, (relid,)
                    ).fetchall()
                )
        except psycopg.Error as exc:
            raise source_error(f"reading type oid {oid} from pg_type", exc) from exc
        type_kind: TypeKind = kind
        return TypeInfo(
            oid=oid,
            namespace=namespace,
            name=name,
            kind=type_kind,
            category=category,
            element_oid=element if category == "A" else 0,
            delimiter=delimiter,
            base_oid=base,
            base_modifier=base_mod,
            attributes=attributes,
            range_subtype=subtype,
            extension=extension,
            labels=tuple(labels or ()),
            base_type=base_type or "",
            not_null=bool(not_null),
            checks=tuple(checks or ()),
            subtype_type=subtype_type or "",
            subtype_opclass=opclass,
            collation=collation,
            range_oid=range_oid,
        )

    def columns(self, relation: Relation) -> tuple[tuple[str, ...], tuple[bool | None, ...]]:
        """The SQL type name (``numeric(12,2)``) of each column of a Relation message,
        and whether it is NOT NULL (None: unknown, the column changed since), in one
        statement: for its schema-change event. Not cached (Relation messages are rare).

        Raises:
            SourceError: the catalog query failed.
        """
        columns = relation.columns
        if not columns:
            return (), ()
        try:
            rows = self._conn.execute(
                _COLUMNS_QUERY,
                (
                    relation.oid,
                    [c.name for c in columns],
                    [c.type_oid for c in columns],
                    [c.type_modifier for c in columns],
                ),
            ).fetchall()
        except psycopg.Error as exc:
            raise source_error(
                f"reading the column types of {relation.namespace}.{relation.name}", exc
            ) from exc
        return tuple(str(r[0]) for r in rows), tuple(r[1] for r in rows)
