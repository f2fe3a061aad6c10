"""What data of each table may leave the database: column lists, row filters, masks. Pure.

The one job: turn a connector's ``table_options`` into one :class:`TableControls` per
table, check them against the table's columns and key once those are known (at start),
and provide the masks the envelope applies to a converted value. No I/O, no logging, no
clock; the key comes in as bytes.

Masks work on the *converted* value (the JSON value an event would carry), so a hashed
column hashes the same text in the stream and in snapshots, whatever path converted it:

- ``hash``: HMAC-SHA256 keyed with ``masking_key``, as 64 lowercase hex digits. The
  message is the value's UTF-8 text when the JSON value is a string (so ``"ada@x.org"``
  hashes the bytes ``ada@x.org``, which a consumer can reproduce with the same key), and
  its compact JSON text otherwise (``42``, ``true``, ``[1,2]``). Equal values give equal
  hashes, so joins on the hashed column still work, as long as the key never changes.
- ``redact``: the fixed string :data:`REDACTED`.

``null`` stays ``null`` under both (a masked column still shows whether a value was
there); the unchanged-TOAST placeholder is never passed to a mask (it is not data).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import orjson

from cdc.errors import ConfigError

if TYPE_CHECKING:
    from cdc.config import ConnectorConfig
    from cdc.protocol.typeinfo import JsonValue

__all__ = [
    "REDACTED",
    "Mask",
    "TableControls",
    "data_controls",
    "hash_mask",
    "redact",
]

#: What a redacted value becomes: a string no real value is mistaken for, and not
#: ``null``, which would read as "the column was NULL".
REDACTED: Final = "__cdc_redacted"

Mask = Callable[["JsonValue"], "JsonValue"]


def hash_mask(key: bytes) -> Mask:
    """The ``hash`` mask keyed with ``key``: value -> hex HMAC-SHA256 (``null`` kept)."""
    digest = hashlib.sha256
    new = hmac.new

    def mask(value: JsonValue) -> JsonValue:
        if value is None:
            return None
        data = value.encode() if isinstance(value, str) else orjson.dumps(value)
        return new(key, data, digest).hexdigest()

    return mask


def redact(value: JsonValue) -> JsonValue:
    """The ``redact`` mask: :data:`REDACTED` (``null`` kept)."""
    return None if value is None else REDACTED


@dataclass(frozen=True, slots=True)
class TableControls:
    """One table's column list, row filter and masks, as configured.

    ``include`` (when set) names the only columns published; ``exclude`` those never
    published. ``row_filter`` is a SQL boolean expression: the publication's ``WHERE``
    where PostgreSQL can apply it, cdc's own evaluation (``filter_in_cdc``) otherwise,
    and the snapshot's ``WHERE`` always; ``masks`` maps a column to its mask.
    """

    table: str
    include: frozenset[str] | None = None
    exclude: frozenset[str] = frozenset()
    row_filter: str | None = None
    masks: Mapping[str, Mask] = field(default_factory=dict)
    mask_kinds: Mapping[str, str] = field(default_factory=dict)
    # Set once the connector found the publication cannot apply ``row_filter`` (before
    # PostgreSQL 15, FOR ALL TABLES): the encoder evaluates it (cdc.row_filter).
    filter_in_cdc: bool = False

    def keeps(self, column: str) -> bool:
        """Whether ``column`` is published."""
        if self.include is not None:
            return column in self.include
        return column not in self.exclude

    def published(self, columns: Iterable[str]) -> list[str]:
        """The published ones of ``columns``, in their order."""
        return [c for c in columns if self.keeps(c)]

    @property
    def limits_columns(self) -> bool:
        return self.include is not None or bool(self.exclude)

    def check(self, columns: Iterable[str], key_columns: Iterable[str]) -> None:
        """Refuse settings that name unknown columns or hide or mask the key.

        The key columns are the record key of both topics (and the replica identity a
        publication's column list must keep): without them a row has no key, and a
        masked key would collapse (``redact``) or rename (``hash``) every row's key.

        Raises:
            ConfigError: naming the table, the column and the setting.
        """
        names = set(columns)
        where = f"table_options.{self.table}"
        named = [
            *(("columns.include", c) for c in sorted(self.include or ())),
            *(("columns.exclude", c) for c in sorted(self.exclude)),
            *((f"mask.{c}", c) for c in sorted(self.masks)),
        ]
        for key, column in named:
            if column not in names:
                raise ConfigError(
                    f"table {self.table} has no column {column!r}; its columns are"
                    f" {', '.join(sorted(names))}",
                    key=f"{where}.{key}",
                )
        for column in key_columns:
            if not self.keeps(column):
                raise ConfigError(
                    f"column {column!r} of table {self.table} is part of its key (the"
                    " record key of both topics and the replica identity): it cannot be"
                    " left out; publish it, or mask other columns instead",
                    key=f"{where}.columns",
                )
            if column in self.masks:
                raise ConfigError(
                    f"column {column!r} of table {self.table} is part of its key (the"
                    " record key of both topics): it cannot be masked, since every"
                    " record's key would be masked too (redact would merge every row"
                    " into one key on the compacted topic)",
                    key=f"{where}.mask.{column}",
                )


def data_controls(connector: ConnectorConfig) -> dict[str, TableControls]:
    """One :class:`TableControls` per table of ``connector.table_options``
    (``"schema.table"`` -> controls); empty when there are none."""
    key = connector.masking_key
    hashed = hash_mask(key.get_secret_value().encode()) if key is not None else None
    controls: dict[str, TableControls] = {}
    for table, options in connector.table_options.items():
        masks: dict[str, Mask] = {}
        for column, kind in options.mask.items():
            if kind == "hash":
                # The config model refuses hash without masking_key.
                assert hashed is not None
                masks[column] = hashed
            else:
                masks[column] = redact
        selection = options.columns
        controls[table] = TableControls(
            table=table,
            include=(
                frozenset(selection.include)
                if selection is not None and selection.include is not None
                else None
            ),
            exclude=(
                frozenset(selection.exclude)
                if selection is not None and selection.exclude is not None
                else frozenset()
            ),
            row_filter=options.where,
            masks=masks,
            mask_kinds=dict(options.mask),
        )
    return controls
