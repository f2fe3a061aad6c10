"""Edge: describe PostgreSQL types by OID from the catalog, for the value converters.

The one job: answer "what is type OID n?" (``pg_type``, ``pg_attribute``, ``pg_range``,
extension membership in ``pg_depend``) as a frozen ``TypeInfo`` that the pure converter
builder (``cdc.protocol.values.converter_for(..., types=catalog.lookup)``) consumes, and
cache the answers. pgoutput names a non-built-in type in a Type message before the
Relation that uses it; the caller drops the cached entry then (``invalidate``), since
``ALTER TYPE`` may have changed it.

It must not: convert values, log, or hold a transaction open (the connection should be
in autocommit; each lookup is one or two short statements).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import psycopg

from cdc.postgres.errors import source_error
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
         LIMIT 1)
FROM pg_type t
JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_type e ON e.oid = t.typelem
LEFT JOIN pg_range r ON r.rngtypid = t.oid
LEFT JOIN pg_range mr ON {multirange}
WHERE t.oid = %s
"""

_ATTRIBUTES_QUERY: Final = """
SELECT a.attname::text, a.atttypid::int8, a.atttypmod
FROM pg_attribute a
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
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
        elements, domain bases, composite attributes, range subtypes), so the value
        converters of a relation are built from a plain mapping, without I/O.

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
             subtype, extension) = row  # fmt: skip
            attributes: tuple[Attribute, ...] = ()
            if kind == "c" and relid:
                attributes = tuple(
                    Attribute(a_name, a_type, a_mod)
                    for a_name, a_type, a_mod in self._conn.execute(
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
        )
