"""The vocabulary shared by the value converters and the type catalog. No I/O.

The one job: name what a converter is (text in, JSON value out) and what the catalog
tells the converter builder about a type it does not know by OID (``TypeInfo``), so that
``cdc.protocol.values`` stays pure and ``cdc.postgres.catalog`` (the edge that queries
``pg_type``) only fills these values in. No I/O, no logging, no psycopg.

``TypeInfo`` also carries what a schema-change event needs to recreate the type in an
empty database (enum labels, domain constraints, SQL names of the parts); the converters
never read those fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = [
    "Attribute",
    "Converter",
    "JsonValue",
    "TypeInfo",
    "TypeKind",
    "TypeResolver",
]

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
Converter: TypeAlias = Callable[[str], JsonValue]

# pg_type.typtype: b base, c composite, d domain, e enum, m multirange, p pseudo, r range.
TypeKind: TypeAlias = Literal["b", "c", "d", "e", "m", "p", "r"]


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute of a composite type, in attnum order (dropped ones left out)."""

    name: str
    type_oid: int
    type_modifier: int
    type_name: str = ""  # format_type(type_oid, type_modifier), for schema-change events


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """What the catalog says about one type (``pg_type`` and friends).

    ``element_oid`` is set for array types (``typcategory = 'A'``), ``base_oid`` and
    ``base_modifier`` for domains, ``attributes`` for composites, ``range_subtype`` for
    ranges and multiranges, ``extension`` when the type belongs to an extension (``hstore``,
    ``postgis``, ``vector``): converters for extension types are chosen by extension and
    type name, never by OID, since those OIDs differ per database.

    The fields after ``extension`` are for schema-change events only (what ``CREATE
    TYPE``/``CREATE DOMAIN`` needs): enum ``labels`` in ``enumsortorder``; a domain's
    ``base_type`` (``format_type`` of its base and modifier), ``not_null`` and ``checks``
    (``pg_get_constraintdef`` of each CHECK, by constraint name); a range's or
    multirange's ``subtype_type``, a range's ``subtype_opclass`` and ``collation``
    (quoted qualified names, set only when not the subtype's defaults) and a
    multirange's ``range_oid``.
    """

    oid: int
    namespace: str
    name: str
    kind: TypeKind
    category: str = "U"  # pg_type.typcategory
    element_oid: int = 0
    delimiter: str = ","  # pg_type.typdelim of the element: ';' for box
    base_oid: int = 0
    base_modifier: int = -1
    attributes: tuple[Attribute, ...] = ()
    range_subtype: int = 0
    extension: str | None = None
    labels: tuple[str, ...] = ()
    base_type: str = ""
    not_null: bool = False
    checks: tuple[str, ...] = ()
    subtype_type: str = ""
    subtype_opclass: str | None = None
    collation: str | None = None
    range_oid: int = 0

    @property
    def qualified_name(self) -> str:
        return f"{self.namespace}.{self.name}"


# Looks a type up by OID; None when the type does not exist (any more).
TypeResolver: TypeAlias = Callable[[int], "TypeInfo | None"]
