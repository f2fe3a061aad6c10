"""One table's changes of one batch, reduced to set-based writes. No I/O.

The one job: fold a table's changes (in commit order) into what the target must end up
with, per key: the last row (upsert), or nothing (delete); so a batch costs one ``COPY``
and one statement per kind, however often a key changed. An unchanged-TOAST value (a
column listed in ``unavailable_columns``) is never written: it is filled from an earlier
change of the same batch, or the target keeps its current value (a partial update).
Tables without a key cannot be folded; their changes are kept in order.

Values are turned into PostgreSQL's text input form here, once per surviving row, by the
converters of the table's shape (``cdc.replay.values``). It must not run SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from cdc.errors import CdcError
from cdc.replay.records import Change, ChangeKind

__all__ = ["ApplyError", "KeylessOp", "TableBatch", "TableWrites", "copy_value"]

# COPY's text format (PostgreSQL docs, COPY, "Text Format"): NULL is \N; backslash, tab,
# newline and carriage return inside a value are backslash escapes.
_NULL: Final = "\\N"
_SPECIAL: Final = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_value(value: str | None) -> str:
    """One value in COPY's text format."""
    if value is None:
        return _NULL
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_SPECIAL)
    return value


TextConverter = Callable[[Any], str | None]


class ApplyError(CdcError):
    """A change cannot be applied to the target as it stands; names the table, key, LSN."""

    def __init__(self, message: str, *, table: str, lsn: int) -> None:
        self.table, self.lsn = table, lsn
        super().__init__(message)


@dataclass(slots=True)
class TableWrites:
    """What one flush writes into one target table."""

    upserts: list[str] = field(default_factory=list)  # whole rows, as COPY text lines
    deletes: list[tuple[str | None, ...]] = field(default_factory=list)  # key values
    # Rows with unchanged-TOAST columns: by the tuple of columns to keep.
    partial: dict[tuple[str, ...], list[tuple[str | None, ...]]] = field(default_factory=dict)
    keyless: list[KeylessOp] = field(default_factory=list)  # tables without a key, in order

    def __len__(self) -> int:
        return (
            len(self.upserts)
            + len(self.deletes)
            + sum(len(rows) for rows in self.partial.values())
            + len(self.keyless)
        )


@dataclass(frozen=True, slots=True)
class KeylessOp:
    insert: bool  # else: delete one row equal to ``row``
    row: tuple[str | None, ...]


# One key's state within a batch: the row's JSON values, and the columns it lacks.
_DELETED = None


class TableBatch:
    """Folds one table's changes; ``writes()`` turns them into text rows."""

    def __init__(
        self,
        *,
        table: str,
        columns: Sequence[str],
        key_columns: Sequence[str],
        converters: Sequence[TextConverter],
    ) -> None:
        self.table = table
        self.columns = tuple(columns)
        self.key_columns = tuple(key_columns)
        self._converters = tuple(converters)
        index = {name: i for i, name in enumerate(self.columns)}
        self._width = len(self.columns)
        self._names = frozenset(self.columns)
        self._key_converters = tuple(self._converters[index[k]] for k in self.key_columns)
        self._rows: dict[bytes, tuple[dict[str, Any], frozenset[str]] | None] = {}
        self._keys: dict[bytes, dict[str, Any]] = {}
        self._keyless: list[tuple[bool, dict[str, Any], int]] = []

    def __len__(self) -> int:
        return len(self._rows) + len(self._keyless)

    def add(self, change: Change) -> None:
        """One upsert or delete of this table, in commit order.

        Raises:
            ApplyError: an unchanged-TOAST value of a row deleted earlier in the batch,
                or a change of a keyless table that does not say which row.
        """
        if not self.key_columns:
            self._add_keyless(change)
            return
        key = change.key_bytes
        if key is None:
            raise ApplyError(
                f"table {self.table}: a change at LSN {change.change_lsn} has no key but the"
                f" table's key is {', '.join(self.key_columns)}",
                table=self.table,
                lsn=change.change_lsn,
            )
        if change.kind is ChangeKind.DELETE:
            self._rows[key] = _DELETED
            if change.key is not None:
                self._keys[key] = change.key
            return
        row = change.row
        assert row is not None
        if len(row) != self._width or not self._names.issuperset(row):
            raise ApplyError(
                f"table {self.table}: the change at LSN {change.change_lsn} has columns"
                f" {', '.join(row)}, but its schema event says {', '.join(self.columns)}:"
                " the log is inconsistent (was schema_changes switched off for a while?)",
                table=self.table,
                lsn=change.change_lsn,
            )
        missing = frozenset(change.unavailable)
        if missing:
            earlier = self._rows.get(key, ...)
            if earlier is _DELETED:
                raise ApplyError(
                    f"table {self.table}: the change at LSN {change.change_lsn} keeps unchanged "
                    f"TOAST values ({', '.join(sorted(missing))}) of a row deleted before it",
                    table=self.table,
                    lsn=change.change_lsn,
                )
            if earlier is not ...:
                assert earlier is not None
                prev_row, prev_missing = earlier
                row = {**row, **{c: prev_row[c] for c in missing if c not in prev_missing}}
                missing = missing & prev_missing
        self._rows[key] = (row, missing)

    def _add_keyless(self, change: Change) -> None:
        if change.kind is ChangeKind.DELETE or change.before is not None:
            if change.before is None:
                raise ApplyError(
                    f"table {self.table} has no primary key and its change at LSN "
                    f"{change.change_lsn} does not carry the old row: set REPLICA IDENTITY "
                    "FULL on the legacy table (or give it a primary key), then rebuild",
                    table=self.table,
                    lsn=change.change_lsn,
                )
            self._keyless.append((False, change.before, change.change_lsn))
        if change.kind is ChangeKind.UPSERT:
            assert change.row is not None
            if change.unavailable:
                raise ApplyError(
                    f"table {self.table} has no primary key: the change at LSN "
                    f"{change.change_lsn} left TOASTed values out, so the row cannot be "
                    "written whole; set REPLICA IDENTITY FULL on the legacy table",
                    table=self.table,
                    lsn=change.change_lsn,
                )
            self._keyless.append((True, change.row, change.change_lsn))

    def writes(self) -> TableWrites:
        """The folded changes as text rows; the batch is empty afterwards."""
        out = TableWrites()
        columns = self.columns
        pairs = tuple(zip(columns, self._converters, strict=True))
        upserts_append = out.upserts.append
        join = "\t".join
        for key, state in self._rows.items():
            if state is None:
                values = self._keys.get(key)
                if values is None:
                    raise ApplyError(
                        f"table {self.table}: a delete without its key values",
                        table=self.table,
                        lsn=0,
                    )
                out.deletes.append(
                    tuple(
                        conv(values.get(k))
                        for k, conv in zip(self.key_columns, self._key_converters, strict=True)
                    )
                )
                continue
            row, missing = state
            get = row.get
            if missing:
                text = tuple([conv(get(c)) for c, conv in pairs])
                kept = tuple(c for c in columns if c not in missing)
                out.partial.setdefault(kept, []).append(
                    tuple(t for c, t in zip(columns, text, strict=True) if c not in missing)
                )
            else:
                # Straight to COPY's text format: one string per row, no tuple between.
                upserts_append(join([copy_value(conv(get(c))) for c, conv in pairs]))
        for insert, row, _lsn in self._keyless:
            text = tuple([conv(row.get(c)) for c, conv in pairs])
            out.keyless.append(KeylessOp(insert, text))
        self._rows.clear()
        self._keys.clear()
        self._keyless.clear()
        return out
